"""Extension objects, created unbound and wired to the app in create_app."""

from __future__ import annotations

from flask_migrate import Migrate
from flask_smorest import Api
from flask_sqlalchemy import SQLAlchemy

from edc.models.base import Base

# Built on the models' own declarative base: db.metadata is Base.metadata (one registry, one naming
# convention), so migrations and `db.session` see exactly the tables the models declare.
db = SQLAlchemy(model_class=Base)
migrate = Migrate()
api = Api()
