"""Typed SQLAlchemy models, one module per aggregate. Models never query, commit or touch Flask."""

from edc.models.audit import AuditChainHead, AuditRecord, AuditValue
from edc.models.auth import AuthSession, LoginThrottle, RefreshToken
from edc.models.entries import Entry, FormStatus, FormVersion, Query
from edc.models.exports import ExportJob
from edc.models.keys import DataKeyState
from edc.models.fhir_clients import FhirClient, FhirClientAssertion
from edc.models.idempotency import IdempotentRequest
from edc.models.monitoring import DataCut, DataCutEntry, OutboxMessage, QueryMessage, SdvMark, Signature, StudyLock
from edc.models.safety import SafetyClock
from edc.models.sites import Site
from edc.models.subjects import Subject, SubjectCounter, SubjectSummary
from edc.models.users import RoleAssignment, User

__all__ = [
    "AuditChainHead",
    "AuditRecord",
    "AuditValue",
    "DataCut",
    "DataCutEntry",
    "DataKeyState",
    "OutboxMessage",
    "QueryMessage",
    "SdvMark",
    "Signature",
    "StudyLock",
    "Entry",
    "ExportJob",
    "FhirClient",
    "FhirClientAssertion",
    "FormStatus",
    "FormVersion",
    "IdempotentRequest",
    "Query",
    "Subject",
    "SubjectCounter",
    "SubjectSummary",
    "AuthSession",
    "LoginThrottle",
    "RefreshToken",
    "RoleAssignment",
    "SafetyClock",
    "Site",
    "User",
]
