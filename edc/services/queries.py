"""Automatic queries: opened by warnings, answered (with the fixing change linked) when a later
save makes the rule pass. The monitoring work extends this with manual queries and transitions."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from edc import clock
from edc.models.entries import Entry, Query
from edc.security.permissions import Actor
from edc.services import audit

OPEN = "open"


def _key(check_id: str | None, item_id: str | None) -> tuple[str | None, str | None]:
    """What identifies an automatic query within one entry: the rule and the item (or row path)."""
    return check_id, item_id


def _wanted(warnings: list[dict[str, Any]], only_cross_form: bool) -> dict[tuple, dict[str, Any]]:
    wanted = {}
    for warning in warnings:
        if only_cross_form and warning.get("kind") != "cross_form":
            continue
        for item in warning.get("items") or [None]:
            wanted[_key(warning["check"], item)] = warning
    return wanted


def sync_automatic(session: Session, actor: Actor, entry: Entry, warnings: list[dict[str, Any]], *,
                   fixing_change: uuid.UUID | None, only_cross_form: bool = False,
                   new_entry: bool = False) -> tuple[list[Query], list[Query]]:
    """Open a query for each new warning; answer open automatic queries whose rule now passes."""
    now = clock.utcnow()
    existing = [] if new_entry else session.scalars(
        sa.select(Query).where(Query.entry_id == entry.id, Query.origin == "auto", Query.state == OPEN)
    ).all()
    wanted = _wanted(warnings, only_cross_form)
    opened, answered = [], []
    for query in existing:
        if only_cross_form and query.rule_kind != "cross_form":
            continue
        if _key(query.check_id, query.item_id) not in wanted:
            query.state, query.answered_at, query.answered_by_change = "answered", now, fixing_change
            answered.append(query)
    open_keys = {_key(q.check_id, q.item_id) for q in existing if q.state == OPEN}
    for key, warning in wanted.items():
        if key in open_keys:
            continue
        query = Query(id=uuid.uuid4(), entry_id=entry.id, subject_id=entry.subject_id, site_id=entry.subject.site_id,
                      form_id=entry.form_id, item_id=key[1], origin="auto", check_id=key[0], rule_kind=warning.get("kind"),
                      message=warning["message"],
                      critical=bool(warning.get("critical")), state=OPEN, opened_at=now, opened_by=actor.username)
        session.add(query)
        opened.append(query)
    session.flush()
    for query in opened:
        audit.record(session, actor, "query_opened", entity_type="query", entity_id=query.id,
                     chain=audit.subject_chain(entry.subject_id), site_code=entry.subject.site.code,
                     changes=[audit.change("entry", None, str(entry.id)), audit.change("item", None, query.item_id),
                              audit.change("check", None, query.check_id), audit.change("message", None, query.message)])
    for query in answered:
        audit.record(session, actor, "query_answered", entity_type="query", entity_id=query.id,
                     chain=audit.subject_chain(entry.subject_id), site_code=entry.subject.site.code,
                     changes=[audit.change("state", OPEN, "answered"),
                              audit.change("fixing_change", None, str(fixing_change) if fixing_change else None)])
    return opened, answered


def for_entry(session: Session, entry_id: uuid.UUID) -> list[Query]:
    return list(session.scalars(sa.select(Query).where(Query.entry_id == entry_id).order_by(Query.opened_at, Query.id)))


def for_subject(session: Session, subject_id: uuid.UUID) -> list[Query]:
    return list(session.scalars(sa.select(Query).where(Query.subject_id == subject_id).order_by(Query.opened_at, Query.id)))
