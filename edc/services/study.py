"""Reading the study definition: schedule, forms (native JSON) and FHIR Questionnaires."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from edc import runtime
from edc.ecrf import FormDef, to_questionnaire
from edc.problems import NotFound
from edc.security.permissions import Actor, require


def _labels(labels: dict[str, str], lang: str) -> str:
    return labels.get(lang) or labels.get("en", "")


def schedule(session: Session, actor: Actor) -> dict[str, Any]:
    require(actor, "forms:read")
    study = runtime.of(session).study
    return {
        "study": study.id,
        "title": study.title,
        "parameters": study.parameters,
        "missing_codes": study.missing_codes,
        "events": [
            {"id": e.id, "label": e.label, "anchor": e.anchor, "day": e.day, "window_before": e.window_before,
             "window_after": e.window_after, "forms": e.forms, "repeatable": e.repeatable,
             "optional": e.optional}
            for e in study.events
        ],
        "subject_logs": study.subject_logs,
        "repeating_forms": study.repeating_forms,
        "form_roles": {k: sorted(v) for k, v in study.form_roles.items()},
    }


def list_forms(session: Session, actor: Actor) -> list[dict[str, Any]]:
    require(actor, "forms:read")
    study = runtime.of(session).study
    return [{"id": form_id, "title": study.form(form_id).title, "versions": study.versions(form_id),
             "latest": study.form(form_id).version} for form_id in study.form_ids]


def _form(session: Session, form_id: str, version: str | None) -> FormDef:
    try:
        return runtime.of(session).study.form(form_id, version)
    except KeyError:
        raise NotFound(f"No form {form_id}{' version ' + version if version else ''}.") from None


def _item(item, lang: str) -> dict[str, Any]:
    out = {
        "id": item.id, "type": item.type, "label": _labels(item.label, lang), "labels": item.label,
        "help": _labels(item.help, lang) if item.help else None, "required": item.required,
        "min": item.min, "max": item.max, "soft_min": item.soft_min, "soft_max": item.soft_max,
        "pattern": item.pattern, "max_length": item.max_length, "unit": item.unit, "precision": item.precision,
        "show_if": item.show_if, "expression": item.expression, "derivation": item.derivation,
        "encrypt": item.encrypt, "identifying": item.identifying, "partial": item.partial, "not_future": item.not_future,
        "missing_codes": list(item.missing_codes), "group": item.group, "value_type": item.value_type,
        "code_list": ([{"code": c, "label": _labels(labels, lang)} for c, labels in item.code_list.items()]
                      if item.code_list else None),
    }
    return {k: v for k, v in out.items() if v not in (None, [], False) or k in ("required",)}


def form_definition(session: Session, actor: Actor, form_id: str, *, version: str | None, lang: str) -> dict[str, Any]:
    require(actor, "forms:read")
    form = _form(session, form_id, version)
    return {
        "id": form.id, "version": form.version, "title": _labels(form.title, lang), "titles": form.title,
        # Notes on the form itself, e.g. that its translations still await clinical review.
        "description": _labels(form.description, lang) if form.description else None,
        "repeating": form.repeating, "content_hash": form.content_hash,
        "sections": [{"id": s.id, "title": _labels(s.title, lang), "items": list(s.items)} for s in form.sections],
        "groups": [{"id": g.id, "label": _labels(g.label, lang), "items": list(g.items), "show_if": g.show_if}
                   for g in form.groups.values()],
        "items": [_item(item, lang) for item in form.items.values()],
        "checks": [{"id": c.id, "expression": c.expression, "message": _labels(c.message, lang), "severity": c.severity,
                    "items": list(c.items), "critical": c.critical, "scope": c.scope} for c in form.checks],
    }


def questionnaire(session: Session, actor: Actor, form_id: str, *, version: str | None, lang: str) -> dict[str, Any]:
    require(actor, "forms:read")
    return to_questionnaire(_form(session, form_id, version), lang=lang)
