"""The pages, one module per area; importing them attaches their views to the web blueprint."""

from edc.web.pages import account, home, monitoring, subjects  # noqa: F401
