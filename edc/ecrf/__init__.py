"""The eCRF engine: load and check form definitions, validate entries, render FHIR Questionnaires.

A pure library: no Flask, no database. The service layer loads the study once at start-up
(`load_study` refuses invalid definitions) and calls `validate_entry` / `evaluate_warnings`.
"""

from .definitions import CheckDef, DefinitionError, EventDef, FormDef, GroupDef, ItemDef, SectionDef, Study
from .derivations import register_derivation, registered_derivations  # also registers the built-in derivations
from . import clinical as _clinical_derivations  # noqa: F401 - registers the trial's derivations
from . import labs as _lab_derivations  # noqa: F401 - registers the laboratory derivations (reference data)
from .expressions import age_in_months
from .loader import check_definitions, check_recorded_hashes, load_study, release
from .questionnaire import to_questionnaire
from .validation import ValidationContext, ValidationResult, evaluate_cross_form_warnings, evaluate_warnings, validate_entry

__all__ = [
    "CheckDef", "DefinitionError", "EventDef", "FormDef", "GroupDef", "ItemDef", "SectionDef", "Study",
    "ValidationContext", "ValidationResult", "age_in_months", "check_definitions", "check_recorded_hashes",
    "evaluate_cross_form_warnings", "evaluate_warnings", "load_study", "register_derivation", "registered_derivations", "release",
    "to_questionnaire", "validate_entry",
]
