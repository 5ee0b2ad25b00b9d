"""What the FHIR surface offers, for GET /fhir/metadata: an R4 CapabilityStatement (built with the R4B models).

It names the Bulk Data export operations (system and Patient level; the server instantiates the Bulk Data
IG's CapabilityStatement), Patient/$everything, and SMART Backend Services security with its token URL in
the `oauth-uris` extension (clients discover the same from /fhir/.well-known/smart-configuration).
Pure: depends only on the base URL it is given, so the same server always describes itself the same way.
"""

from __future__ import annotations

from typing import Any

from fhir.resources.R4B.capabilitystatement import CapabilityStatement

from edc.exports.fhir import to_json

# When this description last changed (CapabilityStatement.date): bump it with the capabilities.
CAPABILITY_DATE = "2026-11-27"
BULK_DATA = "http://hl7.org/fhir/uv/bulkdata"
OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
SECURITY_SERVICE = "http://terminology.hl7.org/CodeSystem/restful-security-service"


def capability_statement(base_url: str) -> dict[str, Any]:
    """The server's CapabilityStatement as R4 JSON; `base_url` is the FHIR base (…/fhir)."""
    base = base_url.rstrip("/")
    statement = CapabilityStatement(
        id="edc",
        name="EdcFhirExport",
        title="edc: pseudonymised FHIR R4 export of the study's casebooks",
        status="active",
        experimental=False,
        date=CAPABILITY_DATE,
        kind="instance",
        instantiates=[f"{BULK_DATA}/CapabilityStatement/bulk-data"],
        software={"name": "edc"},
        implementation={"description": "edc FHIR R4 export (read-only, pseudonymised)", "url": base},
        fhirVersion="4.0.1",
        format=["json", "application/fhir+json", "application/fhir+ndjson"],
        rest=[{
            "mode": "server",
            "documentation": "Read-only and pseudonymised. Registries authenticate with SMART Backend Services "
                             "(client credentials with a signed JWT assertion) and pull NDJSON with Bulk Data $export.",
            "security": {
                "extension": [{"url": OAUTH_URIS, "extension": [{"url": "token", "valueUri": f"{base}/auth/token"}]}],
                "service": [{"coding": [{"system": SECURITY_SERVICE, "code": "SMART-on-FHIR"}],
                             "text": "SMART Backend Services (OAuth 2.0 client credentials, private_key_jwt)"}],
                "description": "Bearer access tokens from the token URL; system/*.read (or per type) scopes.",
            },
            "resource": [{
                "type": "Patient",
                "operation": [
                    {"name": "export", "definition": f"{BULK_DATA}/OperationDefinition/patient-export"},
                    {"name": "everything", "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"},
                ],
            }],
            "operation": [{"name": "export", "definition": f"{BULK_DATA}/OperationDefinition/export"}],
        }],
    )
    return to_json(statement)
