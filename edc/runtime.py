"""What services need from the running app besides a session: settings and key material.

It travels on the session (session.info) so services keep the (session, actor, ...) signature
without importing Flask; the app binds it per request and the CLI per command.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from edc import storage
from edc.security import passwords
from edc.security.keyring import Keyring, SigningKey, load_keyring, load_signing_keys

INFO_KEY = "edc.runtime"


@dataclass(frozen=True)
class Runtime:
    settings: dict[str, Any]
    keyring: Keyring = field(repr=False)
    signing_keys: tuple[SigningKey, ...] = field(repr=False)
    study: Any = field(default=None, repr=False)  # edc.ecrf.Study, loaded and checked by create_app
    # (form id, version, content hash) already checked against form_versions by this process.
    released_checked: set = field(default_factory=set, repr=False, compare=False)
    # What services derive once per process from the study (the scheduled forms the reports count, say).
    derived: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def load(cls, settings: dict[str, Any], study: Any = None) -> Runtime:
        keys_dir = settings["keys_dir"]
        return cls(settings=settings, keyring=load_keyring(keys_dir), signing_keys=tuple(load_signing_keys(keys_dir)), study=study)

    @cached_property
    def storage(self) -> storage.Storage:
        """Where exports and other produced files are kept (one client per process: boto3's is thread-safe)."""
        return storage.from_settings(self.settings)

    @property
    def current_signing_key(self) -> SigningKey:
        return self.signing_keys[-1]

    @property
    def password_hasher(self) -> passwords.Hasher:
        return passwords.hasher_for(self.settings)

    @property
    def signing_keys_by_kid(self) -> dict[str, SigningKey]:
        return {k.kid: k for k in self.signing_keys}


APP_KEY = "edc.runtime"
STUDY_KEY = "edc.study"


def for_app(app: Any) -> Runtime:
    """The app's runtime, loaded on first use so `flask edc keys init` can run before keys exist."""
    rt = app.extensions.get(APP_KEY)
    if rt is None:
        rt = app.extensions[APP_KEY] = Runtime.load(app.config["EDC"], app.extensions.get(STUDY_KEY))
    return rt


def bind(session: Any, runtime: Runtime) -> None:
    session.info[INFO_KEY] = runtime


def of(session: Any) -> Runtime:
    try:
        return session.info[INFO_KEY]
    except KeyError:
        raise RuntimeError("no runtime bound to this session (edc.runtime.bind)") from None
