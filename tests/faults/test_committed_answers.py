"""A write that committed is answered as a success, even when the connection dies right after the commit.

Every route that commits is driven once with the connection failing just after its COMMIT (CommitBreaker):
the answer must be the route's success with its full body, built before the commit; nothing after the
commit may need the database, and a failing teardown ROLLBACK must not turn the answer into an error.
The routes are taken from the app's url_map: a new writing route fails this test until it is driven here.
"""

from __future__ import annotations

import inspect
import logging
import json
import re
import uuid

import jwt
import pytest
from jwt.algorithms import ECAlgorithm

from cryptography.hazmat.primitives.asymmetric import ec

from account_mail import mailed_setup_token
from conftest import PASSWORD, bearer
from edc import clock, runtime
from edc.security.permissions import Actor
from edc.services import fhir_clients
from monitoring.conftest import username_of
from test_demo_subjects import invoke
from trial.test_baseline_forms import VS
from web.conftest import WebClient
from web.test_case_form import crs_fields, etag_in

WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
NEW_PASSWORD = "another-staple-ferry-7"


def _calls_commit(function, depth: int = 1) -> bool:
    """Does a view (or a helper of its module it calls) commit? Views commit through edc.api.transaction."""
    source = inspect.getsource(function)
    if "commit(" in source or "commit_with_answer(" in source or "committed(" in source:
        return True
    module = inspect.getmodule(function)
    helpers = [getattr(module, name) for name in function.__code__.co_names if inspect.isfunction(getattr(module, name, None))]
    return depth > 0 and any(_calls_commit(h, depth - 1) for h in helpers if inspect.getmodule(h) is module)


# Web routes that write nothing to the database (a cookie only).
WRITES_NO_ROWS = {"web.choose_language",
                  "web.evaluate_entry", "web.evaluate_new_entry"}   # the case form evaluated as fields are left


def committing_endpoints(app, *, web: bool = False) -> set[str]:
    """Every route that writes: a writing method, or a view that commits (a read with an audit record);
    the API's and FHIR's, or with web=True the web pages' (edc/web/rendering.committed)."""
    found = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith("bench.") or rule.endpoint.startswith("web.") != web or rule.endpoint in WRITES_NO_ROWS:
            continue
        view = inspect.unwrap(app.view_functions[rule.endpoint])
        if rule.methods & WRITE_METHODS or _calls_commit(view):
            found.add(rule.endpoint)
    return found


class Driver:
    """Sends each request with the connection breaking after its commit, and checks the answer."""

    def __init__(self, monitoring, breaker) -> None:
        self.m, self.breaker, self.driven = monitoring, breaker, set()

    def send(self, method: str, path: str, account: str | None, status: int, *, json_body=None, headers=None,
             skip_commits: int = 0, **kwargs):
        """skip_commits: the commits a route makes before its own writes (a password attempt's count, and for a
        signature, the count given back once the password is right)."""
        client = self.m.client
        endpoint = client.application.url_map.bind("localhost").match(path.split("?")[0], method)[0]
        all_headers = {**(self.m.headers[account] if account else {}), **(headers or {})}
        with self.breaker.after_next_commit(skip=skip_commits):
            response = client.open(path, method=method, json=json_body, headers=all_headers, **kwargs)
            assert self.breaker.tripped, f"{endpoint} did not commit: {response.status_code} {response.get_data(as_text=True)}"
        assert response.status_code == status, (endpoint, response.status_code, response.get_data(as_text=True),
                                                self.breaker.failures)
        self.driven.add(endpoint)
        return response

    def etag(self, path: str, account: str) -> dict[str, str]:
        return {"If-Match": self.m.client.get(path, headers=self.m.headers[account]).headers["ETag"]}


def _clinical(d: Driver) -> tuple[str, str]:
    body = {"site": "ES01", "birth_year": 2016, "birth_month": 4, "sex": "F", "consent_date": "2026-11-02"}
    subject = d.send("POST", "/api/v1/subjects", "investigator_ES01", 201, json_body=body).get_json()
    assert subject["number"] and subject["site"] == "ES01"
    number = subject["number"]
    entry = d.send("POST", f"/api/v1/subjects/{number}/entries", "investigator_ES01", 201,
                   json_body={"form": "vs", "event": "SCR", "event_instance": 1, "data": VS, "complete": True}).get_json()
    assert entry["data"]["HR"] == 96 and entry["subject"] == number
    path = f"/api/v1/entries/{entry['id']}"
    replaced = d.send("PUT", path, "investigator_ES01", 200, json_body={"data": {**VS, "HR": 97}, "complete": True,
                      "reason": "transcription"}, headers=d.etag(path, "investigator_ES01")).get_json()
    assert replaced["version"] == 2 and replaced["data"]["HR"] == 97
    return number, entry["id"]


def _queries(d: Driver, entry_id: str) -> None:
    opened = d.send("POST", "/api/v1/queries", "monitor_ES01", 201,
                    json_body={"entry_id": entry_id, "item": "HR", "message": "Please check HR."}).get_json()
    assert opened["state"] == "open"
    q = f"/api/v1/queries/{opened['id']}"
    assert d.send("POST", f"{q}/messages", "coordinator_ES01", 201, json_body={"message": "Looking."}).get_json()["body"]
    assert d.send("POST", f"{q}/answer", "investigator_ES01", 200, json_body={"message": "Fine."}).get_json()["state"] == "answered"
    assert d.send("POST", f"{q}/reopen", "monitor_ES01", 200, json_body={"message": "Again."}).get_json()["state"] == "open"
    d.send("POST", f"{q}/answer", "investigator_ES01", 200, json_body={"message": "Checked."})
    assert d.send("POST", f"{q}/close", "monitor_ES01", 200, json_body={}).get_json()["state"] == "closed"
    other = d.send("POST", "/api/v1/queries", "data_manager", 201, json_body={"entry_id": entry_id, "message": "Dup?"}).get_json()
    cancelled = d.send("POST", f"/api/v1/queries/{other['id']}/cancel", "data_manager", 200, json_body={"message": "No."})
    assert cancelled.get_json()["state"] == "cancelled"


def _review(d: Driver, number: str, entry_id: str) -> None:
    assert d.send("POST", f"/api/v1/entries/{entry_id}/sdv", "monitor_ES01", 200, json_body={"entry": True}).get_json()
    credentials = {"username": username_of("investigator_ES01"), "password": PASSWORD, "meaning": "approval"}
    signed = d.send("POST", f"/api/v1/entries/{entry_id}/signatures", "investigator_ES01", 201, json_body=credentials,
                    skip_commits=2)
    assert signed.get_json()["status"] == "valid"
    d.send("POST", f"/api/v1/subjects/{number}/signatures", "investigator_ES01", 201, json_body=credentials, skip_commits=2)
    assert d.send("POST", f"/api/v1/entries/{entry_id}/lock", "data_manager", 200, json_body={}).get_json()["locked"]
    assert not d.send("POST", f"/api/v1/entries/{entry_id}/unlock", "data_manager", 200, json_body={"reason": "r"}).get_json()["locked"]
    assert d.send("POST", f"/api/v1/subjects/{number}/lock", "data_manager", 200, json_body={}).get_json()["locked"]
    d.send("POST", f"/api/v1/subjects/{number}/unlock", "data_manager", 200, json_body={"reason": "r"})
    cut = d.send("POST", "/api/v1/data-cuts", "data_manager", 201,
                 json_body={"name": "interim", "cutoff_at": clock.utcnow().isoformat(), "reason": "DSMB"})
    assert cut.get_json()["entry_count"] == 1 and cut.headers["Location"]
    path = f"/api/v1/subjects/{number}"
    status = d.send("POST", f"{path}/status", "investigator_ES01", 200, json_body={"status": "withdrawn", "reason": "family"},
                    headers=d.etag(path, "investigator_ES01"))
    assert status.get_json()["status"] == "withdrawn" and status.headers["ETag"]
    assert d.send("POST", "/api/v1/study/lock", "data_manager", 200, json_body={"reason": "done"}).get_json()["locked"]
    assert not d.send("POST", "/api/v1/study/unlock", "data_manager", 200, json_body={"reason": "late"}).get_json()["locked"]


def _casebooks(d: Driver, number: str) -> None:
    """A casebook PDF and a site archive's download are audited (commits); asking for an archive writes its job."""
    pdf = d.send("GET", f"/api/v1/subjects/{number}/casebook.pdf?include_audit=true", "monitor_ES01", 200)
    assert pdf.mimetype == "application/pdf" and pdf.get_data().startswith(b"%PDF-")
    client, manager = d.m.client, d.m.headers["data_manager"]
    assert client.post("/api/v1/study/lock", json={"reason": "close"}, headers=manager).status_code == 200
    job = d.send("POST", "/api/v1/sites/ES01/archive", "data_manager", 202)
    assert job.get_json()["state"] == "queued" and job.headers["Location"]
    assert invoke(client.application, "worker", "--once").exit_code == 0
    done = client.get(job.headers["Location"], headers=d.m.headers["investigator_ES01"]).get_json()
    assert done["state"] == "completed", done
    d.send("GET", done["links"]["files"][0], "investigator_ES01", 200).close()  # a streamed file
    assert client.post("/api/v1/study/unlock", json={"reason": "late data"}, headers=manager).status_code == 200


def _administration(d: Driver, session) -> None:
    created = d.send("POST", "/api/v1/users", "admin", 201,
                     json_body={"username": "new-cra", "display_name": "New CRA", "email": "cra@mail.example"}).get_json()
    assert created["user"]["username"] == "new-cra" and created["setup_link_sent_to"]
    token = mailed_setup_token(session, "new-cra")
    d.send("POST", "/api/v1/auth/setup", None, 204, json_body={"token": token, "new_password": NEW_PASSWORD})
    role = d.send("POST", "/api/v1/users/new-cra/roles", "admin", 201, json_body={"role": "monitor", "site": "ES01"}).get_json()
    assert role["site"] == "ES01"
    d.send("DELETE", f"/api/v1/users/new-cra/roles/{role['id']}", "admin", 204)
    assert d.send("POST", "/api/v1/users/new-cra/reset", "admin", 200, json_body={"reason": "lost"}).get_json()
    assert d.send("POST", "/api/v1/users/new-cra/disable", "admin", 200, json_body={"reason": "left"}).get_json()["status"]
    site = d.send("POST", "/api/v1/sites", "admin", 201,
                  json_body={"code": "LB01", "name": "Beirut", "country": "LB", "time_zone": "Asia/Beirut"})
    assert site.get_json()["code"] == "LB01" and site.headers["ETag"]
    patched = d.send("PATCH", "/api/v1/sites/LB01", "admin", 200, json_body={"name": "Beirut CCC"},
                     headers={"If-Match": site.headers["ETag"]})
    closed = d.send("POST", "/api/v1/sites/LB01/close", "admin", 200, json_body={"reason": "moved"},
                    headers={"If-Match": patched.headers["ETag"]})
    assert closed.get_json()["status"] == "closed"


def _sessions(d: Driver) -> None:
    name = username_of("coordinator_ES01")
    tokens = d.send("POST", "/api/v1/auth/login", None, 200, json_body={"username": name, "password": PASSWORD},
                    skip_commits=1).get_json()
    assert tokens["access_token"] and tokens["refresh_token"]
    again = d.send("POST", "/api/v1/auth/refresh", None, 200, json_body={"refresh_token": tokens["refresh_token"]}).get_json()
    header = bearer(again["access_token"])
    d.send("POST", "/api/v1/auth/password", None, 204, headers=header, skip_commits=1,
           json_body={"current_password": PASSWORD, "new_password": NEW_PASSWORD})
    fresh = d.m.client.post("/api/v1/auth/login", json={"username": name, "password": NEW_PASSWORD}).get_json()
    d.send("POST", "/api/v1/auth/logout", None, 204, headers=bearer(fresh["access_token"]))


def _exports(d: Driver, registry: dict[str, str]) -> None:
    job = d.send("POST", "/api/v1/exports", "statistician", 202, json_body={"format": "csv"})
    assert job.get_json()["state"] == "queued" and job.headers["Location"]
    d.send("DELETE", f"/api/v1/exports/{job.get_json()['id']}", "statistician", 204)
    # A download is audited (a commit): run one export of each kind, then take a file of each.
    staff = d.m.headers["statistician"]
    native = d.m.client.post("/api/v1/exports", json={"format": "csv"}, headers=staff).get_json()["id"]
    bulk = d.m.client.get("/fhir/$export", headers={**registry, "Prefer": "respond-async"})
    assert invoke(d.m.client.application, "worker", "--once").exit_code == 0
    name = d.m.client.get(f"/api/v1/exports/{native}/manifest", headers=staff).get_json()["files"][0]["name"]
    d.send("GET", f"/api/v1/exports/{native}/files/{name}", "statistician", 200).close()  # a streamed file
    status = d.m.client.get("/fhir/" + bulk.headers["Content-Location"].split("/fhir/", 1)[1], headers=registry)
    url = status.get_json()["output"][0]["url"]
    d.send("GET", "/fhir/" + url.split("/fhir/", 1)[1], None, 200, headers=registry).close()


def _registry(d: Driver, session, number: str) -> dict[str, str]:
    key = ec.generate_private_key(ec.SECP384R1())
    jwks = {"keys": [{**ECAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": "k1", "alg": "ES384"}]}
    client_id = fhir_clients.register_client(session, Actor.system("tests"), username="registry", name="registry client",
                                             jwks=jwks).client_id
    session.commit()
    token_url = d.m.client.get("/fhir/.well-known/smart-configuration").get_json()["token_endpoint"]
    now = int(clock.utcnow().timestamp())
    assertion = jwt.encode({"iss": client_id, "sub": client_id, "aud": token_url, "exp": now + 240, "iat": now,
                            "jti": uuid.uuid4().hex}, key, algorithm="ES384", headers={"kid": "k1", "typ": "JWT"})
    form = {"grant_type": "client_credentials", "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion, "scope": "system/*.read"}
    token = d.send("POST", "/fhir/auth/token", None, 200, data=form).get_json()["access_token"]
    registry = bearer(token)
    bundle = d.send("GET", f"/fhir/Patient/{number}/$everything", None, 200, headers=registry)
    assert json.loads(bundle.get_data())["resourceType"] == "Bundle"
    asynchronous = {**registry, "Prefer": "respond-async"}
    d.send("GET", "/fhir/Patient/$export", None, 202, headers=asynchronous)
    kicked = d.send("GET", "/fhir/$export", None, 202, headers=asynchronous)
    status_path = "/fhir/" + kicked.headers["Content-Location"].split("/fhir/", 1)[1]
    d.send("DELETE", status_path, None, 202, headers=registry)
    return registry


def test_every_committing_route_answers_its_success_when_the_connection_dies_after_the_commit(monitoring, commit_breaker,
                                                                                             session, tmp_path):
    app = monitoring.client.application
    app.config["EDC"]["export_dir"] = str(tmp_path / "exports")  # the exports it runs write here, not in the checkout
    app.extensions.pop(runtime.APP_KEY, None)  # the next request's runtime opens that export storage
    d = Driver(monitoring, commit_breaker)
    number, entry_id = _clinical(d)
    _queries(d, entry_id)
    registry = _registry(d, session, number)
    _review(d, number, entry_id)
    _casebooks(d, number)
    _administration(d, session)
    _sessions(d)
    _exports(d, registry)
    assert committing_endpoints(monitoring.client.application) - d.driven == set()


class WebDriver(Driver):
    """The same for the web pages: forms posted by a browser (cookies, CSRF token of the page) instead of JSON."""

    def __init__(self, monitoring, breaker) -> None:
        super().__init__(monitoring, breaker)
        self.browsers: dict[str, WebClient] = {}

    def browser(self, account: str) -> WebClient:
        if account not in self.browsers:
            self.browsers[account] = WebClient(self.m.client.application.test_client())
            self.browsers[account].login(username_of(account))
        return self.browsers[account]

    def post(self, path: str, account: str | WebClient, status: int, data: dict, *, skip_commits: int = 0,
             location: str | None = None):
        browser = self.browser(account) if isinstance(account, str) else account
        endpoint = browser.client.application.url_map.bind("localhost").match(path.split("?")[0], "POST")[0]
        with self.breaker.after_next_commit(skip=skip_commits):
            response = browser.post(path, data)
            assert self.breaker.tripped, f"{endpoint} did not commit: {response.status_code}"
        assert response.status_code == status, (endpoint, response.status_code, response.get_data(as_text=True)[:800])
        if location is not None:
            assert response.headers["Location"] == location
        self.driven.add(endpoint)
        return response


def _web_setup(d: WebDriver, session) -> None:
    created = d.m.client.post("/api/v1/users", json={"username": "web-cra", "display_name": "Web CRA",
                                                     "email": "web-cra@mail.example"}, headers=d.m.headers["admin"])
    assert created.status_code == 201
    newcomer = WebClient(d.m.client.application.test_client())
    newcomer.get("/setup")
    d.post("/setup", newcomer, 303, {"token": mailed_setup_token(session, "web-cra"), "new_password": NEW_PASSWORD,
                                     "confirm_password": NEW_PASSWORD}, location="/login?notice=password_set")


def _web_sessions(d: WebDriver) -> None:
    anonymous = WebClient(d.m.client.application.test_client())
    anonymous.get("/login")
    d.post("/login", anonymous, 303, {"username": username_of("coordinator_ES01"), "password": PASSWORD},
           skip_commits=1, location="/")
    assert anonymous.client.get_cookie("edc_session") is not None
    anonymous.get("/password")
    d.post("/password", anonymous, 303, {"current_password": PASSWORD, "new_password": NEW_PASSWORD,
                                         "confirm_password": NEW_PASSWORD}, skip_commits=1, location="/?notice=password_changed")
    anonymous.get("/")
    d.post("/logout", anonymous, 303, {}, location="/login?notice=signed_out")


def _web_monitoring(d: WebDriver) -> None:
    number = d.m.enrol()
    entry_id = d.m.saved(number, "vs", VS, event="SCR")["id"]
    d.post(f"/entries/{entry_id}/queries", "monitor_ES01", 303, {"item": "HR", "message": "Please check HR."},
           location=f"/entries/{entry_id}?notice=query_opened")
    [query] = d.m.entry(entry_id)["queries"]
    q = f"/queries/{query['id']}"
    d.post(f"{q}/messages", "subinvestigator_ES01", 303, {"message": "Looking."}, location=f"{q}?notice=query_message")
    d.post(f"{q}/answer", "subinvestigator_ES01", 303, {"message": "Fine."}, location=f"{q}?notice=query_answered")
    d.post(f"{q}/reopen", "monitor_ES01", 303, {"message": "Again."}, location=f"{q}?notice=query_reopened")
    d.post(f"{q}/cancel", "data_manager", 303, {"message": "Raised in error."}, location=f"{q}?notice=query_cancelled")
    d.post(f"/entries/{entry_id}/queries", "data_manager", 303, {"item": "", "message": "Whole entry?"})
    [other] = [row for row in d.m.entry(entry_id)["queries"] if row["id"] != query["id"]]
    o = f"/queries/{other['id']}"
    d.post(f"{o}/answer", "investigator_ES01", 303, {"message": "Yes."}, location=f"{o}?notice=query_answered")
    d.post(f"{o}/close", "data_manager", 303, {"message": ""}, location=f"{o}?notice=query_closed")
    assert sorted(row["state"] for row in d.m.entry(entry_id)["queries"]) == ["cancelled", "closed"]
    d.post(f"/entries/{entry_id}/sdv", "monitor_ES01", 303, {"entry": "1"}, location=f"/entries/{entry_id}/sdv?notice=sdv_marked")
    credentials = {"username": username_of("investigator_ES01"), "password": PASSWORD, "meaning": "approval"}
    d.post(f"/entries/{entry_id}/sign", "investigator_ES01", 303, credentials, skip_commits=2,
           location=f"/entries/{entry_id}/sign?notice=signed")
    d.post(f"/subjects/{number}/sign", "investigator_ES01", 303, credentials, skip_commits=2,
           location=f"/subjects/{number}/sign?notice=signed")
    signed = d.m.client.get(f"/api/v1/subjects/{number}/signatures", headers=d.m.headers["monitor_ES01"]).get_json()
    assert sorted(s["status"] for s in signed) == ["valid", "valid"]


def _web_case_form(d: WebDriver) -> None:
    number = d.m.enrol()
    web = d.browser("investigator_ES01")
    url = f"/subjects/{number}/enter?form=crs_daily"
    token = re.search(r'name="form_token" value="([^"]+)"', web.text(url)).group(1)
    # the form token's claim commits first (the idempotency key), then the entry
    created = d.post(url, web, 303, {**crs_fields("37.2"), "form_token": token, "action": "complete"}, skip_commits=1)
    entry = created.headers["Location"].split("?")[0]
    assert entry.startswith("/entries/")
    etag = etag_in(web.text(entry))
    d.post(entry, web, 303, {**crs_fields("37.4"), "etag": etag, "action": "complete", "reason": "transcription error"},
           location=f"{entry}?notice=entry_saved")


def _web_subjects(d: WebDriver) -> None:
    investigator = d.browser("investigator_ES01")  # the coordinator's password was changed by _web_sessions
    token = re.search(r'name="form_token" value="([0-9a-f]{32})"', investigator.text("/subjects/new")).group(1)
    body = {"site": "ES01", "consent_date": "2026-11-02", "sex": "M", "birth_year": "2015", "birth_month": "7",
            "hospital_number": "HN-WEB-1", "form_token": token}
    # skip_commits=1: the form token's claim commits on its own before the enrolment (edc.services.idempotency)
    location = d.post("/subjects/new", investigator, 303, body, skip_commits=1).headers["Location"]
    assert re.fullmatch(r"/subjects/ES01-\d{4}\?notice=enrolled", location)
    assert investigator.post("/subjects/new", body).headers["Location"] == location  # the retry: the same subject


def test_every_committing_web_page_answers_its_success_when_the_connection_dies_after_the_commit(monitoring,
                                                                                                commit_breaker, session):
    d = WebDriver(monitoring, commit_breaker)
    _web_case_form(d)
    _web_sessions(d)
    _web_setup(d, session)
    _web_monitoring(d)
    _web_subjects(d)
    assert committing_endpoints(monitoring.client.application, web=True) - d.driven == set()


def test_a_failing_rollback_at_teardown_leaves_the_answer_as_it_was(monitoring, commit_breaker, caplog):
    number = monitoring.enrol()
    commit_breaker.rollback_fails = True
    read = monitoring.client.get(f"/api/v1/subjects/{number}", headers=monitoring.headers["monitor_ES01"])
    assert read.status_code == 200 and read.get_json()["number"] == number
    missing = monitoring.client.get("/api/v1/subjects/ES01-9999", headers=monitoring.headers["monitor_ES01"])
    assert missing.status_code == 404 and missing.mimetype == "application/problem+json"
    assert missing.get_json()["request_id"]
    assert commit_breaker.failures.count("ROLLBACK") >= 2
    events = [getattr(r, "fields", {}).get("event") for r in caplog.records]
    assert "session_close_failed" in events and "rollback_failed" in events


def request_lines(caplog) -> list[dict]:
    return [r.fields for r in caplog.records if r.name == "edc.request" and hasattr(r, "fields")]


def test_the_request_log_says_what_the_client_got_when_a_late_failure_replaces_the_answer(app_factory, caplog):
    app = app_factory(own=True)
    failures = ["late failure"]

    @app.teardown_appcontext
    def _fails_late(_error):  # registered last, so it runs first among the teardowns; fails once
        if failures:
            raise RuntimeError(failures.pop())

    caplog.set_level(logging.INFO, logger="edc")
    with pytest.raises(RuntimeError):  # escapes the app: the server answers its own 500
        app.test_client().get("/healthz")
    (line,) = request_lines(caplog)
    assert line["status"] == 500 and line["answer_replaced"] == 200 and line["route"] == "/healthz"
    assert line["request_id"] and line["duration_ms"] >= 0
