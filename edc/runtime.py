"""What services need from the running app besides a session: settings and key material.

It travels on the session (session.info) so services keep the (session, actor, ...) signature
without importing Flask; the app binds it per request and the CLI per command.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from edc import clock, storage
from edc.security import passwords
from edc.security.keyring import Keyring, LiveKeys, SigningKey, signing_key_in_use

INFO_KEY = "edc.runtime"


@dataclass(frozen=True)
class Runtime:
    settings: dict[str, Any]
    keys: LiveKeys = field(repr=False)  # the key directory, followed without a restart
    study: Any = field(default=None, repr=False)  # edc.ecrf.Study, loaded and checked by create_app
    # (form id, version, content hash) already checked against form_versions by this process.
    released_checked: set = field(default_factory=set, repr=False, compare=False)
    # What services derive once per process from the study (the scheduled forms the reports count, say).
    derived: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def load(cls, settings: dict[str, Any], study: Any = None) -> Runtime:
        return cls(settings=settings, keys=LiveKeys(settings["keys_dir"]), study=study)

    @property
    def keyring(self) -> Keyring:
        """The data key ring as held now (for encrypting, services.keys.ring_for_writing pins the current key)."""
        return self.keys.ring

    @property
    def signing_keys(self) -> tuple[SigningKey, ...]:
        return self.keys.signing_keys

    @cached_property
    def storage(self) -> storage.Storage:
        """Where exports and other produced files are kept (one client per process: boto3's is thread-safe)."""
        return storage.from_settings(self.settings)

    @property
    def current_signing_key(self) -> SigningKey:
        """The key new tokens are signed with: the newest once signing_key_activation_seconds have passed."""
        return signing_key_in_use(self.signing_keys, now=clock.utcnow(),
                                  activation_seconds=self.settings["signing_key_activation_seconds"])

    def signing_key(self, kid: Any) -> SigningKey | None:
        """The signing key `kid`, rereading the key directory (rate-limited) when it is not held here."""
        if not isinstance(kid, str):
            return None
        key = self.signing_keys_by_kid.get(kid)
        if key is None and self.keys.reload_for_unknown_key():
            key = self.signing_keys_by_kid.get(kid)
        return key

    def ring_holding(self, key_id: Any) -> Keyring:
        """The key ring, reread first (rate-limited) when it does not hold data key `key_id`."""
        ring = self.keys.ring
        if key_id not in ring.data_keys and self.keys.reload_for_unknown_key():
            ring = self.keys.ring
        return ring

    @property
    def password_hasher(self) -> passwords.Hasher:
        return passwords.hasher_for(self.settings)

    @property
    def signing_keys_by_kid(self) -> dict[str, SigningKey]:
        return {k.kid: k for k in self.signing_keys}


APP_KEY = "edc.runtime"
STUDY_KEY = "edc.study"


def for_app(app: Any) -> Runtime:
    """The app's runtime, loaded on first use so `flask edc keys init` can run before keys exist; its keys
    are reread here when their files changed (a few stat calls), so every request and command sees them."""
    rt = app.extensions.get(APP_KEY)
    if rt is None:
        rt = app.extensions[APP_KEY] = Runtime.load(app.config["EDC"], app.extensions.get(STUDY_KEY))
    else:
        rt.keys.refresh_if_changed()
    return rt


def bind(session: Any, runtime: Runtime) -> None:
    session.info[INFO_KEY] = runtime


def of(session: Any) -> Runtime:
    try:
        return session.info[INFO_KEY]
    except KeyError:
        raise RuntimeError("no runtime bound to this session (edc.runtime.bind)") from None
