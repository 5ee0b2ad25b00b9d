import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from conftest import BACKEND, make_app, problem
from edc.database import MIGRATIONS_DIR
from edc.extensions import db
from edc.models.base import Base


def test_migrations_have_a_single_head():
    assert len(ScriptDirectory(str(MIGRATIONS_DIR)).get_heads()) == 1


def test_flask_sqlalchemy_uses_the_models_metadata():
    import edc.models

    assert db.metadata is Base.metadata  # what migrations compare with is what the models declare
    assert {model.__table__.name for model in map(edc.models.__dict__.get, edc.models.__all__)} <= set(db.metadata.tables)


def test_migrated_database_matches_the_models(app):
    with app.app_context(), db.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), db.metadata) == []


def test_database_is_at_the_head(app):
    head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
    with app.app_context():
        assert db.session.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one() == head


def test_sqlite_runs_with_wal_and_foreign_keys(app):
    if BACKEND != "sqlite":
        return
    with app.app_context():
        assert db.session.execute(sa.text("PRAGMA journal_mode")).scalar_one() == "wal"
        assert db.session.execute(sa.text("PRAGMA foreign_keys")).scalar_one() == 1


def test_foreign_keys_are_enforced(session):
    import uuid

    from edc.models import AuthSession
    from edc import clock

    session.add(AuthSession(user_id=uuid.uuid4(), created_at=clock.utcnow(), expires_at=clock.utcnow()))
    try:
        session.flush()
    except sa.exc.IntegrityError:
        session.rollback()
    else:
        raise AssertionError("a session for a user that does not exist was accepted")


def test_readyz_is_ok_at_head(client):
    assert client.get("/readyz").get_json() == {"status": "ready"}


def test_readyz_is_503_on_an_unmigrated_database(tmp_path, keys_dir):
    app = make_app(f"sqlite:///{tmp_path / 'empty.sqlite3'}", keys_dir)
    body = problem(app.test_client().get("/readyz"), 503)
    assert "not migrated" in body["detail"] or "migration head" in body["detail"]
    with app.app_context():
        db.engine.dispose()


def test_readyz_is_503_when_the_audit_protection_is_gone(app, client):
    with app.app_context():
        if BACKEND == "postgresql":
            db.session.execute(sa.text("ALTER TABLE audit_records DISABLE TRIGGER audit_records_no_update"))
        else:
            db.session.execute(sa.text("DROP TRIGGER audit_records_no_update"))
        db.session.commit()
    body = problem(client.get("/readyz"), 503)
    assert "audit" in body["detail"]
    if BACKEND == "postgresql":
        with app.app_context():
            db.session.execute(sa.text("ALTER TABLE audit_records ENABLE TRIGGER audit_records_no_update"))
            db.session.commit()


def test_0009_takes_passwords_setup_tokens_and_password_sessions_from_registry_accounts(app, session):
    """Registry accounts made before registration created them (users create + roles grant) lose their password."""
    from datetime import timedelta

    from flask_migrate import downgrade, upgrade

    from conftest import make_user
    from edc import clock
    from edc.models import AuthSession, RoleAssignment, User

    now = clock.utcnow()
    registry, person = make_user(session, "old-registry"), make_user(session, "person")
    session.add(RoleAssignment(user_id=registry.id, role="registry", granted_at=now, granted_by="x"))
    registry.setup_token_hash, registry.setup_token_expires_at = "f" * 64, now + timedelta(days=1)
    for user in (registry, person):
        session.add(AuthSession(user_id=user.id, created_at=now, expires_at=now + timedelta(hours=8)))
    session.commit()
    session.close()
    with app.app_context():
        downgrade(revision="0008")
        upgrade()
        db.session.remove()
    stored = {u.username: u for u in session.scalars(sa.select(User))}
    assert stored["old-registry"].password_hash is None and stored["old-registry"].setup_token_hash is None
    assert stored["person"].password_hash is not None
    open_sessions = session.scalars(sa.select(AuthSession.user_id).where(AuthSession.revoked_at.is_(None))).all()
    assert open_sessions == [stored["person"].id]
