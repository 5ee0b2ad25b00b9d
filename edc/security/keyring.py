"""Key material on disk: the data key ring (keyring.json) and the token-signing keys (signing/*.pem).

Layout of keys_dir (never committed; `flask edc keys init` creates it):
  keyring.json   {"development": bool, "data_keys": {"1": b64, ...}, "audit_key": b64, "blind_index_key": b64}
  signing/<kid>.pem   EC P-256 private keys; the newest signs, all are published in the JWKS.
Development keys (created by `make serve` or tests) carry "development": true / a "dev-" kid,
and production refuses them.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from edc import clock

KEYRING_FILE = "keyring.json"
SIGNING_DIR = "signing"
DEV_PREFIX = "dev-"
KID_TIME_FORMAT = "%Y%m%dT%H%M%S%fZ"  # a signing key's kid starts with the time it was made
RELOAD_INTERVAL_SECONDS = 1.0  # the least time between two rereads for a key this process does not hold

log = logging.getLogger("edc.keys")


class KeyError_(RuntimeError):
    """Key material is missing, unreadable or malformed (the message never holds key bytes)."""


@dataclass(frozen=True)
class Keyring:
    development: bool
    data_keys: dict[int, bytes]
    audit_key: bytes
    blind_index_key: bytes
    # The data key new values are encrypted under when the database names one (see pinned_to); else the newest.
    pinned_data_key_id: int | None = None

    @property
    def current_data_key_id(self) -> int:
        return self.pinned_data_key_id if self.pinned_data_key_id is not None else max(self.data_keys)

    def pinned_to(self, key_id: int) -> Keyring:
        """This ring, encrypting under data key `key_id` (which it must hold)."""
        if key_id not in self.data_keys:
            raise KeyError_(f"the key ring holds no data key {key_id}")
        return replace(self, pinned_data_key_id=key_id)


@dataclass(frozen=True)
class SigningKey:  # not slotted: cached_property stores the derived public key on the instance
    kid: str
    private_key: ec.EllipticCurvePrivateKey = field(repr=False)

    @functools.cached_property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self.private_key.public_key()

    @property
    def development(self) -> bool:
        return self.kid.startswith(DEV_PREFIX)

    @property
    def created(self) -> str:
        return self.kid.removeprefix(DEV_PREFIX)

    @property
    def created_at(self) -> datetime | None:
        """When the key was made, from its kid (None for a kid not made by add_signing_key)."""
        try:
            return datetime.strptime(self.created.split("-")[0], KID_TIME_FORMAT).replace(tzinfo=UTC)
        except ValueError:
            return None

    def public_jwk(self) -> dict[str, str]:
        numbers = self.public_key.public_numbers()
        return {
            "kty": "EC",
            "crv": "P-256",
            "x": _b64url(numbers.x.to_bytes(32, "big")),
            "y": _b64url(numbers.y.to_bytes(32, "big")),
            "use": "sig",
            "alg": "ES256",
            "kid": self.kid,
        }


def signing_key_in_use(keys: tuple[SigningKey, ...], *, now: datetime, activation_seconds: int) -> SigningKey:
    """The newest key made at least `activation_seconds` ago, so every node holds it before it signs (the
    newest key when none is that old: a new installation)."""
    ready_since = now - timedelta(seconds=activation_seconds)
    ready = [key for key in keys if key.created_at is None or key.created_at <= ready_since]
    return ready[-1] if ready else keys[-1]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _decode_key(name: str, value: object) -> bytes:
    try:
        raw = base64.b64decode(str(value), validate=True)
    except ValueError:
        raise KeyError_(f"key ring entry {name} is not base64") from None
    if len(raw) != 32:
        raise KeyError_(f"key ring entry {name} must be 32 bytes")
    return raw


def load_keyring(keys_dir: str | Path) -> Keyring:
    """Read and check keyring.json."""
    path = Path(keys_dir) / KEYRING_FILE
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise KeyError_(f"key ring missing ({KEYRING_FILE} in keys_dir)") from None
    except (OSError, ValueError):
        raise KeyError_(f"key ring unreadable ({KEYRING_FILE} in keys_dir)") from None
    try:
        data_keys = {int(k): _decode_key(f"data_keys.{k}", v) for k, v in doc["data_keys"].items()}
        ring = Keyring(
            development=bool(doc.get("development", False)),
            data_keys=data_keys,
            audit_key=_decode_key("audit_key", doc["audit_key"]),
            blind_index_key=_decode_key("blind_index_key", doc["blind_index_key"]),
        )
    except (KeyError, TypeError, AttributeError, ValueError):
        raise KeyError_("key ring malformed: needs data_keys, audit_key and blind_index_key") from None
    if not data_keys:
        raise KeyError_("key ring holds no data key")
    return ring


def load_signing_keys(keys_dir: str | Path) -> list[SigningKey]:
    """Read every signing key, oldest first; the last one signs new tokens."""
    folder = Path(keys_dir) / SIGNING_DIR
    paths = sorted(folder.glob("*.pem")) if folder.is_dir() else []
    if not paths:
        raise KeyError_("token-signing key missing (signing/*.pem in keys_dir)")
    keys = []
    for path in paths:
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (OSError, ValueError, TypeError):
            raise KeyError_(f"token-signing key {path.name} unreadable") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise KeyError_(f"token-signing key {path.name} is not an EC P-256 key")
        keys.append(SigningKey(kid=path.stem, private_key=key))
    return sorted(keys, key=lambda k: k.created)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def create_keyring(keys_dir: str | Path, *, development: bool) -> bool:
    """Create keyring.json if missing; return whether it was created."""
    folder = Path(keys_dir)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / KEYRING_FILE
    if path.exists():
        return False
    new = lambda: base64.b64encode(secrets.token_bytes(32)).decode()  # noqa: E731
    doc = {"development": development, "data_keys": {"1": new()}, "audit_key": new(), "blind_index_key": new()}
    _write_private(path, json.dumps(doc, indent=2).encode())
    return True


def add_signing_key(keys_dir: str | Path, *, development: bool) -> str:
    """Create a new EC P-256 signing key; it signs from now on. Return its kid."""
    folder = Path(keys_dir) / SIGNING_DIR
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    stamp = clock.utcnow().strftime(KID_TIME_FORMAT)
    kid = f"{DEV_PREFIX if development else ''}{stamp}-{secrets.token_hex(2)}"
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    _write_private(folder / f"{kid}.pem", pem)
    return kid


def ensure_keys(keys_dir: str | Path, *, development: bool) -> list[str]:
    """Create whatever key material is missing; return what was created."""
    created = []
    if create_keyring(keys_dir, development=development):
        created.append(KEYRING_FILE)
    folder = Path(keys_dir) / SIGNING_DIR
    if not (folder.is_dir() and any(folder.glob("*.pem"))):
        created.append(f"{SIGNING_DIR}/{add_signing_key(keys_dir, development=development)}.pem")
    return created


def retire_signing_key(keys_dir: str | Path, kid: str) -> None:
    """Remove a signing key: tokens it signed stop verifying. The newest key cannot be retired."""
    keys = load_signing_keys(keys_dir)
    if kid not in {k.kid for k in keys}:
        raise KeyError_(f"no signing key {kid}")
    if keys[-1].kid == kid:
        raise KeyError_("the current signing key cannot be retired; add a new one first")
    (Path(keys_dir) / SIGNING_DIR / f"{kid}.pem").unlink()


def add_data_key(keys_dir: str | Path) -> int:
    """Add a data key to the ring (written atomically); new writes use it. Return its id."""
    path = Path(keys_dir) / KEYRING_FILE
    doc = json.loads(path.read_text())
    new_id = max(int(k) for k in doc["data_keys"]) + 1
    doc["data_keys"][str(new_id)] = base64.b64encode(secrets.token_bytes(32)).decode()
    temporary = path.with_suffix(".tmp")
    temporary.unlink(missing_ok=True)  # left by an interrupted earlier run
    _write_private(temporary, json.dumps(doc, indent=2).encode())
    os.replace(temporary, path)
    return new_id


def _stat_stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()  # follows symlinks: a secret store that swaps a linked folder changes the inode
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def files_stamp(keys_dir: str | Path) -> tuple:
    """What changes when the key files do: the ring file's inode, time and size, and the signing keys' names.

    File times can be coarser than two quick writes, so the signing keys are listed too (one directory read)."""
    folder = Path(keys_dir)
    signing = folder / SIGNING_DIR
    try:
        names = tuple(sorted(os.listdir(signing)))
    except OSError:
        names = ()
    return _stat_stamp(folder / KEYRING_FILE), _stat_stamp(signing), names


class LiveKeys:
    """The key directory as this process holds it, following the directory without a restart.

    It is reread when its files change (checked by `refresh_if_changed`, a few stat calls, once per request)
    and when a token or a stored value names a key not held here (`reload_for_unknown_key`, at most once per
    `min_interval` seconds, so a flood of made-up key ids costs no more than one reread a second). A reread
    that fails (a half-copied file) keeps the keys held and is logged."""

    def __init__(self, keys_dir: str | Path, *, min_interval: float = RELOAD_INTERVAL_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.keys_dir = Path(keys_dir)
        self.min_interval = min_interval
        self.clock = clock
        self.reloads = 0  # rereads since start (tests and operators see the rate limit hold)
        self._lock = threading.Lock()
        self._last_forced: float | None = None
        self._stamp = files_stamp(self.keys_dir)
        self._held = (load_keyring(self.keys_dir), tuple(load_signing_keys(self.keys_dir)))

    @property
    def ring(self) -> Keyring:
        return self._held[0]

    @property
    def signing_keys(self) -> tuple[SigningKey, ...]:
        return self._held[1]

    def refresh_if_changed(self) -> bool:
        """Reread the keys if their files changed since the last read; return whether they were reread."""
        stamp = files_stamp(self.keys_dir)
        if stamp == self._stamp:
            return False
        with self._lock:
            return stamp != self._stamp and self._reload(stamp)

    def reload_for_unknown_key(self) -> bool:
        """Reread the keys for a key id not held here, unless that was done less than min_interval ago."""
        with self._lock:
            now = self.clock()
            if self._last_forced is not None and now - self._last_forced < self.min_interval:
                return False
            self._last_forced = now
            return self._reload(files_stamp(self.keys_dir))

    def _reload(self, stamp: tuple) -> bool:
        self._stamp = stamp  # also after a failure: the next change of the files is tried again
        try:
            held = (load_keyring(self.keys_dir), tuple(load_signing_keys(self.keys_dir)))
        except KeyError_ as exc:
            log.error("key ring not reread, the keys held stay in use: %s", exc)
            return False
        self._held = held
        self.reloads += 1
        log.info("key ring reread: data keys %s (current %s), signing keys %s", sorted(held[0].data_keys),
                 held[0].current_data_key_id, [k.kid for k in held[1]])
        return True
