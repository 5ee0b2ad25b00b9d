"""The fixtures themselves: what one test changes is never visible to the next, on either database.

The tests of each pair run in file order: the first changes things, the second looks for the change.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from conftest import DEMO_FORMS, REAL_PASSWORD_HASHING, TRIAL_FORMS, bearer, login, make_site, make_user, row_counts
from edc import runtime
from edc.models import Site, User

CHECK_SEED = "fixture check: one site, one account"


def test_a_test_writes_through_the_api_and_a_session(client, session, staff, database_url):
    headers = bearer(login(client, staff["investigator"]))
    response = client.post("/api/v1/subjects", json={"site": "ES01", "birth_year": 2016, "birth_month": 4, "sex": "F",
                                                     "consent_date": "2026-11-02"}, headers=headers)
    assert response.status_code == 201, response.get_json()
    make_site(session, "LB01", time_zone="Asia/Beirut")
    assert row_counts(database_url)["subjects"] == 1


def test_the_next_test_finds_every_table_empty(database_url):
    assert {name: count for name, count in row_counts(database_url).items() if count} == {}


def seed_check(session):
    make_site(session, "JO01", time_zone="Asia/Amman")
    make_user(session, "seeded-user", [("investigator", "JO01")])


def test_a_seeded_test_changes_its_seed(session, seed_once):
    seed_once(CHECK_SEED, lambda: seed_check(session))
    assert session.scalars(sa.select(Site.code)).all() == ["JO01"]
    session.execute(sa.update(User).values(display_name="Changed"))
    make_site(session, "IT01", time_zone="Europe/Rome")


def test_the_next_seeded_test_gets_the_seed_as_it_was_built(session, seed_once):
    def must_not_run():
        raise AssertionError("the seed was built again instead of restored")

    seed_once(CHECK_SEED, must_not_run)
    assert session.scalars(sa.select(Site.code)).all() == ["JO01"]
    assert session.scalars(sa.select(User.display_name)).all() == ["Seeded-User"]


def test_a_seed_refuses_to_restore_over_another_state(session, seed_once):
    make_site(session, "ES01")
    with pytest.raises(AssertionError, match="another state"):
        seed_once(CHECK_SEED, lambda: None)


def test_the_test_after_a_seed_finds_every_table_empty(database_url):
    assert {name: count for name, count in row_counts(database_url).items() if count} == {}


def hash_parameters(session, username: str) -> dict[str, int]:
    stored = session.scalars(sa.select(User.password_hash).where(User.username == username)).one()
    return {k: int(v) for k, v in (p.split("=") for p in stored.split("$")[3].split(","))}


@pytest.mark.real_password_hashing
def test_a_marked_test_hashes_at_full_strength(app, session):
    make_user(session, "strong")
    assert hash_parameters(session, "strong") == {"m": REAL_PASSWORD_HASHING["argon2_memory_kib"],
                                                  "t": REAL_PASSWORD_HASHING["argon2_time_cost"], "p": 1}


def test_every_other_test_hashes_cheaply_with_the_same_code(app, session, client):
    make_user(session, "cheap")
    settings = runtime.for_app(app).settings
    assert hash_parameters(session, "cheap") == {"m": settings["argon2_memory_kib"],
                                                 "t": settings["argon2_time_cost"], "p": 1}
    assert settings["argon2_memory_kib"] < REAL_PASSWORD_HASHING["argon2_memory_kib"]
    login(client, "cheap")  # and the cheap hash verifies like any other


def test_apps_on_one_forms_folder_share_its_study_and_no_other_state(app_factory):
    first, second = app_factory(), app_factory()
    trial_first, trial_second = app_factory(forms_dir=str(TRIAL_FORMS)), app_factory(forms_dir=str(TRIAL_FORMS))
    assert first is not second and trial_first is not trial_second  # two apps asked for are two apps
    assert runtime.for_app(first).study is runtime.for_app(second).study
    assert runtime.for_app(trial_first).study is runtime.for_app(trial_second).study
    assert runtime.for_app(first).study.source == str(DEMO_FORMS / "study.yaml")
    assert runtime.for_app(trial_first).study.source == str(TRIAL_FORMS / "study.yaml")
    assert runtime.for_app(first).released_checked is not runtime.for_app(second).released_checked


def test_a_test_changes_its_apps_settings_and_runtime(app, session):
    app.config["EDC"]["page_size_max"] = 3
    runtime.for_app(app).released_checked.add(("vitals", "1", "not-a-hash"))
    runtime.for_app(app).derived["fixture check"] = True


def test_the_next_test_gets_the_settings_and_runtime_as_built(app):
    assert app.config["EDC"]["page_size_max"] == 200
    assert runtime.for_app(app).released_checked == set()
    assert "fixture check" not in runtime.for_app(app).derived
