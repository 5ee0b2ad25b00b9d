"""Baseline endpoints for bench/ only: registered solely when benchmark_endpoints is on
(never in production, where settings refuse it). They declare no permission on purpose."""

from __future__ import annotations

from flask import Blueprint, jsonify

blp = Blueprint("bench", __name__, url_prefix="/bench")


@blp.get("/bare")
def bare():
    """The cheapest JSON response the stack can give: the floor every endpoint is compared with."""
    return jsonify({"ok": True})
