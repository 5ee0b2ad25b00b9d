"""The web pages under attack: clinical free text, query messages, names and reasons carrying markup rendered
on every page that shows them; every POST without its CSRF token; the session cookie in production and
sessions that end (signed out, account disabled, role revoked); another site's entries, queries and subjects
through every web URL; identifying values for the roles that may not see them; roles without clinical pages;
return addresses, notices, cache and security headers; no inline script or style anywhere."""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from datetime import timedelta
from html.parser import HTMLParser

import pytest
import sqlalchemy as sa

from conftest import PASSWORD, count_rows, make_site, make_user
from edc import clock
from edc.security import tokens
from edc.web import assets
from monitoring.conftest import monitoring, username_of  # noqa: F401 (a fixture)
from trial.test_baseline_forms import MH
from trial.test_treatment_forms import APH
from web.conftest import WebClient

PAYLOAD = "\"'><script>alert(1)</script><img src=x onerror=alert(2)>{{7*'7'}}"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"
COI_HERE = "ARI-000456"   # not the forms' help example (ARI-000123)
WRITTEN = ("entries", "queries", "query_messages", "sdv_marks", "signatures", "subjects", "audit_records", "auth_sessions",
           "idempotent_requests", "users", "role_assignments")


class Markup(HTMLParser):
    """What a page's HTML does, as a browser parses it: the script and style it would run."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        names = dict(attrs)
        if tag == "script" and not names.get("src"):
            self.problems.append("inline <script>")
        if tag in ("style", "img", "iframe", "object", "embed", "base"):
            self.problems.append(f"<{tag}>")
        for name, value in attrs:
            if name.startswith("on") or name == "style" or name == "srcdoc":
                self.problems.append(f"attribute {name}")
            if (value or "").strip().lower().startswith(("javascript:", "data:")):
                self.problems.append(f"{name}={value}")


def page_problems(text: str) -> list[str]:
    return Markup(text).problems + (["template re-rendered"] if "7777777" in text else [])


def body(response) -> str:
    return response.get_data(as_text=True)


def written(session) -> dict[str, int]:
    """The rows of every table a web page writes, in one statement (the bad-input sweep reads it per request)."""
    counts = ", ".join(f"(SELECT count(*) FROM {table})" for table in WRITTEN)
    return dict(zip(WRITTEN, session.execute(sa.text(f"SELECT {counts}")).one(), strict=True))


@dataclass
class Scene:
    number: str
    mh: str
    aph: str
    query: str
    coi_query: str
    it_number: str
    it_entry: str
    it_query: str

    def pages(self) -> list[str]:
        """Every page that shows the ES01 subject's free text, query message, names or reasons."""
        return ["/", f"/subjects/{self.number}", "/subjects", f"/entries/{self.mh}", f"/entries/{self.mh}/queries",
                "/queries?state=all", f"/queries/{self.query}", f"/entries/{self.mh}/items/MH/history",
                f"/entries/{self.mh}/sdv", f"/entries/{self.mh}/sign", f"/subjects/{self.number}/sign",
                f"/entries/{self.aph}", f"/queries/{self.coi_query}", f"/entries/{self.aph}/items/COI/history"]


def api(monitoring, method: str, path: str, account: str, **json):  # noqa: F811
    response = monitoring.client.open(path, method=method, json=json or None, headers=monitoring.headers[account])
    assert response.status_code < 300, (path, response.get_json())
    return response.get_json() if response.status_code != 204 else None


@pytest.fixture
def scene(monitoring, session) -> Scene:  # noqa: F811
    """An ES01 subject whose medical history, query messages, reason for change and investigator's name carry
    markup, an apheresis entry with its identifying COI, and an IT01 subject with an entry and a query."""
    session.execute(sa.text("UPDATE users SET display_name = :name WHERE username = :user"),
                    {"name": "Dr " + PAYLOAD, "user": username_of("investigator_ES01")})
    number = monitoring.enrol()
    history = {**MH, "MH": [{**MH["MH"][0], "MHTERM": PAYLOAD}, MH["MH"][1]]}
    mh = monitoring.saved(number, "mh", history, event="SCR")["id"]
    changed = {**history, "MH": [history["MH"][0], {**MH["MH"][1], "MHTERM": "Appendicitis " + PAYLOAD}]}
    assert monitoring.update(mh, changed, reason="Typo " + PAYLOAD).status_code == 200
    query = api(monitoring, "POST", "/api/v1/queries", "monitor_ES01", entry_id=mh, item="MH/0/MHTERM",
                message="Which? " + PAYLOAD)["id"]
    api(monitoring, "POST", f"/api/v1/queries/{query}/answer", "coordinator_ES01", message="Answer " + PAYLOAD)
    aph = monitoring.saved(number, "aph", {**APH, "COI": COI_HERE}, event="APH")["id"]
    coi_query = api(monitoring, "POST", "/api/v1/queries", "monitor_ES01", entry_id=aph, item="COI",
                    message="Check the COI.")["id"]
    it_number = monitoring.enrol(site="IT01")
    it_entry = monitoring.saved(it_number, "mh", MH, event="SCR", role="investigator_IT01")["id"]
    it_query = api(monitoring, "POST", "/api/v1/queries", "monitor_IT01", entry_id=it_entry, item="MHYN",
                   message="Italian secret question")["id"]
    return Scene(number, mh, aph, query, coi_query, it_number, it_entry, it_query)


@pytest.fixture
def browsers(monitoring):  # noqa: F811
    made: dict[str, WebClient] = {}

    def browser(account: str) -> WebClient:
        if account not in made:
            made[account] = WebClient(monitoring.client.application.test_client())
            made[account].login(username_of(account))
        return made[account]

    return browser


def test_markup_in_clinical_text_messages_names_and_reasons_is_escaped_on_every_page(scene, browsers):
    seen = set()
    for account in ("investigator_ES01", "monitor_ES01", "data_manager"):
        web = browsers(account)
        for path in scene.pages():
            response = web.get(path)
            assert response.status_code == 200, (account, path, response.status_code)
            text = body(response)
            assert page_problems(text) == [], (account, path)
            if ESCAPED in text:
                seen.add(path)
    # the payload reached (escaped) each page that shows a text it is in
    assert {f"/entries/{scene.mh}", f"/queries/{scene.query}", "/queries?state=all",
            f"/entries/{scene.mh}/items/MH/history", f"/entries/{scene.mh}/sdv"} <= seen
    history = browsers("monitor_ES01").text(f"/entries/{scene.mh}/items/MH/history")
    assert "Typo " + "&#34;&#39;&gt;" + ESCAPED in history  # the reason for change
    assert "Dr &#34;&#39;&gt;" + ESCAPED in history  # the name of who changed it


def test_pages_carry_no_inline_script_style_or_event_handler_and_the_strict_policy(scene, browsers):
    web = browsers("investigator_ES01")
    for path in [*scene.pages(), "/subjects/new", f"/subjects/{scene.number}/enter?form=ae", "/password",
                 "/no/such/page", f"/entries/{scene.it_entry}"]:
        response = web.get(path, headers={"Accept": "text/html"})
        assert page_problems(body(response)) == [], path
        assert response.headers["Content-Security-Policy"] == assets.PAGE_POLICY, path
        assert response.headers["Cache-Control"] == "no-store", path
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    anonymous = WebClient(web.client.application.test_client())
    for path in ("/login", "/setup", "/"):
        response = anonymous.get(path)
        assert response.headers["Content-Security-Policy"] == assets.PAGE_POLICY, path
        assert response.headers["Cache-Control"] == "no-store", path
        assert page_problems(body(response)) == [], path
    config = json.loads(html.unescape(re.search(r'<meta name="htmx-config" content=\'([^\']*)\'', body(web.get("/"))).group(1)))
    assert config["allowEval"] is False and config["allowScriptTags"] is False and config["selfRequestsOnly"] is True
    static = anonymous.get(assets.static_url("edc.css"))
    assert static.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert "immutable" not in web.get("/").headers["Cache-Control"]


def _post_rules(app) -> list[str]:
    return sorted({rule.rule for rule in app.url_map.iter_rules()
                   if rule.endpoint.startswith("web.") and "POST" in rule.methods})


def _path(rule: str, scene: Scene, item: str = "MHYN") -> str:
    return (rule.replace("<uuid:entry_id>", scene.mh).replace("<uuid:query_id>", scene.query)
            .replace("<number>", scene.number).replace("<item>", item))


def test_every_web_post_without_or_with_a_wrong_csrf_token_is_refused_and_writes_nothing(scene, browsers, session):
    rules = _post_rules(browsers("investigator_ES01").client.application)
    assert {"/login", "/logout", "/entries/<uuid:entry_id>", "/queries/<uuid:query_id>/answer"} <= set(rules)
    browsers("monitor_ES01"), browsers("data_manager")
    before = written(session)
    for account in ("investigator_ES01", "monitor_ES01"):
        web = browsers(account)
        other = browsers("data_manager").csrf
        for rule in rules:
            path = _path(rule, scene)
            fields = {"message": "forged", "action": "complete", "v.MHYN": "N", "items": "MHYN", "entry": "1",
                      "meaning": "approval", "username": username_of(account), "password": PASSWORD,
                      "current_password": PASSWORD, "new_password": "x-forged-pass-123", "confirm_password": "x-forged-pass-123",
                      "lang": "ar", "next": "/"}
            for token in (None, "", "0" * 64, other):
                sent = dict(fields) if token is None else {**fields, "csrf_token": token}
                response = web.post(path, sent, csrf=False)
                assert response.status_code == 403, (account, rule, token, response.status_code)
                assert response.mimetype == "text/html" and "did not come from this site" in body(response)
                htmx = web.client.post(path, data=fields, headers={"HX-Request": "true", "X-CSRF-Token": other})
                assert htmx.status_code == 403, (rule, htmx.status_code)
    assert written(session) == before
    assert browsers("investigator_ES01").client.get("/").status_code == 200   # the forged logout did not sign out


def test_login_is_bound_to_its_own_page(monitoring, session):  # noqa: F811
    attacker, victim = (WebClient(monitoring.client.application.test_client()) for _ in range(2))
    attacker.get("/login")
    sessions = count_rows(session, "auth_sessions")
    forged = victim.client.post("/login", data={"username": username_of("monitor_ES01"), "password": PASSWORD,
                                                "csrf_token": attacker.csrf})
    assert forged.status_code == 403 and count_rows(session, "auth_sessions") == sessions


def test_the_production_session_cookie_is_host_only_secure_httponly_and_lax(app_factory, session):
    app = app_factory(public_base_url="https://localhost", own=True)
    make_site(session, "ES01")
    make_user(session, "prod-user", [("coordinator", "ES01")])
    web = WebClient(app.test_client())
    page = web.client.get("/login", base_url="https://localhost")
    assert page.headers["Set-Cookie"].startswith("__Host-edc_pre=") and "Secure" in page.headers["Set-Cookie"]
    web.csrf = re.search(r'name="csrf_token" value="([0-9a-f]{64})"', body(page)).group(1)
    response = web.client.post("/login", data={"username": "prod-user", "password": PASSWORD, "csrf_token": web.csrf},
                               base_url="https://localhost")
    assert response.status_code == 303, body(response)[:300]
    cookies = response.headers.getlist("Set-Cookie")
    session_cookie = next(c for c in cookies if c.startswith("__Host-edc_session="))
    attributes = {part.strip().split("=")[0].lower() for part in session_cookie.split(";")[1:]}
    assert {"secure", "httponly", "path", "samesite"} <= attributes and "domain" not in attributes
    assert "SameSite=Lax" in session_cookie and "Path=/" in session_cookie
    token = session_cookie.split(";")[0].split("=", 1)[1]
    assert token not in response.headers["Location"]
    assert web.client.get("/", base_url="https://localhost").status_code == 200
    assert not any(c.startswith("edc_session=") for c in cookies)


def test_a_disabled_account_or_a_revoked_role_stops_working_on_the_next_request(scene, browsers, monitoring):  # noqa: F811
    coordinator = browsers("coordinator_ES01")
    assert coordinator.get(f"/entries/{scene.mh}").status_code == 200
    user = username_of("coordinator_ES01")
    roles = api(monitoring, "GET", f"/api/v1/users/{user}", "admin")["roles"]
    api(monitoring, "DELETE", f"/api/v1/users/{user}/roles/{roles[0]['id']}", "admin")
    revoked = coordinator.get(f"/entries/{scene.mh}")
    assert revoked.status_code in (403, 404) and "MHTERM" not in body(revoked) and ESCAPED not in body(revoked)

    monitor = browsers("monitor_ES01")
    assert monitor.get(f"/queries/{scene.query}").status_code == 200
    api(monitoring, "POST", f"/api/v1/users/{username_of('monitor_ES01')}/disable", "admin", reason="left the trial")
    gone = monitor.get(f"/queries/{scene.query}")
    assert gone.status_code == 302 and gone.headers["Location"].startswith("/login")
    htmx = monitor.client.get("/queries", headers={"HX-Request": "true"})
    assert htmx.status_code == 204 and htmx.headers["HX-Redirect"].startswith("/login")


def _another_sites_urls(scene: Scene) -> list[tuple[str, str]]:
    e, q, n = scene.it_entry, scene.it_query, scene.it_number
    gets = [f"/entries/{e}", f"/entries/{e}/queries", f"/entries/{e}/sdv", f"/entries/{e}/sign",
            f"/entries/{e}/items/MHYN/history", f"/queries/{q}", f"/subjects/{n}", f"/subjects/{n}/sign",
            f"/subjects/{n}/enter?form=ae", f"/queries?subject={n}", "/queries?site=IT01", "/subjects?site=IT01"]
    posts = [f"/entries/{e}", f"/entries/{e}/evaluate", f"/entries/{e}/queries", f"/entries/{e}/sdv",
             f"/entries/{e}/sign", f"/queries/{q}/answer", f"/queries/{q}/close", f"/queries/{q}/reopen",
             f"/queries/{q}/cancel", f"/queries/{q}/messages", f"/subjects/{n}/enter?form=ae",
             f"/subjects/{n}/enter/evaluate?form=ae", f"/subjects/{n}/sign"]
    return [("GET", p) for p in gets] + [("POST", p) for p in posts]


def test_another_sites_entry_query_and_subject_are_404_through_every_web_url(scene, browsers, session):
    accounts = ("investigator_ES01", "coordinator_ES01", "monitor_ES01")
    for account in accounts:
        browsers(account)
    before = written(session)
    for account in accounts:
        web = browsers(account)
        for method, path in _another_sites_urls(scene):
            fields = {"message": "x", "action": "complete", "item": "MHYN", "entry": "1", "meaning": "approval",
                      "username": username_of(account), "password": PASSWORD}
            response = web.get(path) if method == "GET" else web.post(path, fields)
            text = body(response)
            # 404 as in the API; a 403 only where the role lacks the page's permission at every site
            own = browsers(account).get(path.replace(scene.it_entry, scene.mh).replace(scene.it_query, scene.query)
                                        .replace(scene.it_number, scene.number)) if method == "GET" else None
            expected = {404} if own is None or own.status_code != 403 else {403}
            assert response.status_code in (expected if method == "GET" else {403, 404}), (account, method, path, response.status_code)
            assert scene.it_number in path or scene.it_number not in text, (account, path)
            assert "Italian secret question" not in text, (account, path)
            assert "Asthma" not in text, (account, path)
    assert written(session) == before


def test_identifying_values_are_withheld_from_roles_that_may_not_see_them(scene, browsers):
    for account in ("monitor_ES01", "safety", "auditor"):
        web = browsers(account)
        for path in (f"/entries/{scene.aph}", f"/queries/{scene.coi_query}", f"/entries/{scene.aph}/items/COI/history",
                     f"/entries/{scene.aph}/sdv", f"/entries/{scene.aph}/sign", f"/subjects/{scene.number}",
                     f"/entries/{scene.aph}/queries", "/queries?state=all"):
            response = web.get(path)
            assert response.status_code in (200, 403), (account, path, response.status_code)
            assert COI_HERE not in body(response), (account, path)
    assert COI_HERE in browsers("investigator_ES01").text(f"/entries/{scene.aph}")


def test_roles_without_clinical_pages_get_403(scene, browsers):
    for account in ("statistician", "admin"):
        web = browsers(account)
        for path in scene.pages()[1:] + ["/subjects/new", f"/subjects/{scene.number}/enter?form=ae"]:
            response = web.get(path)
            assert response.status_code == 403, (account, path, response.status_code)
            assert ESCAPED not in body(response) and "Asthma" not in body(response) and COI_HERE not in body(response)
        assert web.get("/").status_code == 200


def stays_here(location: str) -> bool:
    """A path of this site, with nothing a browser would strip or read as another host."""
    return (location == "/" or location.startswith("/") and not location.startswith(("//", "/\\"))
            and location.isprintable() and " " not in location and "evil.example" not in location)


RETURN_ADDRESSES = ["//evil.example/", "https://evil.example/", "/\\evil.example", "\\\\evil.example",
                    "/%0d%0aSet-Cookie:%20x=1", "/\r\nSet-Cookie: x=1", "/\t/evil.example", "javascript:alert(1)",
                    " //evil.example"]


def test_return_addresses_stay_on_this_site_and_inject_no_header(monitoring):  # noqa: F811
    for target in RETURN_ADDRESSES:
        web = WebClient(monitoring.client.application.test_client())
        web.get("/login")
        language = web.post("/language", {"lang": "es", "next": target})
        assert language.status_code == 303 and stays_here(language.headers["Location"]), target
        assert "x=1" not in language.headers.get("Set-Cookie", "")
        signed_in = web.post("/login", {"username": username_of("monitor_ES01"), "password": PASSWORD, "next": target})
        assert signed_in.status_code == 303 and stays_here(signed_in.headers["Location"]), target
        already = web.client.get("/login", query_string={"next": target})
        assert already.status_code == 302 and stays_here(already.headers["Location"]), target


def test_a_notice_names_a_known_text_and_never_puts_its_own_on_the_page(scene, browsers):
    web = browsers("monitor_ES01")
    anonymous = WebClient(web.client.application.test_client())
    for client, path in [(web, "/"), (web, f"/queries/{scene.query}"), (web, f"/entries/{scene.mh}"),
                         (web, f"/subjects/{scene.number}"), (web, f"/entries/{scene.mh}/sdv"), (anonymous, "/login")]:
        text = client.text(f"{path}?notice=%3Cb%3Eclick%20evil.example%3C%2Fb%3E")
        assert "evil.example" not in text.replace("notice=%3Cb%3Eclick%20evil.example", ""), path
        assert 'class="notice"' not in text, path


def test_no_secret_travels_in_a_url_or_a_log(scene, browsers, capfd, session):
    web = WebClient(browsers("investigator_ES01").client.application.test_client())
    web.get("/login")
    csrf = web.csrf
    response = web.post("/login", {"username": username_of("coordinator_ES01"), "password": PASSWORD,
                                   "next": f"/entries/{scene.mh}"})
    cookie = web.client.get_cookie("edc_session").value
    web.get(response.headers["Location"])
    page = web.text(f"/entries/{scene.mh}")
    links = re.findall(r'(?:href|action|hx-post|hx-get)="([^"]*)"', page)
    logged = "".join(capfd.readouterr())
    for secret in (csrf, web.csrf, cookie, PASSWORD):
        assert secret not in response.headers["Location"]
        assert not any(secret in link for link in links)
        assert secret not in logged
    assert PASSWORD not in page and cookie not in page
    typed = "typed-Secret-9911"   # a refused password is never written back into the page
    for path, fields in ((f"/entries/{scene.mh}/sign", {"meaning": "approval", "username": username_of("coordinator_ES01")}),
                         (f"/subjects/{scene.number}/sign", {"meaning": "approval", "username": username_of("investigator_ES01")}),
                         ("/password", {"current_password": typed, "new_password": typed, "confirm_password": typed})):
        refused = web.post(path, {**fields, "password": typed})
        assert refused.status_code >= 400 and typed not in body(refused), path
    anonymous = WebClient(web.client.application.test_client())
    anonymous.get("/login")
    wrong = anonymous.post("/login", {"username": username_of("monitor_ES01"), "password": typed})
    assert wrong.status_code == 401 and typed not in body(wrong)
    make_user(session, "invited", [("coordinator", "ES01")], demo=False)   # the mailed setup token
    token, token_hash = tokens.new_opaque_token()
    session.execute(sa.text("UPDATE users SET setup_token_hash = :h, setup_token_expires_at = :t WHERE username = 'invited'"),
                    {"h": token_hash, "t": clock.utcnow() + timedelta(hours=1)})
    anonymous.get("/setup")
    wrong_token = anonymous.post("/setup", {"token": token + "x", "new_password": typed + "!", "confirm_password": typed + "!"})
    assert wrong_token.status_code == 401 and token not in body(wrong_token) and typed not in body(wrong_token)
    done = anonymous.post("/setup", {"token": token, "new_password": typed + "!", "confirm_password": typed + "!"})
    assert done.status_code == 303 and token not in done.headers["Location"]
    logged = "".join(capfd.readouterr())
    assert typed not in logged and token not in logged and token_hash not in logged
