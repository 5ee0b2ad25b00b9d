"""The home page by role, and the error page every web answer uses.

Each role sees what its day starts with, read through the same services (and permissions, site scope) as the
API's reports and listings, in a few statements whatever the number of subjects: site staff their sites'
subjects with status, next due visit and open queries; monitors their sites' queries and SDV progress; data
managers the whole study per site; every other role a short page of what it does here.
"""

from __future__ import annotations

from collections import defaultdict

from flask import Response, make_response, render_template

from edc import clock
from edc.extensions import db
from edc.security.permissions import AUTHENTICATED, Actor, requires
from edc.services import locking, queries, reports, sdv, subjects, summaries
from edc.web import assets, browser, labels
from edc.web.blueprint import blp
from edc.web.hooks import page_globals
from edc.web.pages.account import notice
from edc.web.rendering import page

SITE_STAFF = frozenset({"investigator", "coordinator"})
HOME_SUBJECTS = 25   # the subjects on a site's home page; /subjects pages through all of them
HOME_QUERIES = 10    # the queries a monitor's home lists per state; /queries has them all
OTHER_ROLES = ("safety", "auditor", "statistician", "manufacturing", "admin", "registry")
ROLE_NAMES = {"investigator": "Investigator", "coordinator": "Coordinator", "monitor": "Monitor",
              "data_manager": "Data manager", "safety": "Safety", "auditor": "Auditor", "statistician": "Statistician",
              "manufacturing": "Manufacturing", "admin": "Administrator", "registry": "Registry client"}


def _site_staff(actor: Actor) -> dict:
    listing = subjects.list_subjects(db.session, actor, page=1, page_size=HOME_SUBJECTS)
    today = clock.utcnow().date()
    due = summaries.next_due_of(db.session, listing.items, today)
    open_queries = queries.open_by_subject(db.session, [s.id for s in listing.items])
    rows = [{"number": s.number, "site": s.site.code, "status": s.status, "locked": s.locked_at is not None,
             "due": due[s.id], "open_queries": open_queries.get(s.id, 0)} for s in listing.items]
    completeness = reports.completeness(db.session, actor)["sites"]
    return {"subjects": rows, "total": listing.total, "completeness": completeness}


def _monitor(actor: Actor) -> dict:
    answered = queries.list_queries(db.session, actor, state=queries.ANSWERED, page_size=HOME_QUERIES)
    still_open = queries.list_queries(db.session, actor, state=queries.OPEN, page_size=HOME_QUERIES)
    per_site: dict[str, dict[str, int]] = defaultdict(lambda: {"entries": 0, "entries_verified": 0, "items_verified": 0})
    for row in sdv.progress(db.session, actor):
        for name in ("entries", "entries_verified", "items_verified"):
            per_site[row.site][name] += getattr(row, name)
    progress = [{"site": site, **counts, "percent": round(100 * counts["entries_verified"] / counts["entries"])
                 if counts["entries"] else None} for site, counts in sorted(per_site.items())]
    return {"answered": answered, "open": still_open, "query_sites": reports.queries(db.session, actor)["sites"],
            "sdv": progress}


def _study(actor: Actor) -> dict:
    enrolment = {row["site"]: row for row in reports.enrolment(db.session, actor)["sites"]}
    completeness = {row["site"]: row for row in reports.completeness(db.session, actor)["sites"]}
    query_sites = {row["site"]: row for row in reports.queries(db.session, actor)["sites"]}
    locks = locking.locked_counts(db.session, actor)
    sites = [{"site": code, "enrolment": enrolment[code], "completeness": completeness.get(code, {}),
              "queries": query_sites.get(code, {}), "locks": locks.get(code, {"subjects": 0, "forms": 0})}
             for code in enrolment]
    return {"sites": sites, "study_lock": locking.study_lock_state(db.session, actor)}


@blp.get("/")
@requires(AUTHENTICATED)
def home():
    actor = browser.current_actor()
    roles = set(actor.roles)
    context = {"notice": notice(), "roles": sorted(roles), "other_roles": [r for r in OTHER_ROLES if r in roles],
               "role_names": ROLE_NAMES, **labels.helpers()}
    if roles & SITE_STAFF:
        context["site_home"] = _site_staff(actor)
    if "monitor" in roles:
        context["monitor_home"] = _monitor(actor)
    if "data_manager" in roles:
        context["study_home"] = _study(actor)
    return page("web/home.html", **context)


def error_page(status: int, title: str, detail: str, errors) -> Response:
    """Any refused or failed web request, as a page (edc.errors calls this for the web's requests)."""
    context = {**page_globals(), "status": status, "title": title, "detail": detail, "errors": errors or []}
    response = make_response(render_template("web/error.html", **context), status)
    # the pages' policy (its stylesheet allowed) also for a browser's request outside the blueprint (unknown page)
    response.headers["Content-Security-Policy"] = assets.PAGE_POLICY
    return response
