"""Exports of the captured data for statisticians and registries (FHIR R4 so far)."""
