"""Response, B cells, relapse, post-CAR-T HSCT, disposition, deviations and long-term follow-up (trial.md §5,
§8.2 RESP, BCA/KIN, RELAPSE, HSCT-POST, DS, DV, LTFU, §8.3 X10, X12), through the HTTP API.

Every derivation and check of forms resp, bca, relapse, hsct_post, ds, dv and ltfu: the good path, the bad path
(422 with its JSON pointer, nothing saved) and, for warnings, the automatic query opened and answered when the
data are corrected. Dates: consent on 2024-01-10, Day 0 (first fraction) on 2024-03-01, the clock on 2026-11-20."""

from __future__ import annotations

from typing import Any

import pytest

from conftest import count_rows, problem

DAY0 = "2024-03-01T10:00:00+01:00"

# A complete remission at Day 28: marrow 1 % blasts, flow MRD undetectable at 10^-4, CNS1, counts recovered.
CR: dict[str, Any] = {
    "RSDAT": "2024-03-29", "BMDONE": "Y", "BMDAT": "2024-03-28", "BMBLAST": 1.0, "BMMRDMETH": "MFC",
    "BMMRDLOD": 0.0001, "BMMRDCELLS": 500000, "BMMRDUND": "Y", "PBBLAST": "N", "ANC": 1500, "PLT": 150000,
    "TRANSF": "N", "CD19BLAST": "NO_BLASTS", "CNSSIGN": "N", "CSFDONE": "Y", "LPDAT": "2024-03-28", "CSFWBC": 2.0,
    "CSFRBC": 0.0, "CSFBLAST": "N", "EMD": "N", "EMDMETH": ["EXAM"], "RSORRES": "CR",
}
BCELLS = {"LBDAT": "2024-03-08", "CD19ABS": 2.0, "CD19PCT": 0.5}
RELAPSE = {"RELDAT": "2024-09-02", "RELSITE": ["BM"], "RELBMBL": 45.0, "RELCD19": "NEG", "RELTX": ["INO", "HSCT"]}
HSCT = {"PRSTDAT": "2024-06-10", "HSCTDON": "MUD", "HSCTCOND": "MAC", "HSCTTBI": "Y", "BMMRDMETH": "NGS",
        "MRDDAT": "2024-05-20", "BMMRDLOD": 0.000001, "BMMRDUND": "Y"}
DV = {"DVDAT": "2024-04-02", "DVCAT": "VISIT_WINDOW", "DVTERM": "Day 28 marrow taken outside the window",
      "DVSEV": "MINOR", "DVACN": "Site retrained on the visit windows", "DVECREP": "N"}
LTFU = {"LTFUDAT": "2026-03-02", "LTFUMETH": "VISIT", "SSORRES": "ALIVE", "NEWMAL": "N", "NEWNEURO": "N",
        "NEWAUTO": "N", "NEWHEM": "N", "SERINF": "N", "PREGOCC": {"missing": "NA"}, "RCLRES": "NEG",
        "CARPERS": "NOT_DETECTED", "HEIGHT": 131.5, "WEIGHT": 29.0, "TANNER": "1"}
EMAIL_OR_NUMBER = ["call mother at jane.doe@example.org", "hospital record 12345678"]


# ---------------------------------------------------------------- helpers


@pytest.fixture
def subject(trial) -> str:
    """A subject consented on 2024-01-10 whose first ARI-0001 fraction (Day 0) was given on 2024-03-01."""
    number = trial.enrol(consent_date="2024-01-10")
    infuse(trial, number)
    return number


def infuse(trial, number: str, given: str = "Y", fraction: int = 1, event: str = "INF1") -> dict[str, Any]:
    """A draft fraction record (the INF1 entry sets Day 0); only the items the checks under test read."""
    return trial.saved(number, "inf", {"EXFRACT": fraction, "EXOCCUR": given, "EXSTDTC": DAY0}, event=event, complete=False)


def death_form(trial, number: str) -> dict[str, Any]:
    """A death form entry (a draft: the checks here only ask whether one exists)."""
    return trial.saved(number, "dd", {}, event="DTH", complete=False)


def rows(session) -> tuple[int, int, int]:
    return count_rows(session, "entries"), count_rows(session, "queries"), count_rows(session, "audit_records")


def refused(trial, session, number: str, form: str, data: dict[str, Any], pointer: str, **kwargs) -> None:
    """The save is refused with 422, an error at `pointer`, and nothing is stored."""
    before = rows(session)
    errors = problem(trial.save(number, form, data, **kwargs), 422)["errors"]
    assert pointer in {error["pointer"] for error in errors}, errors
    assert rows(session) == before


def checks_of(body: dict[str, Any]) -> set[str]:
    return {warning["check"] for warning in body["warnings"]}


def states(trial, number: str, check: str) -> list[str]:
    return [query["state"] for query in trial.queries(number) if query["check"] == check]


# ---------------------------------------------------------------- resp: MRD, CNS status and response (§5, X10)


def test_complete_remission_is_derived_and_agrees_with_the_investigator(trial, subject):
    body = trial.saved(subject, "resp", CR, event="D28")
    assert body["data"]["MRDNEG"] == "Y" and body["data"]["CNSSTAT"] == "CNS1" and body["data"]["RSDRV"] == "CR"
    assert body["warnings"] == [] and not [query for query in trial.open_queries(subject) if query["form"] == "resp"]


@pytest.mark.parametrize("changes, derived", [
    ({"PLT": 50000}, "CRi"),                                           # counts below the thresholds
    ({"ANC": 800}, "CRi"),
    ({"TRANSF": "Y"}, "CRi"),                                          # not transfusion independent
    ({"BMBLAST": 5.0, "CD19BLAST": "POS"}, "NOT_CR"),                 # blasts at the 5 % threshold
    ({"PBBLAST": "Y", "CD19BLAST": "POS"}, "NOT_CR"),
    ({"EMD": "Y", "EMDMETH": ["MRI", "BIOPSY"]}, "NOT_CR"),
    ({"CNSSIGN": "Y"}, "NOT_CR"),                                      # clinical CNS leukaemia: CNS3
    ({"BMDONE": "N", "BMDAT": None, "BMBLAST": None, "BMMRDMETH": None, "BMMRDLOD": None, "BMMRDCELLS": None,
      "BMMRDUND": None}, None),                                         # X10: no marrow, no CR
    ({"CSFDONE": "N", "LPDAT": None, "CSFWBC": None, "CSFRBC": None, "CSFBLAST": None}, None),   # X10: no CSF
    ({"ANC": {"missing": "ND"}}, None),                                # X10: no counts
])
def test_derived_response(trial, subject, changes, derived):
    data = {key: value for key, value in {**CR, **changes}.items() if value is not None}
    data["RSORRES"] = {"CR": "CR", "CRi": "CRi", "NOT_CR": "NR", None: "NE"}[derived]
    body = trial.saved(subject, "resp", data, event="D28")
    assert body["data"].get("RSDRV") == derived
    assert "RESP_INV_VS_DERIVED" not in checks_of(body)


@pytest.mark.parametrize("changes, mrdneg", [
    ({}, "Y"),                                                          # undetectable with a 10^-4 assay
    ({"BMMRDMETH": "NGS", "BMMRDLOD": 0.000001}, "Y"),                  # NGS at 10^-6
    ({"BMMRDLOD": 0.001}, None),                                        # undetectable, but the assay only reaches 10^-3
    ({"BMMRDUND": "N", "BMMRDVAL": 0.05, "CD19BLAST": "POS"}, "N"),    # detected
])
def test_mrd_negative_is_derived_against_the_assay_sensitivity(trial, subject, changes, mrdneg):
    body = trial.saved(subject, "resp", {**CR, **changes}, event="D28")
    assert body["data"].get("MRDNEG") == mrdneg
    assert body["data"]["RSDRV"] == "CR"                               # MRD does not change the morphological response


def test_mrd_level_is_asked_only_when_detected_and_undetectable_needs_the_sensitivity(trial, subject, session):
    refused(trial, session, subject, "resp", {**CR, "BMMRDVAL": 0.0}, "/data/BMMRDVAL", event="D28")
    refused(trial, session, subject, "resp", {**CR, "BMMRDUND": "N", "CD19BLAST": "POS"}, "/data/BMMRDVAL", event="D28")
    refused(trial, session, subject, "resp", {k: v for k, v in CR.items() if k != "BMMRDLOD"}, "/data/BMMRDLOD",
            event="D28")
    refused(trial, session, subject, "resp", {**CR, "BMMRDLOD": 0.0}, "/data/BMMRDLOD", event="D28")


@pytest.mark.parametrize("csf, pb, status", [
    ({"CSFBLAST": "N", "CSFWBC": 40.0}, {}, "CNS1"),                   # no blasts, whatever the white cells
    ({"CSFBLAST": "Y", "CSFWBC": 3.0}, {}, "CNS2"),
    ({"CSFBLAST": "Y", "CSFWBC": 50.0, "CSFRBC": 5.0}, {}, "CNS3"),   # clean tap (RBC below the traumatic threshold)
    # Traumatic taps, Steinherz-Bleyer: CSF WBC/RBC = 50/5000 = 0.01 against 2 x blood WBC/RBC.
    ({"CSFBLAST": "Y", "CSFWBC": 50.0, "CSFRBC": 5000.0}, {"PBWBC": 10.0, "PBRBC": 4.0}, "CNS3"),   # 2 x 0.0025
    ({"CSFBLAST": "Y", "CSFWBC": 50.0, "CSFRBC": 5000.0}, {"PBWBC": 30.0, "PBRBC": 4.0}, "CNS2"),   # 2 x 0.0075
    ({"CSFBLAST": "Y", "CSFWBC": 50.0, "CSFRBC": 5000.0}, {"PBWBC": {"missing": "ND"}, "PBRBC": 4.0}, None),
])
def test_cns_status_with_the_traumatic_tap_rule(trial, subject, csf, pb, status):
    data = {**CR, **csf, **pb, "CD19BLAST": "POS" if csf["CSFBLAST"] == "Y" else "NO_BLASTS", "RSORRES": "NR"}
    body = trial.saved(subject, "resp", data, event="D28")
    assert body["data"].get("CNSSTAT") == status
    assert body["data"].get("RSDRV") == (None if status is None else "CR" if status == "CNS1" else "NOT_CR")


def test_blood_counts_are_asked_only_after_a_traumatic_tap(trial, subject, session):
    traumatic = {**CR, "CSFRBC": 10.0}                                 # at params.traumatic_tap_rbc_per_ul
    refused(trial, session, subject, "resp", traumatic, "/data/PBWBC", event="D28")
    refused(trial, session, subject, "resp", {**CR, "CSFRBC": 9.0, "PBWBC": 5.0, "PBRBC": 4.0}, "/data/PBWBC",
            event="D28")
    assert trial.saved(subject, "resp", {**traumatic, "PBWBC": 5.0, "PBRBC": 4.0}, event="D28")["data"]["CNSSTAT"] == "CNS1"


@pytest.mark.parametrize("changes, pointer", [
    ({"BMBLAST": 100.5}, "/data/BMBLAST"),
    ({"RSDRV": "CR"}, "/data/RSDRV"),                                  # derived items are computed by the server
    ({"MRDNEG": "Y"}, "/data/MRDNEG"),
    ({"CNSSTAT": "CNS1"}, "/data/CNSSTAT"),
    ({"PLT": -1}, "/data/PLT"),
    ({"RSDAT": "2026-11-21"}, "/data/RSDAT"),                          # in the future
])
def test_impossible_response_values_are_refused(trial, subject, session, changes, pointer):
    refused(trial, session, subject, "resp", {**CR, **changes}, pointer, event="D28")


def test_screening_assessment_has_no_response_to_compare(trial, subject):
    baseline = {**CR, "RSDAT": "2024-01-15", "BMDAT": "2024-01-15", "LPDAT": "2024-01-16", "BMBLAST": 85.0,
                "BMMRDUND": "N", "BMMRDVAL": 80.0, "PBBLAST": "Y", "ANC": 300, "PLT": 20000, "TRANSF": "Y",
                "CD19BLAST": "POS", "RSORRES": {"missing": "NA"}}
    body = trial.saved(subject, "resp", baseline, event="SCR")
    assert body["data"]["RSDRV"] == "NOT_CR" and body["data"]["MRDNEG"] == "N" and body["warnings"] == []


def test_investigator_response_differing_from_the_derived_one_opens_a_query(trial, subject):
    body = trial.saved(subject, "resp", {**CR, "RSORRES": "NR"}, event="D28")
    assert checks_of(body) == {"RESP_INV_VS_DERIVED"}
    [query] = trial.open_queries(subject, "RESP_INV_VS_DERIVED")
    assert query["item"] == "RSORRES" and query["form"] == "resp" and query["kind"] == "check"
    assert trial.update(body["id"], {**CR, "RSORRES": "CR"}).status_code == 200
    assert states(trial, subject, "RESP_INV_VS_DERIVED") == ["answered"]


@pytest.mark.parametrize("changes, investigator, query", [
    ({"PLT": 50000}, "MLFS", False),                                   # MLFS is compatible with a derived CRi
    ({"PLT": 50000}, "CR", True),                                      # counts not recovered: not CR
    ({}, "CRi", True),
    ({"BMBLAST": 30.0, "CD19BLAST": "POS"}, "RELAPSE", False),
    ({"BMBLAST": 30.0, "CD19BLAST": "POS"}, "CRi", True),
])
def test_investigator_response_against_the_derived_response(trial, subject, changes, investigator, query):
    body = trial.saved(subject, "resp", {**CR, **changes, "RSORRES": investigator}, event="D28")
    assert ("RESP_INV_VS_DERIVED" in checks_of(body)) is query


@pytest.mark.parametrize("check, item, sample_date", [("RESP_BM_WINDOW", "BMDAT", "2024-03-21"),
                                                       ("RESP_LP_WINDOW", "LPDAT", "2024-04-06")])
def test_marrow_and_csf_must_be_inside_the_assessment_window(trial, subject, check, item, sample_date):
    body = trial.saved(subject, "resp", {**CR, item: sample_date}, event="D28")   # 8 days from RSDAT
    assert checks_of(body) == {check}
    [query] = trial.open_queries(subject, check)
    assert query["item"] == item
    inside = "2024-03-22" if item == "BMDAT" else "2024-04-05"                    # 7 days: params.response_sample_window_days
    assert trial.update(body["id"], {**CR, item: inside}).status_code == 200
    assert states(trial, subject, check) == ["answered"]


@pytest.mark.parametrize("changes", [
    {"PBBLAST": "Y"},                                                  # CD19_NA_PB_BLASTS
    {"CSFBLAST": "Y"},                                                 # CD19_NA_CSF_BLASTS
    {"BMMRDUND": "N", "BMMRDVAL": 0.02},                               # CD19_NA_MRD_DETECTED
])
def test_cd19_cannot_be_no_blasts_when_blasts_are_recorded(trial, subject, session, changes):
    refused(trial, session, subject, "resp", {**CR, **changes, "RSORRES": "NR"}, "/data/CD19BLAST", event="D28")
    assert trial.save(subject, "resp", {**CR, **changes, "RSORRES": "NR", "CD19BLAST": "DIM"}, event="D28").status_code == 201


def test_cd19_no_blasts_with_marrow_blasts_at_the_threshold_opens_a_query(trial, subject):
    body = trial.saved(subject, "resp", {**CR, "BMBLAST": 5.0, "RSORRES": "NR"}, event="D28")
    assert checks_of(body) == {"CD19_NA_BM_BLASTS"}
    assert trial.open_queries(subject, "CD19_NA_BM_BLASTS")[0]["item"] == "CD19BLAST"
    assert trial.update(body["id"], {**CR, "BMBLAST": 5.0, "RSORRES": "NR", "CD19BLAST": "NEG"}).status_code == 200
    assert states(trial, subject, "CD19_NA_BM_BLASTS") == ["answered"]


# ---------------------------------------------------------------- bca: B-cell aplasia, confirmed loss, kinetics (§5)


@pytest.mark.parametrize("cd19abs, cd19pct, aplasia", [
    (2.0, 0.5, "Y"),
    (49.9, 9.9, "Y"),
    (50.0, 2.0, "N"),                                                   # params.bca_abs_threshold reached
    (20.0, 10.0, "N"),                                                  # params.bca_pct_threshold reached
])
def test_b_cell_aplasia_is_derived_from_both_thresholds(trial, subject, cd19abs, cd19pct, aplasia):
    data = {"LBDAT": "2024-01-15", "CD19ABS": cd19abs, "CD19PCT": cd19pct}
    assert trial.saved(subject, "bca", data, event="SCR")["data"]["BCA"] == aplasia


def test_baseline_sample_asks_no_repeat_and_derives_no_loss(trial, subject, session):
    baseline = {"LBDAT": "2024-01-15", "CD19ABS": 300.0, "CD19PCT": 25.0}
    refused(trial, session, subject, "bca", {**baseline, "RPTDAT": "2024-01-20", "RPTABS": 300.0, "RPTPCT": 25.0},
            "/data/RPTABS", event="SCR")
    body = trial.saved(subject, "bca", baseline, event="SCR")
    assert body["data"]["BCA"] == "N" and "BCALOSS" not in body["data"]


def test_recovery_after_day0_needs_the_confirming_repeat(trial, subject, session):
    recovered = {"LBDAT": "2024-06-08", "CD19ABS": 80.0, "CD19PCT": 6.0}
    refused(trial, session, subject, "bca", recovered, "/data/RPTDAT", event="M3")
    draft = trial.saved(subject, "bca", recovered, event="M3", complete=False)
    assert draft["data"]["BCA"] == "N" and "BCALOSS" not in draft["data"]          # awaited
    aplasia = trial.saved(subject, "bca", {**BCELLS, "LBDAT": "2024-03-08"}, event="D7")
    assert aplasia["data"]["BCALOSS"] == "N" and "RPTDAT" not in aplasia["data"]  # no repeat asked in aplasia


@pytest.mark.parametrize("repeat_abs, repeat_pct, loss", [(120.0, 9.0, "Y"), (10.0, 12.0, "Y"), (10.0, 3.0, "N")])
def test_confirmed_loss_of_b_cell_aplasia(trial, subject, repeat_abs, repeat_pct, loss):
    trial.saved(subject, "bca", BCELLS, event="D7")
    data = {"LBDAT": "2024-06-08", "CD19ABS": 80.0, "CD19PCT": 6.0, "RPTDAT": "2024-06-15", "RPTABS": repeat_abs,
            "RPTPCT": repeat_pct}
    body = trial.saved(subject, "bca", data, event="M3")
    assert body["data"]["BCALOSS"] == loss and body["warnings"] == []


def test_repeat_sample_before_the_first_is_refused(trial, subject, session):
    data = {"LBDAT": "2024-06-08", "CD19ABS": 80.0, "CD19PCT": 6.0, "RPTDAT": "2024-06-08", "RPTABS": 90.0,
            "RPTPCT": 7.0}
    refused(trial, session, subject, "bca", data, "/data/RPTDAT", event="M3")


def test_loss_without_an_earlier_aplasia_sample_opens_a_query_until_one_is_entered(trial, subject):
    loss = {"LBDAT": "2024-06-08", "CD19ABS": 80.0, "CD19PCT": 6.0, "RPTDAT": "2024-06-15", "RPTABS": 90.0,
            "RPTPCT": 7.0}
    trial.saved(subject, "bca", {"LBDAT": "2024-01-15", "CD19ABS": 1.0, "CD19PCT": 0.1}, event="SCR")  # baseline only
    body = trial.saved(subject, "bca", loss, event="M3")
    assert body["data"]["BCALOSS"] == "Y" and checks_of(body) == {"BCALOSS_WITHOUT_PRIOR_APLASIA"}
    [query] = trial.open_queries(subject, "BCALOSS_WITHOUT_PRIOR_APLASIA")
    assert query["item"] == "BCALOSS" and query["kind"] == "cross_form"
    trial.saved(subject, "bca", BCELLS, event="D7")                     # aplasia at Day 7: the loss is plausible
    assert states(trial, subject, "BCALOSS_WITHOUT_PRIOR_APLASIA") == ["answered"]


def test_car_transgene_per_specimen_with_lod_and_loq(trial, subject):
    data = {**BCELLS, "LBDAT": "2024-03-29", "CARFLOW": 12.5, "CARFLOWPCT": 3.1, "CARPCR": [
        {"CARSPEC": "PB", "CARLOD": 5.0, "CARLOQ": 25.0, "CARRES": "QUANT", "CARQPCR": 15400.0},
        {"CARSPEC": "BM", "CARLOD": 5.0, "CARLOQ": 25.0, "CARRES": "BLQ"},
        {"CARSPEC": "CSF", "CARLOD": 5.0, "CARLOQ": 25.0, "CARRES": "NOTDET"}]}
    body = trial.saved(subject, "bca", data, event="D28")
    assert [row["CARRES"] for row in body["data"]["CARPCR"]] == ["QUANT", "BLQ", "NOTDET"]
    assert body["warnings"] == []


@pytest.mark.parametrize("rows_, pointer", [
    ([{"CARSPEC": "PB", "CARLOD": 30.0, "CARLOQ": 25.0, "CARRES": "BLQ"}], "/data/CARPCR/0/CARLOD"),       # LoD > LoQ
    ([{"CARSPEC": "PB", "CARLOD": 5.0, "CARLOQ": 25.0, "CARRES": "QUANT", "CARQPCR": 20.0}],
     "/data/CARPCR/0/CARQPCR"),                                                                           # below LoQ
    ([{"CARSPEC": "PB", "CARLOD": 5.0, "CARLOQ": 25.0, "CARRES": "QUANT"}], "/data/CARPCR/0/CARQPCR"),     # no value
    ([{"CARSPEC": "PB", "CARLOD": 5.0, "CARLOQ": 25.0, "CARRES": "BLQ", "CARQPCR": 20.0}],
     "/data/CARPCR/0/CARQPCR"),                                                                           # <LoQ: no value
    ([{"CARSPEC": "PB", "CARLOD": 5.0, "CARLOQ": 25.0, "CARRES": "BLQ"},
      {"CARSPEC": "PB", "CARLOD": 5.0, "CARLOQ": 25.0, "CARRES": "NOTDET"}], "/data/CARPCR"),             # twice PB
])
def test_impossible_car_transgene_rows_are_refused(trial, subject, session, rows_, pointer):
    refused(trial, session, subject, "bca", {**BCELLS, "CARPCR": rows_}, pointer, event="D7")


# ---------------------------------------------------------------- relapse


def test_relapse_after_day0(trial, subject):
    body = trial.saved(subject, "relapse", RELAPSE, event="REL")
    assert body["warnings"] == [] and body["data"]["RELSITE"] == ["BM"]


def test_relapse_before_day0_opens_a_query_answered_when_corrected(trial, subject):
    body = trial.saved(subject, "relapse", {**RELAPSE, "RELDAT": "2024-02-20"}, event="REL")
    assert checks_of(body) == {"REL_AFTER_DAY0"}
    [query] = trial.open_queries(subject, "REL_AFTER_DAY0")
    assert query["item"] == "RELDAT" and query["kind"] == "cross_form"
    assert trial.update(body["id"], RELAPSE).status_code == 200
    assert states(trial, subject, "REL_AFTER_DAY0") == ["answered"]


def test_marrow_relapse_with_few_blasts_opens_a_query(trial, subject):
    body = trial.saved(subject, "relapse", {**RELAPSE, "RELBMBL": 3.0}, event="REL")
    assert checks_of(body) == {"REL_BM_BLASTS"}
    assert trial.update(body["id"], {**RELAPSE, "RELSITE": ["CNS"], "RELBMBL": 3.0}).status_code == 200
    assert states(trial, subject, "REL_BM_BLASTS") == ["answered"]


def test_extramedullary_relapse_needs_its_site(trial, subject, session):
    emd = {**RELAPSE, "RELSITE": ["EMD"], "RELBMBL": {"missing": "ND"}, "RELCD19": "LINEAGE_SWITCH"}
    refused(trial, session, subject, "relapse", emd, "/data/RELEMDLOC", event="REL")
    refused(trial, session, subject, "relapse", {**RELAPSE, "RELEMDLOC": ["TESTIS"]}, "/data/RELEMDLOC", event="REL")
    assert trial.saved(subject, "relapse", {**emd, "RELEMDLOC": ["TESTIS"]}, event="REL")["warnings"] == []


def test_no_therapy_cannot_be_combined_with_a_therapy(trial, subject, session):
    refused(trial, session, subject, "relapse", {**RELAPSE, "RELTX": ["NONE", "CHEMO"]}, "/data/RELTX", event="REL")
    assert trial.save(subject, "relapse", {**RELAPSE, "RELTX": ["NONE"]}, event="REL").status_code == 201


# ---------------------------------------------------------------- hsct_post


def test_consolidative_hsct_with_mrd_before_it(trial, subject):
    body = trial.saved(subject, "hsct_post", HSCT, event="HSCT")
    assert body["data"]["MRDNEG"] == "Y" and body["warnings"] == []


@pytest.mark.parametrize("changes, mrdneg", [
    ({"BMMRDMETH": "MFC", "BMMRDLOD": 0.001}, None),                   # not sensitive enough for "negative"
    ({"BMMRDUND": "N", "BMMRDVAL": 0.001}, "N"),
    ({"BMMRDMETH": {"missing": "ND"}, "MRDDAT": None, "BMMRDLOD": None, "BMMRDUND": None}, None),
])
def test_mrd_before_hsct(trial, subject, changes, mrdneg):
    data = {key: value for key, value in {**HSCT, **changes}.items() if value is not None}
    assert trial.saved(subject, "hsct_post", data, event="HSCT")["data"].get("MRDNEG") == mrdneg


def test_mrd_after_the_transplant_is_refused(trial, subject, session):
    refused(trial, session, subject, "hsct_post", {**HSCT, "MRDDAT": "2024-06-11"}, "/data/MRDDAT", event="HSCT")


def test_hsct_not_after_day0_opens_a_query(trial, subject):
    body = trial.saved(subject, "hsct_post", {**HSCT, "PRSTDAT": "2024-03-01", "MRDDAT": "2024-02-20"}, event="HSCT")
    assert checks_of(body) == {"HSCT_AFTER_DAY0"}
    assert trial.open_queries(subject, "HSCT_AFTER_DAY0")[0]["item"] == "PRSTDAT"
    assert trial.update(body["id"], HSCT).status_code == 200
    assert states(trial, subject, "HSCT_AFTER_DAY0") == ["answered"]


# ---------------------------------------------------------------- ds: disposition


@pytest.mark.parametrize("code", ["SCREEN FAILURE", "NOT INFUSED - MANUFACTURING FAILURE", "NOT INFUSED - CLINICAL"])
def test_not_infused_without_an_infusion(trial, code):
    number = trial.enrol(consent_date="2024-01-10")
    infuse(trial, number, given="N")                                     # a fraction recorded as not given
    body = trial.saved(number, "ds", {"DSDECOD": code, "DSSTDAT": "2024-03-05", "DSTERM": "Product out of specification"},
                       event="EOS")
    assert body["warnings"] == []


def test_not_infused_with_a_fraction_given_opens_a_critical_query(trial, subject):
    ds = {"DSDECOD": "NOT INFUSED - CLINICAL", "DSSTDAT": "2024-03-05", "DSTERM": "Progressive disease"}
    body = trial.saved(subject, "ds", ds, event="EOS")
    assert checks_of(body) == {"DS_NOT_INFUSED_BUT_INFUSED"}
    [query] = trial.open_queries(subject, "DS_NOT_INFUSED_BUT_INFUSED")
    assert query["critical"] is True and query["item"] == "DSDECOD"
    assert trial.update(body["id"], {**ds, "DSDECOD": "WITHDREW CONSENT"}).status_code == 200
    assert states(trial, subject, "DS_NOT_INFUSED_BUT_INFUSED") == ["answered"]


def test_death_disposition_needs_the_death_form(trial, subject):
    body = trial.saved(subject, "ds", {"DSDECOD": "DEATH", "DSSTDAT": "2024-09-30"}, event="EOS")
    assert checks_of(body) == {"DS_DEATH_NEEDS_DD"}
    [query] = trial.open_queries(subject, "DS_DEATH_NEEDS_DD")
    assert query["critical"] is True and query["kind"] == "cross_form"
    death_form(trial, subject)                                          # saving the death form answers the query
    assert states(trial, subject, "DS_DEATH_NEEDS_DD") == ["answered"]


def test_death_form_needs_the_death_disposition(trial, subject):
    death_form(trial, subject)
    body = trial.saved(subject, "ds", {"DSDECOD": "LOST TO FOLLOW-UP", "DSSTDAT": "2024-09-30",
                                       "DSTERM": "No contact since the family moved"}, event="EOS")
    assert checks_of(body) == {"DS_DEATH_NEEDS_DD"}


def test_completed_needs_the_month_24_assessment(trial, subject):
    trial.saved(subject, "ltfu", {**LTFU, "LTFUDAT": "2025-08-30"}, event="M18")       # Day 547
    body = trial.saved(subject, "ds", {"DSDECOD": "COMPLETED", "DSSTDAT": "2026-03-02"}, event="EOS")
    assert checks_of(body) == {"DS_COMPLETED_NEEDS_M24"}
    assert trial.open_queries(subject, "DS_COMPLETED_NEEDS_M24")[0]["item"] == "DSDECOD"
    trial.saved(subject, "ltfu", LTFU, event="M24")                     # Day 731: inside the M24 window
    assert states(trial, subject, "DS_COMPLETED_NEEDS_M24") == ["answered"]


def test_disposition_reason_is_asked_except_for_completion_and_death(trial, subject, session):
    refused(trial, session, subject, "ds", {"DSDECOD": "COMPLETED", "DSSTDAT": "2026-03-02", "DSTERM": "x"},
            "/data/DSTERM", event="EOS")
    refused(trial, session, subject, "ds", {"DSDECOD": "WITHDREW CONSENT", "DSSTDAT": "2024-05-02"}, "/data/DSTERM",
            event="EOS")
    refused(trial, session, subject, "ds", {"DSDECOD": "DEATH", "DSSTDAT": "2026-11-21"}, "/data/DSSTDAT", event="EOS")


@pytest.mark.parametrize("text", EMAIL_OR_NUMBER)
def test_disposition_reason_is_scanned_for_identifiers(trial, subject, text):
    ds = {"DSDECOD": "WITHDREW CONSENT", "DSSTDAT": "2024-05-02", "DSTERM": text}
    body = trial.saved(subject, "ds", ds, event="EOS")
    assert checks_of(body) == {"DS_NO_IDENTIFIERS"}
    assert trial.update(body["id"], {**ds, "DSTERM": "Family decision"}).status_code == 200
    assert states(trial, subject, "DS_NO_IDENTIFIERS") == ["answered"]


# ---------------------------------------------------------------- dv: protocol deviations


def test_deviations_are_a_subject_log(trial, subject):
    first = trial.saved(subject, "dv", DV)
    second = trial.saved(subject, "dv", {**DV, "DVCAT": "CONSENT", "DVSEV": "MAJOR", "DVECREP": "Y",
                                          "DVECDAT": "2024-04-10"})
    assert first["warnings"] == second["warnings"] == [] and first["id"] != second["id"]


def test_ethics_committee_report_date(trial, subject, session):
    refused(trial, session, subject, "dv", {**DV, "DVECREP": "Y"}, "/data/DVECDAT")
    refused(trial, session, subject, "dv", {**DV, "DVECREP": "Y", "DVECDAT": "2024-04-01"}, "/data/DVECDAT")
    refused(trial, session, subject, "dv", {**DV, "DVECDAT": "2024-04-03"}, "/data/DVECDAT")     # not reported: hidden
    refused(trial, session, subject, "dv", {**DV, "DVCAT": "LATE"}, "/data/DVCAT")


@pytest.mark.parametrize("item, check", [("DVTERM", "DVTERM_NO_IDENTIFIERS"), ("DVACN", "DVACN_NO_IDENTIFIERS")])
@pytest.mark.parametrize("text", EMAIL_OR_NUMBER)
def test_deviation_texts_are_scanned_for_identifiers(trial, subject, item, check, text):
    body = trial.saved(subject, "dv", {**DV, item: text})
    assert checks_of(body) == {check}
    assert trial.open_queries(subject, check)[0]["item"] == item
    assert trial.update(body["id"], DV).status_code == 200
    assert states(trial, subject, check) == ["answered"]


# ---------------------------------------------------------------- ltfu: long-term follow-up


def test_yearly_follow_up(trial, subject):
    body = trial.saved(subject, "ltfu", {**LTFU, "LTFUDAT": "2026-03-05", "LTFUMETH": "PHONE"}, event="Y03")
    assert body["warnings"] == [] and body["data"]["PREGOCC"] == {"missing": "NA"}


def test_new_malignancy_and_pregnancy_details(trial, subject, session):
    refused(trial, session, subject, "ltfu", {**LTFU, "NEWMAL": "Y"}, "/data/NEWMALCAT", event="M24")
    refused(trial, session, subject, "ltfu", {**LTFU, "PREGOCC": "Y"}, "/data/PREGOUT", event="M24")
    malignancy = {**LTFU, "NEWMAL": "Y", "NEWMALCAT": ["TCELL"], "NEWMALDAT": "2026-01", "NEWMALCAR": "PENDING",
                  "NEWDESC": "Peripheral T-cell lymphoma, work-up ongoing", "PREGOCC": "N"}
    assert trial.saved(subject, "ltfu", malignancy, event="M24")["warnings"] == []


def test_unknown_vital_status_needs_the_date_last_known_alive(trial, subject, session):
    unknown = {**LTFU, "SSORRES": "UNKNOWN", "LTFUMETH": "RECORDS"}
    refused(trial, session, subject, "ltfu", unknown, "/data/LKADAT", event="M24")
    refused(trial, session, subject, "ltfu", {**unknown, "LKADAT": "2026-03-03"}, "/data/LKADAT", event="M24")
    assert trial.save(subject, "ltfu", {**unknown, "LKADAT": "2025-11-20"}, event="M24").status_code == 201


def test_death_in_follow_up_needs_the_death_form(trial, subject):
    body = trial.saved(subject, "ltfu", {**LTFU, "SSORRES": "DEAD"}, event="M24")
    assert checks_of(body) == {"LTFU_DEATH_NEEDS_DD"}
    [query] = trial.open_queries(subject, "LTFU_DEATH_NEEDS_DD")
    assert query["critical"] is True and query["item"] == "SSORRES"
    death_form(trial, subject)
    assert states(trial, subject, "LTFU_DEATH_NEEDS_DD") == ["answered"]


@pytest.mark.parametrize("text", EMAIL_OR_NUMBER)
def test_follow_up_description_is_scanned_for_identifiers(trial, subject, text):
    body = trial.saved(subject, "ltfu", {**LTFU, "NEWDESC": text}, event="M24")
    assert checks_of(body) == {"NEWDESC_NO_IDENTIFIERS"}
    assert trial.update(body["id"], LTFU).status_code == 200
    assert states(trial, subject, "NEWDESC_NO_IDENTIFIERS") == ["answered"]


@pytest.mark.parametrize("changes, pointer", [({"HEIGHT": 250.0}, "/data/HEIGHT"), ({"TANNER": "6"}, "/data/TANNER"),
                                              ({"CARPERSVAL": 10.0}, "/data/CARPERSVAL")])
def test_impossible_follow_up_values_are_refused(trial, subject, session, changes, pointer):
    refused(trial, session, subject, "ltfu", {**LTFU, **changes}, pointer, event="M24")
