"""The web application for site staff and monitors: server-rendered pages in the same Flask app.

One blueprint (`web`), views per page under edc/web/pages/, Jinja2 templates, and static files served with
long cache lifetimes (edc/web/assets.py). The pages call the same edc.services use cases as the API, so
rules, permissions, validation and audit exist once. Browser sessions and CSRF: edc/web/browser.py.
docs/web.md explains the pages and the design.
"""
