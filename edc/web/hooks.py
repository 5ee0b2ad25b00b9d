"""The web blueprint's per-request hooks: language, browser session and permission, then the page's headers
(compression, Content-Security-Policy, the pre-session cookie); and what every template may use."""

from __future__ import annotations

from flask import Response

from edc.web import assets, browser, i18n
from edc.web.blueprint import blp

blp.before_request(i18n.choose_language)
blp.before_request(browser.authorize)
blp.before_request(browser.refuse_unstorable_text)


@blp.after_request
def _finish(response: Response) -> Response:
    browser.keep_pre_session(response)
    return assets.finish_page(response)


def page_globals() -> dict:
    lang = i18n.language()
    return {"static_url": assets.static_url, "csrf_token": browser.csrf_token, "t": i18n.translate, "lang": lang,
            "rtl": lang in i18n.RTL_LANGUAGES, "actor": browser.current_actor_or_none(), "languages": i18n.LANGUAGES}


blp.context_processor(page_globals)
