"""Baseline endpoints for bench/ only: registered solely when benchmark_endpoints is on
(never in production, where settings refuse it). They declare no permission on purpose."""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from flask import Blueprint, jsonify, request

from edc.extensions import db
from edc.models.entries import Entry
from edc.models.subjects import Subject

blp = Blueprint("bench", __name__, url_prefix="/bench")


@blp.get("/bare")
def bare():
    """The cheapest JSON response the stack can give: the floor every endpoint is compared with."""
    return jsonify({"ok": True})


@blp.post("/insert")
def insert():
    """Insert the posted JSON as an entry row through SQLAlchemy: no auth, validation, encryption or audit.

    Body: {"subject": "<study number>", "form": "<form id>", "data": {...}}. The floor for saving an entry.
    """
    body = request.get_json()
    subject_id = db.session.scalar(sa.select(Subject.id).where(Subject.number == body["subject"]))
    entry = Entry(id=uuid.uuid4(), subject_id=subject_id, event_key="", form_id=body["form"], form_version="bench",
                  unique_slot=None, data=body["data"], status="draft", created_by="bench", updated_by="bench")
    db.session.add(entry)
    answer = jsonify({"id": str(entry.id)})
    db.session.commit()
    return answer, 201
