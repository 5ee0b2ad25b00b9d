"""The pages, one module per area; importing them attaches their views to the web blueprint."""

from edc.web.pages import account, case_form, home, monitoring, subjects  # noqa: F401
