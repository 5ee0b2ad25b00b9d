"""Keyed digests, blind indexes and AES-256-GCM field encryption over the key ring."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from typing import Any

import rfc8785
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from edc.security.keyring import Keyring

NONCE_BYTES = 12
BLIND_INDEX_BYTES = 16


class DecryptionError(RuntimeError):
    """A ciphertext does not belong where it was found, or its key is gone."""


def canonical_json(value: Any) -> bytes:
    """RFC 8785 canonical JSON, the byte form every digest and signature is taken over."""
    return rfc8785.dumps(value)


def value_digest(ring: Keyring, value: Any) -> str:
    """Keyed digest (HMAC-SHA256, audit key) of a plaintext value: stable across key rotation."""
    return hmac.new(ring.audit_key, canonical_json(value), hashlib.sha256).hexdigest()


def signature_digest(ring: Keyring, key_id: int, value: Any) -> str:
    """HMAC-SHA256 of a signed record's canonical JSON, under a MAC key derived (HKDF) from data key `key_id`.

    The key is named by its id and old data keys stay in the ring after rotation, so a signature made
    before a rotation still verifies; KeyError when the ring no longer holds that key.
    """
    mac_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"edc signature digest v1").derive(ring.data_keys[key_id])
    return hmac.new(mac_key, canonical_json(value), hashlib.sha256).hexdigest()


def blind_index(ring: Keyring, purpose: str, value: str) -> str:
    """Truncated HMAC of a normalised value, for duplicate detection without storing the value."""
    key = hmac.new(ring.blind_index_key, purpose.encode(), hashlib.sha256).digest()
    normalised = " ".join(value.split()).casefold().encode()
    return hmac.new(key, normalised, hashlib.sha256).hexdigest()[: BLIND_INDEX_BYTES * 2]


def _associated_data(table: str, record_id: str, field: str, key_id: int) -> bytes:
    return canonical_json([table, str(record_id), field, key_id])


def encrypt_value(ring: Keyring, value: Any, *, table: str, record_id: str, field: str) -> dict[str, Any]:
    """Encrypt a JSON value under the newest data key, bound to its table, row and field."""
    key_id = ring.current_data_key_id
    nonce = os.urandom(NONCE_BYTES)
    aad = _associated_data(table, record_id, field, key_id)
    ciphertext = AESGCM(ring.data_keys[key_id]).encrypt(nonce, canonical_json(value), aad)
    return {"kid": key_id, "ct": base64.b64encode(nonce + ciphertext).decode()}


def envelope_key_id(envelope: Any) -> Any:
    """The data key id an envelope names (None when it names none): which key a reader must hold."""
    return envelope.get("kid") if isinstance(envelope, dict) else None


def decrypt_value(ring: Keyring, envelope: dict[str, Any], *, table: str, record_id: str, field: str) -> Any:
    """Decrypt an envelope made by encrypt_value for exactly this table, row and field."""
    try:
        key_id = int(envelope["kid"])
        blob = base64.b64decode(envelope["ct"], validate=True)
        key = ring.data_keys[key_id]
        aad = _associated_data(table, record_id, field, key_id)
        plaintext = AESGCM(key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
    except (KeyError, TypeError, ValueError, InvalidTag):
        raise DecryptionError(f"{table}.{field} of {record_id} cannot be decrypted") from None
    return json.loads(plaintext)
