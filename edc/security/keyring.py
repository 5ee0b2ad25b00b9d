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
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from edc import clock

KEYRING_FILE = "keyring.json"
SIGNING_DIR = "signing"
DEV_PREFIX = "dev-"


class KeyError_(RuntimeError):
    """Key material is missing, unreadable or malformed (the message never holds key bytes)."""


@dataclass(frozen=True)
class Keyring:
    development: bool
    data_keys: dict[int, bytes]
    audit_key: bytes
    blind_index_key: bytes

    @property
    def current_data_key_id(self) -> int:
        return max(self.data_keys)


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
    stamp = clock.utcnow().strftime("%Y%m%dT%H%M%S%fZ")
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
