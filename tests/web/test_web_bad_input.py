"""Bad input on every web page: the web's analogue of the OpenAPI fuzz (tests/test_fuzz.py). Every web rule of
the url_map is requested by several roles with bad path values (an unknown id, another site's, a number that
does not exist, markup) and bad query strings, and every POST rule with junk fields under a valid CSRF token
(numbers that are not, huge strings, NUL and control characters, unknown items and codes, bad dates, versions
and row counts). The answer is never a 5xx, always an HTML page (or a redirect, or 204 to htmx), and when it
is an error nothing was written."""

from __future__ import annotations

import uuid

from conftest import PASSWORD
from monitoring.conftest import monitoring, username_of  # noqa: F401 (a fixture)
from web.test_web_security import Scene, browsers, scene, written  # noqa: F401 (fixtures)

UNKNOWN = str(uuid.UUID(int=7))
HTML = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}   # what a browser asks for (an unknown URL's 404 too)
BAD_QUERIES = [
    "form=nope&event=nope&instance=-1&page=0&page_size=99999&state=bogus&status=bogus&lang=&item=%3Cx%3E",
    "form=mh&event=SCR&instance=abc&page=abc&page_size=-1&site=%3Cx%3E&subject=%3Cx%3E&notice=%3Cx%3E",
    "form=mh&event=SCR&instance=99999999999999999999&page=99999999999999999999&page_size=0&site=IT01",
    "form=ae&instance=0&state=&site=&subject=ES01-9999&page_size=abc&item=MH%2F999%2FMHTERM",
    "form=%00&event=%00&instance=%00&state=%00&site=%00&subject=%00&page=%00&item=%00&lang=%00&next=%00",
    "form=mh&event=SCR&instance=2147483648",
]
HUGE = "x" * 100_000
JUNK_FORMS = [
    {"v.MHYN": "ZZ", "v.HR": "abc", "v.TEMP": "1e999", "v.WEIGHT": "NaN", "action": "complete", "etag": "garbage",
     "reason": "r", "message": "m", "item": "NOPE", "items": ["NOPE", "<x>"], "entry": "2", "meaning": "bogus",
     "username": "nobody", "password": "wrong", "lang": "xx", "next": "<x>", "form_token": "not-a-uuid"},
    {"v.MH.0.MHTERM": HUGE, "v.MHYN": HUGE, "message": HUGE, "item": HUGE, "reason": HUGE, "items": HUGE,
     "action": HUGE, "etag": HUGE, "meaning": HUGE, "username": HUGE, "password": HUGE, "form_token": HUGE},
    {"v.MHYN": "\x00", "v.MH.0.MHTERM": "a\x00b\x01\x1b", "message": "a\x00b", "item": "MH\x00", "action": "\x00",
     "reason": "\x00", "etag": '"\x00"', "items": "\x00", "entry": "\x00", "meaning": "\x00", "username": "\x00",
     "password": "\x00", "form_token": "\x00", "rows.MH": "\x00", "m.MHYN": "\x00"},
    {"v.NOPE": "1", "m.NOPE": "ZZ", "m.MHYN": "NOT-A-CODE", "rows.MH": "abc", "rows.NOPE": "-5",
     "v.MH.-1.MHTERM": "x", "v.MH.99999999999999999999.MHTERM": "x", "action": "remove:MH:99999999999999999999",
     "item": "MH/-1/MHTERM", "items": ["MH/0/NOPE", "MH/999/MHTERM"], "message": "x"},
    {"v.MHSTDAT": "2026-13-45", "v.MH.0.MHSTDAT": "0000-00", "v.VSDAT": "not a date", "v.MH.0.MHENDAT": "9999-99-99T99:99",
     "etag": '"-1"', "version": "-1", "rows.MH": "99999999999999999999", "action": "add:MH", "item": "MH.x.MHTERM",
     "message": "x", "meaning": "approval", "username": "nobody", "password": "x"},
    {"action": "draft", "etag": 'W/"99999999999999999999"', "reason": "", "v.MHYN": "Y", "rows.MH": "-3",
     "form_token": str(uuid.UUID(int=0)), "item": "", "message": "", "items": "", "entry": ""},
]
POST_ACCOUNTS = ("coordinator_ES01", "monitor_ES01")
GET_ACCOUNTS = ("coordinator_ES01", "monitor_ES01", "data_manager", "statistician")
NOT_SWEPT = {"/logout", "/static/<path:name>"}   # signing out ends the sweep's session; static files: tests/web/test_assets.py


def _web_rules(app, method: str) -> list[str]:
    return sorted({rule.rule for rule in app.url_map.iter_rules()
                   if rule.endpoint.startswith("web.") and method in rule.methods and rule.rule not in NOT_SWEPT})


def _paths(rule: str, made: Scene) -> list[str]:
    """The rule with good values, then each bad one in turn."""
    good = {"<uuid:entry_id>": made.mh, "<uuid:query_id>": made.query, "<number>": made.number, "<item>": "MHYN"}
    bad = {"<uuid:entry_id>": [UNKNOWN, made.it_entry], "<uuid:query_id>": [UNKNOWN, made.it_query],
           "<number>": [made.it_number, "ES01-9999", "<x>", "%00"], "<item>": ["NOPE", "<x>", "MH/0/MHTERM", "%00"]}

    def fill(values: dict[str, str]) -> str:
        path = rule
        for name, value in values.items():
            path = path.replace(name, value)
        return path

    paths = [fill(good)]
    for name, values in bad.items():
        if name in rule:
            paths += [fill({**good, name: value}) for value in values]
    return paths


def _assert_answered(response, what) -> None:
    assert response.status_code < 500, (what, response.status_code, response.get_data(as_text=True)[:600])
    if response.status_code in (204, 301, 302, 303, 304):
        return
    assert response.mimetype == "text/html", (what, response.status_code, response.mimetype)


def test_every_web_page_answers_bad_paths_and_query_strings_with_a_page_never_a_5xx(scene, browsers, session):  # noqa: F811
    for account in GET_ACCOUNTS:
        browsers(account)
    before = written(session)
    for account in GET_ACCOUNTS:
        web = browsers(account)
        for rule in _web_rules(web.client.application, "GET"):
            paths = _paths(rule, scene)
            for path in paths:
                _assert_answered(web.client.get(path, headers=HTML), (account, path))
            for query in BAD_QUERIES:
                _assert_answered(web.client.get(f"{paths[0]}?{query}", headers=HTML), (account, paths[0], query))
            _assert_answered(web.client.get(paths[0], headers={**HTML, "HX-Request": "true"}), (account, paths[0], "htmx"))
    assert written(session) == before


def test_every_web_post_answers_junk_fields_with_a_page_and_writes_nothing_when_it_refuses(scene, browsers, session):  # noqa: F811
    for account in POST_ACCOUNTS:
        browsers(account)
    for account in POST_ACCOUNTS:
        web = browsers(account)
        for rule in _web_rules(web.client.application, "POST"):
            paths = _paths(rule, scene)
            if "/enter" in rule:
                paths = [f"{paths[0]}?form=mh&event=SCR", f"{paths[0]}?form=nope&instance=-1",
                         f"{paths[0]}?form=mh&event=SCR&instance=99999999999999999999", *paths[1:]]
            for path in paths:
                for fields in JUNK_FORMS:
                    last = written(session)
                    for headers in (HTML, {**HTML, "HX-Request": "true"}) if path == paths[0] else (HTML,):
                        response = web.post(path, fields, headers=headers)
                        _assert_answered(response, (account, path, sorted(fields)[:3], headers))
                        now = written(session)
                        if response.status_code >= 400:
                            keep = ("audit_records",) if response.status_code in (401, 429) else ()  # a failed password check is recorded
                            assert {k: v for k, v in now.items() if k not in keep} == \
                                   {k: v for k, v in last.items() if k not in keep}, (account, path, response.status_code)
                        last = now
        assert web.client.get("/").status_code == 200, account   # still signed in: no junk ended the session


def test_the_sign_in_pages_answer_junk_with_a_page(monitoring):  # noqa: F811
    from web.conftest import WebClient

    web = WebClient(monitoring.client.application.test_client())
    web.get("/login")
    for fields in JUNK_FORMS:
        for path in ("/login", "/setup", "/language"):
            _assert_answered(web.post(path, fields, headers=HTML), (path, sorted(fields)[:3]))
        _assert_answered(web.client.get("/login", query_string={"next": fields.get("next", "\x00")}), "/login?next")
    assert web.post("/login", {"username": username_of("monitor_ES01"), "password": PASSWORD}).status_code == 303


def test_junk_cookies_and_csrf_tokens_are_a_sign_in_page_or_a_403_never_a_5xx(monitoring, session):  # noqa: F811
    from web.conftest import WebClient

    web = WebClient(monitoring.client.application.test_client())
    web.login(username_of("coordinator_ES01"))
    before = written(session)
    for token in ("é" * 64, "\x00", "x" * 100_000, "☃"):
        for sent in ({"data": {"csrf_token": token}}, {"headers": {"X-CSRF-Token": token.encode().decode("latin-1")}}):
            response = web.client.post("/subjects/new", **sent)
            assert response.status_code == 403 and response.mimetype == "text/html", (token[:8], sent.keys())
    assert written(session) == before
    for cookie in ('"\\000"', '"\\377\\376"', "x" * 4000, "%00", '"a\\"b"'):
        anonymous = monitoring.client.application.test_client()
        response = anonymous.get("/subjects", headers={"Cookie": f"edc_session={cookie}; edc_pre={cookie}", **HTML})
        assert response.status_code == 302 and response.headers["Location"].startswith("/login"), cookie
        posted = anonymous.post("/login", data={"username": "x", "password": "y", "csrf_token": "0" * 64},
                                headers={"Cookie": f"edc_session={cookie}; edc_pre={cookie}", **HTML})
        assert posted.status_code == 403 and posted.mimetype == "text/html", cookie
    assert written(session) == before
