"""Identifying items (`identifying: true` in a form file) never leave the site: a reader whom
permissions.sees_identifying does not name gets them withheld, in entry values and in their audited changes.

It sits below the use cases, like sealing.py: entries and the audit trail withhold through here. Exports
withhold on their own (Study.withheld_items), since nothing identifying leaves in any export.
"""

from __future__ import annotations

import uuid
from typing import Any

from edc.ecrf import Study
from edc.security.permissions import Actor, sees_identifying

# What a reader who may not see an identifying item gets in its place (a value never left empty: null stays null).
WITHHELD = {"withheld": "identifying"}


def identifying_items(study: Study, form_id: str) -> frozenset[str]:
    """Ids of the items of `form_id` marked identifying in any of its versions (group members included)."""
    return frozenset(item.id for form in study.all_forms.get(form_id, {}).values()
                     for item in form.items.values() if item.identifying)


def hidden_from(study: Study, actor: Actor, form_id: str, site_id: uuid.UUID) -> frozenset[str]:
    """The items `actor` may not see in an entry of `form_id` for a subject of `site_id` (none for site staff,
    data managers and the form's own writers)."""
    items = identifying_items(study, form_id)
    if not items or sees_identifying(actor, site_id, study.form_roles.get(form_id, ())):
        return frozenset()
    return items


def withhold(values: Any, hidden: frozenset[str]) -> Any:
    """Entry values (or one side of an audited change) with each hidden item's value replaced by WITHHELD,
    in repeating-group rows too."""
    if not hidden:
        return values
    if isinstance(values, list):
        return [withhold(row, hidden) for row in values]
    if not isinstance(values, dict):
        return values
    return {key: dict(WITHHELD) if key in hidden and value is not None
            else withhold(value, hidden) if isinstance(value, list) else value
            for key, value in values.items()}


def withhold_changes(changes: list[dict[str, Any]], hidden: frozenset[str]) -> list[dict[str, Any]]:
    """An entry's audited changes with hidden items' old and new values withheld (a group's rows stripped of them)."""
    if not hidden:
        return changes
    return [{**change, "old": _side(change["field"], change.get("old"), hidden),
             "new": _side(change["field"], change.get("new"), hidden)} for change in changes]


def _side(field: str, value: Any, hidden: frozenset[str]) -> Any:
    if value is None:
        return None
    if field in hidden:
        return dict(WITHHELD)
    return withhold(value, hidden) if isinstance(value, list) else value
