"""Two nodes of one deployment in one process: two apps on the test's database, each reading a key directory
of the test's own (the same one, or each its own copy, as when the secret store has not reached a node yet).
The operator's `flask edc keys ...` commands run against node A; node B is never restarted."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import bearer, login, make_site, make_user
from trial.conftest import TODAY, TRIAL_FORMS, Trial

ACCOUNTS = {"investigator_ES01": [("investigator", "ES01", True)], "monitor_ES01": [("monitor", "ES01")]}


def username_of(account: str) -> str:
    return account.lower().replace("_", "-")


@dataclass
class Nodes:
    a: Trial        # the node the operator runs `flask edc keys ...` on
    b: Trial        # a node that keeps running
    a_keys: Path
    b_keys: Path    # the same folder as a_keys unless the nodes were given copies of their own

    def keys(self, *args: str) -> str:
        """Run `flask edc keys ARGS` against node A; return its output."""
        result = self.a.client.application.test_cli_runner().invoke(args=["edc", "keys", *args])
        assert result.exit_code == 0, result.output
        return result.output

    def publish(self) -> None:
        """Bring node A's key directory to node B, as the deployment's secret store does."""
        shutil.copytree(self.a_keys, self.b_keys, dirs_exist_ok=True)


@pytest.fixture
def make_nodes(app_factory, keys_dir, tmp_path, session, fake_clock):
    """make_nodes(shared=True, **settings): nodes A and B on the trial forms, sites ES01, a principal investigator and a
    monitor logged in; both nodes have served a request, so each holds the keys as they were."""
    fake_clock.now = TODAY

    def build(*, shared: bool = True, **settings) -> Nodes:
        a_keys = Path(shutil.copytree(keys_dir, tmp_path / "keys-a"))
        b_keys = a_keys if shared else Path(shutil.copytree(keys_dir, tmp_path / "keys-b"))
        a_app = app_factory(forms_dir=TRIAL_FORMS)  # the session's app, handed out as new: its keys not yet read
        a_app.config["EDC"].update(keys_dir=str(a_keys), **settings)
        a = Trial(a_app.test_client())
        b = Trial(app_factory(own=True, forms_dir=TRIAL_FORMS, keys_dir=str(b_keys), **settings).test_client())
        make_site(session, "ES01")
        for name, roles in ACCOUNTS.items():
            make_user(session, username_of(name), roles)
            a.headers[name] = b.headers[name] = bearer(login(a.client, username_of(name)))
        assert b.client.get("/api/v1/me", headers=b.headers["monitor_ES01"]).status_code == 200
        return Nodes(a, b, a_keys, b_keys)

    return build
