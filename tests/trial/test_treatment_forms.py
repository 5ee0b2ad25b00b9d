"""The treatment forms through the HTTP API: apheresis (aph), manufacturing and release (mfg), lymphodepletion (ld),
pre-infusion check (preinf), the ARI-0001 fractions (inf) and concomitant medications (cm).

trial.md §2.6, §7, §8.2 and §8.3 X1-X5. Every check and derivation is exercised: the good path, the bad path
(a 422 with its pointer and nothing saved, or a warning that saves and opens a query) and the query answered
when the data are corrected. The clock is fixed at 2026-11-20 09:00 UTC (tests/trial/conftest.py).

The reference subject: 20 kg, 115 cm (BSA 0.80 m²), planned infusion and Day 0 on 2026-11-16, fractions of
2, 6 and 12 ×10⁶ CAR+ cells (0.1, 0.3, 0.6 ×10⁶/kg) 24 h apart, lymphodepletion on 11-11..11-13.
"""

from __future__ import annotations

from conftest import count_rows, problem

COI = "ARI-000123"
OTHER_COI = "ARI-000999"
IDENTIFIERS = ["call 612345678", "mail jane.doe@example.org"]

APH = {"APHDAT": "2026-10-10", "PLANINFDAT": "2026-11-16", "WEIGHT": 20.5, "ALC": 1500, "CD3ABS": 1100,
       "APHVOL": 3.2, "COI": COI, "APHCOMP": "N", "APHREP": "N"}
MFG = {"COI": COI, "BATCHNO": "B-0042", "LVLOT": "LV-17", "VIAB": 92.5, "CARPCT": 35.0, "VCN": 1.8, "TOTCAR": 40.0,
       "STERIL": "PASS", "MYCO": "PASS", "ENDO": "PASS", "RCLREL": "PASS", "RELDAT": "2026-11-12"}
PREINF = {"PREDAT": "2026-11-15", "PRENOINF": "Y", "PRENOGVHD": "Y", "PREORGAN": "Y", "PRENODET": "Y", "PRENEURO": "Y",
          "PREELIG": "Y"}
LD_DATES = ["2026-11-11", "2026-11-12", "2026-11-13"]


def ld_rows(dates=LD_DATES, flu=24.0, cy=240.0):
    """One fludarabine and one cyclophosphamide row per day, at the expected doses for BSA 0.80 m²."""
    rows = []
    for day in dates:
        rows.append({"ECTRT": "FLUDARABINE", "ECSTDAT": day, "ECDOSE": flu, "ECDOSADJ": "N"})
        rows.append({"ECTRT": "CYCLOPHOSPHAMIDE", "ECSTDAT": day, "ECDOSE": cy, "ECDOSADJ": "N"})
    return rows


def ld(**changes):
    return {"WEIGHT": 20.0, "HEIGHT": 115.0, "EC": ld_rows(), **changes}


def fraction(number, start, cells, **changes):
    data = {"EXFRACT": number, "EXOCCUR": "Y", "EXSTDTC": start, "COI": COI, "EXWT": 20.0, "EXDOSE": cells,
            "PREMED": "N", "INFREAC": "N"}
    if number > 1:
        data["PRECRS"] = "N"
    return {**data, **changes}


F1 = fraction(1, "2026-11-16T10:00:00+01:00", 2.0)
F2 = fraction(2, "2026-11-17T10:30:00+01:00", 6.0)
F3 = fraction(3, "2026-11-18T11:00:00+01:00", 12.0)

CM = {"CMTRT": "Levetiracetam", "CMCAT": "ANTIEPILEPTIC", "CMINDC": "Seizure prophylaxis", "CMDOSE": 200.0,
      "CMDOSU": "mg", "CMROUTE": "ORAL", "CMSTDAT": "2026-11-15", "CMONGO": "Y"}


def toci(day, dose, unit="mg/kg", weight=20.0):
    return {"CMTRT": "Tocilizumab", "CMCAT": "CRS/ICANS THERAPY", "CMCRSAGT": "TOCILIZUMAB", "CMINDC": "CRS grade 2",
            "CMDOSE": dose, "CMDOSU": unit, "CMWT": weight, "CMROUTE": "INTRAVENOUS", "CMSTDAT": day, "CMONGO": "N",
            "CMENDAT": day}


# --------------------------------------------------------------------------- helpers


def subject(trial, *, aph=True, mfg=True, ld_data=True, preinf=True):
    """Enrol a subject and enter the forms before the infusion (each may be left out or replaced)."""
    number = trial.enrol(consent_date="2026-10-01")
    if aph:
        trial.saved(number, "aph", APH if aph is True else aph, event="APH")
    if mfg:
        trial.saved(number, "mfg", MFG if mfg is True else mfg, event="MFG", role="manufacturing")
    if ld_data:
        trial.saved(number, "ld", ld() if ld_data is True else ld_data, event="LD")
    if preinf:
        trial.saved(number, "preinf", PREINF if preinf is True else preinf, event="PRE")
    return number


def infuse(trial, number, *fractions):
    """Save fractions at INF1, INF2, INF3 in order; return their bodies."""
    return [trial.saved(number, "inf", data, event=f"INF{i}") for i, data in enumerate(fractions, start=1)]


def opened(body, check):
    """The queries a save opened for `check`."""
    return [q for q in body["queries_opened"] if q["check"] == check]


def open_on(trial, number, entry_id, check):
    return [q for q in trial.open_queries(number, check) if q["entry_id"] == entry_id]


def answered(trial, number, entry_id, check):
    return [q for q in trial.queries(number) if q["entry_id"] == entry_id and q["check"] == check
            and q["state"] == "answered"]


def refused(trial, session, number, form, data, pointer, **kwargs):
    """The save is a 422 naming `pointer` and changes nothing."""
    before = (count_rows(session, "entries"), count_rows(session, "queries"), count_rows(session, "audit_records"))
    errors = problem(trial.save(number, form, data, **kwargs), 422)["errors"]
    assert pointer in {e["pointer"] for e in errors}, errors
    assert (count_rows(session, "entries"), count_rows(session, "queries"), count_rows(session, "audit_records")) == before


def entry_id(trial, number, form):
    """The id of the subject's (single) entry of `form`."""
    [entry] = trial.client.get(f"/api/v1/subjects/{number}/entries?form={form}",
                               headers=trial.headers["investigator_ES01"]).get_json()
    return entry["id"]


def subject_facts(trial, number):
    return trial.client.get(f"/api/v1/subjects/{number}", headers=trial.headers["investigator_ES01"]).get_json()


# --------------------------------------------------------------------------- APH


def test_aph_sets_the_planned_infusion_anchor(trial):
    number = subject(trial, mfg=False, ld_data=False, preinf=False)
    assert subject_facts(trial, number)["planned_infusion_date"] == "2026-11-16"


def test_aph_impossible_values_are_refused(trial, session, subtests):
    for changes, pointer in [
        ({"PLANINFDAT": "2026-10-10"}, "/data/PLANINFDAT"),          # PLANNED_AFTER_APHERESIS: same day as apheresis
        ({"PLANINFDAT": "2026-10-01"}, "/data/PLANINFDAT"),          # before apheresis
        ({"PLANINFDAT": None}, "/data/PLANINFDAT"),                  # required
        ({"COI": "ARI-12"}, "/data/COI"),                            # format
        ({"COI": "Jane Doe"}, "/data/COI"),
        ({"COI": {"missing": "UNK"}}, "/data/COI"),                  # no missing-data code for the product ID
        ({"APHREP": "Y"}, "/data/APHREPRS"),                         # reason required for a repeat apheresis
        ({"APHCOMP": "Y"}, "/data/APHCOMPSP"),                       # complications described
    ]:
        with subtests.test(changes=changes, pointer=pointer):
            number = trial.enrol()
            refused(trial, session, number, "aph", {**APH, **changes}, pointer, event="APH")


def test_aph_repeat_apheresis_with_reason_saves(trial):
    number = trial.enrol()
    body = trial.saved(number, "aph", {**APH, "APHREP": "Y", "APHREPRS": "OTHER", "APHREPSP": "Line occlusion"},
                       event="APH")
    assert body["data"]["APHREPRS"] == "OTHER" and body["queries_opened"] == []


def test_aph_free_text_identifiers_open_a_query(trial, subtests):
    for text in IDENTIFIERS:
        for item, check, extra in [
            ("APHCOMPSP", "NO_IDENTIFIERS_COMP", {"APHCOMP": "Y"}),
            ("APHREPSP", "NO_IDENTIFIERS_REP", {"APHREP": "Y", "APHREPRS": "OTHER"}),
        ]:
            with subtests.test(item=item, check=check, extra=extra, text=text):
                number = trial.enrol()
                body = trial.saved(number, "aph", {**APH, **extra, item: text}, event="APH")
                assert [q["item"] for q in opened(body, check)] == [item]
                trial.update(body["id"], {**APH, **extra, item: "Vasovagal reaction"})
                assert answered(trial, number, body["id"], check) and not open_on(trial, number, body["id"], check)


# --------------------------------------------------------------------------- MFG


def test_mfg_is_entered_by_manufacturing_only(trial, session):
    number = subject(trial, mfg=False, ld_data=False, preinf=False)
    before = count_rows(session, "entries")
    assert trial.save(number, "mfg", MFG, event="MFG").status_code == 403
    assert count_rows(session, "entries") == before
    body = trial.saved(number, "mfg", MFG, event="MFG", role="manufacturing")
    assert body["queries_opened"] == []


def test_mfg_out_of_specification_is_calculated(trial, subtests):
    for changes, oos in [
        ({}, "N"),
        ({"VIAB": 70.0}, "N"),                       # at the specification: in spec
        ({"VIAB": 69.9}, "Y"),                       # below params.mfg_min_viability_pct
        ({"VCN": 5.0}, "N"),
        ({"VCN": 5.01}, "Y"),                        # above params.mfg_max_vcn
        ({"STERIL": "FAIL"}, "Y"),
        ({"MYCO": "FAIL"}, "Y"),
        ({"ENDO": "FAIL"}, "Y"),
        ({"RCLREL": "FAIL"}, "Y"),
    ]:
        with subtests.test(changes=changes, oos=oos):
            number = subject(trial, mfg=False, ld_data=False, preinf=False)
            data = {**MFG, **changes}
            if oos == "Y":
                data["OOSAPPR"] = "Y"
            body = trial.saved(number, "mfg", data, event="MFG", role="manufacturing")
            assert body["data"]["OOS"] == oos


def test_mfg_out_of_specification_needs_the_sponsor_decision(trial, session):
    number = subject(trial, mfg=False, ld_data=False, preinf=False)
    refused(trial, session, number, "mfg", {**MFG, "VIAB": 50.0}, "/data/OOSAPPR", event="MFG", role="manufacturing")
    refused(trial, session, number, "mfg", {**MFG, "OOSAPPR": "Y"}, "/data/OOSAPPR", event="MFG", role="manufacturing")
    refused(trial, session, number, "mfg", {**MFG, "OOS": "N"}, "/data/OOS", event="MFG", role="manufacturing")


def test_mfg_impossible_values_are_refused(trial, session, subtests):
    for changes, pointer in [
        ({"COI": "ARI-1"}, "/data/COI"),
        ({"VIAB": 100.5}, "/data/VIAB"),
        ({"STERIL": "OK"}, "/data/STERIL"),
        ({"RELDAT": "2026-11-21"}, "/data/RELDAT"),   # not in the future
        ({"BATCHNO": None}, "/data/BATCHNO"),
    ]:
        with subtests.test(changes=changes, pointer=pointer):
            number = subject(trial, mfg=False, ld_data=False, preinf=False)
            refused(trial, session, number, "mfg", {**MFG, **changes}, pointer, event="MFG", role="manufacturing")


def test_mfg_product_id_must_match_apheresis(trial):
    """X5: MFG.COI = APH.COI, a critical query either side of the change."""
    number = subject(trial, mfg=False, ld_data=False, preinf=False)
    body = trial.saved(number, "mfg", {**MFG, "COI": OTHER_COI}, event="MFG", role="manufacturing")
    [query] = opened(body, "COI_MATCHES_APH")
    assert query["item"] == "COI" and query["critical"] is True and query["kind"] == "cross_form"
    trial.update(body["id"], MFG, role="manufacturing")
    assert not open_on(trial, number, body["id"], "COI_MATCHES_APH")
    assert answered(trial, number, body["id"], "COI_MATCHES_APH")
    # A change on the apheresis side re-checks the manufacturing entry.
    aph_id = entry_id(trial, number, "aph")
    trial.update(aph_id, {**APH, "COI": OTHER_COI})
    assert [q["critical"] for q in open_on(trial, number, body["id"], "COI_MATCHES_APH")] == [True]


def test_mfg_release_after_day0_opens_a_query(trial):
    number = subject(trial, mfg=False)
    body = trial.saved(number, "mfg", {**MFG, "RELDAT": "2026-11-17"}, event="MFG", role="manufacturing")
    assert not opened(body, "RELEASED_BEFORE_DAY0")              # no Day 0 yet: the rule waits
    infuse(trial, number, F1)                                    # Day 0 = 2026-11-16 re-checks MFG
    [query] = open_on(trial, number, body["id"], "RELEASED_BEFORE_DAY0")
    assert query["item"] == "RELDAT" and query["critical"] is True
    trial.update(body["id"], {**MFG, "RELDAT": "2026-11-16"}, role="manufacturing")
    assert not open_on(trial, number, body["id"], "RELEASED_BEFORE_DAY0")


# --------------------------------------------------------------------------- LD


def test_ld_derives_bsa_and_expected_doses(trial):
    number = subject(trial, ld_data=False, preinf=False)
    body = trial.saved(number, "ld", ld(), event="LD")
    data = body["data"]
    # Mosteller: sqrt(115 × 20 / 3600) = 0.799 -> 0.80 m²; expected doses 30 and 300 mg/m² × 0.80.
    assert (data["BSA"], data["FLUDOSEXP"], data["CYDOSEXP"]) == (0.8, 24.0, 240.0)
    flu, cy = data["EC"][0], data["EC"][1]
    assert (flu["ECDOSPM"], flu["ECDOSEXP"], flu["ECDOSDEV"]) == (30.0, 24.0, 0.0)
    assert (cy["ECDOSPM"], cy["ECDOSEXP"], cy["ECDOSDEV"]) == (300.0, 240.0, 0.0)
    assert body["queries_opened"] == []


def test_ld_dose_off_the_expected_dose_needs_a_reason(trial, subtests):
    """±params.ld_dose_tolerance_pct around dose/m² × BSA (24 mg of fludarabine: 21.6-26.4 mg)."""
    for dose, deviates in [(26.4, False), (21.6, False), (26.5, True), (21.5, True), (0.0, True)]:
        with subtests.test(dose=dose, deviates=deviates):
            number = subject(trial, ld_data=False, preinf=False)
            rows = ld_rows()
            rows[2]["ECDOSE"] = dose
            body = trial.saved(number, "ld", ld(EC=rows), event="LD")
            queries = opened(body, "DOSE_AS_EXPECTED")
            assert [(q["item"], q["critical"]) for q in queries] == ([("EC/2/ECDOSE", True)] if deviates else [])
            if deviates:
                rows[2].update(ECDOSADJ="Y", ECADJ="OMITTED" if dose == 0 else "RENAL")
                trial.update(body["id"], ld(EC=rows))
                assert answered(trial, number, body["id"], "DOSE_AS_EXPECTED")
                assert not open_on(trial, number, body["id"], "DOSE_AS_EXPECTED")


def test_ld_adjustment_reason_is_required(trial, session):
    number = subject(trial, ld_data=False, preinf=False)
    rows = ld_rows()
    rows[0].update(ECDOSADJ="Y")
    refused(trial, session, number, "ld", ld(EC=rows), "/data/EC/0/ECADJ", event="LD")
    rows[0].update(ECADJ="OTHER")
    refused(trial, session, number, "ld", ld(EC=rows), "/data/EC/0/ECADJSP", event="LD")
    rows[0].update(ECADJSP="Pharmacy rounded the dose")
    assert trial.saved(number, "ld", ld(EC=rows), event="LD")["queries_opened"] == []


def test_ld_reason_text_identifiers_open_a_query(trial, subtests):
    for text in IDENTIFIERS:
        with subtests.test(text=text):
            number = subject(trial, ld_data=False, preinf=False)
            rows = ld_rows()
            rows[0].update(ECDOSADJ="Y", ECADJ="OTHER", ECADJSP=text)
            body = trial.saved(number, "ld", ld(EC=rows), event="LD")
            assert [q["item"] for q in opened(body, "NO_IDENTIFIERS_ADJ")] == ["EC/0/ECADJSP"]
            rows[0].update(ECADJSP="Pharmacy rounded the dose")
            trial.update(body["id"], ld(EC=rows))
            assert answered(trial, number, body["id"], "NO_IDENTIFIERS_ADJ")


def test_ld_one_row_per_drug_and_day(trial, session):
    number = subject(trial, ld_data=False, preinf=False)
    rows = ld_rows() + [{"ECTRT": "FLUDARABINE", "ECSTDAT": "2026-11-11", "ECDOSE": 2.0, "ECDOSADJ": "N"}]
    refused(trial, session, number, "ld", ld(EC=rows), "/data/EC", event="LD")


def test_ld_impossible_values_are_refused(trial, session, subtests):
    for changes, pointer in [
        ({"WEIGHT": 1.0}, "/data/WEIGHT"),
        ({"HEIGHT": None}, "/data/HEIGHT"),
        ({"BSA": 0.8}, "/data/BSA"),                                 # computed by the server
        ({"EC": []}, "/data/EC"),                                    # at least one administration
    ]:
        with subtests.test(changes=changes, pointer=pointer):
            number = subject(trial, ld_data=False, preinf=False)
            refused(trial, session, number, "ld", ld(**changes), pointer, event="LD")


def test_ld_needs_each_drug_on_the_protocol_days(trial):
    number = subject(trial, ld_data=False, preinf=False)
    body = trial.saved(number, "ld", ld(EC=ld_rows()[:-1]), event="LD")   # cyclophosphamide on 2 days only
    [query] = opened(body, "LD_DAYS")
    assert query["item"] == "EC" and query["critical"] is True
    trial.update(body["id"], ld())
    assert answered(trial, number, body["id"], "LD_DAYS")


def test_ld_days_must_be_consecutive(trial):
    number = subject(trial, ld_data=False, preinf=False)
    body = trial.saved(number, "ld", ld(EC=ld_rows(["2026-11-10", "2026-11-11", "2026-11-13"])), event="LD")
    assert [q["item"] for q in opened(body, "LD_CONSECUTIVE")] == ["EC"]
    trial.update(body["id"], ld())
    assert answered(trial, number, body["id"], "LD_CONSECUTIVE")


def test_ld_last_dose_to_day0(trial, subtests):
    """X2: the last dose params.ld_last_dose_min_days..max_days before Day 0, checked when Day 0 is set."""
    for dates, in_range in [
        (["2026-11-12", "2026-11-13", "2026-11-14"], True),          # last dose 2 days before Day 0
        (["2026-11-07", "2026-11-08", "2026-11-09"], True),          # 7 days
        (["2026-11-13", "2026-11-14", "2026-11-15"], False),         # 1 day
        (["2026-11-06", "2026-11-07", "2026-11-08"], False),         # 8 days
    ]:
        with subtests.test(dates=dates, in_range=in_range):
            number = subject(trial, ld_data=False, preinf=False)
            body = trial.saved(number, "ld", ld(EC=ld_rows(dates)), event="LD")
            assert not opened(body, "LAST_DOSE_TO_DAY0")                 # no Day 0 yet
            infuse(trial, number, F1)
            queries = open_on(trial, number, body["id"], "LAST_DOSE_TO_DAY0")
            assert [q["item"] for q in queries] == ([] if in_range else ["EC"])
            if not in_range:
                trial.update(body["id"], ld())
                assert answered(trial, number, body["id"], "LAST_DOSE_TO_DAY0")


# --------------------------------------------------------------------------- PRE


def test_preinf_cleared_with_every_criterion_met(trial):
    number = subject(trial, preinf=False)
    assert trial.saved(number, "preinf", PREINF, event="PRE")["queries_opened"] == []


def test_preinf_cleared_with_a_criterion_not_met_opens_a_critical_query(trial, subtests):
    for criterion in ["PRENOINF", "PRENOGVHD", "PREORGAN", "PRENODET", "PRENEURO"]:
        with subtests.test(criterion=criterion):
            number = subject(trial, preinf=False)
            body = trial.saved(number, "preinf", {**PREINF, criterion: "N"}, event="PRE")
            [query] = opened(body, "CLEARED_WITH_ALL_CRITERIA")
            assert query["item"] == "PREELIG" and query["critical"] is True
            trial.update(body["id"], {**PREINF, criterion: "N", "PREELIG": "N", "PRENREAS": "Febrile neutropenia"})
            assert answered(trial, number, body["id"], "CLEARED_WITH_ALL_CRITERIA")


def test_preinf_impossible_values_are_refused(trial, session, subtests):
    for changes, pointer in [
        ({"PRENOINF": {"missing": "ND"}}, "/data/PRENOINF"),         # a checklist: Yes or No only
        ({"PREELIG": "N"}, "/data/PRENREAS"),                        # reason required when not cleared
        ({"PREDAT": "2026-11-21"}, "/data/PREDAT"),
        ({"PRENREAS": "Fever"}, "/data/PRENREAS"),                   # hidden while cleared
    ]:
        with subtests.test(changes=changes, pointer=pointer):
            number = subject(trial, preinf=False)
            refused(trial, session, number, "preinf", {**PREINF, **changes}, pointer, event="PRE")


def test_preinf_reason_identifiers_open_a_query(trial, subtests):
    for text in IDENTIFIERS:
        with subtests.test(text=text):
            number = subject(trial, preinf=False)
            body = trial.saved(number, "preinf", {**PREINF, "PRENOINF": "N", "PREELIG": "N", "PRENREAS": text}, event="PRE")
            assert [q["item"] for q in opened(body, "NO_IDENTIFIERS_REASON")] == ["PRENREAS"]
            trial.update(body["id"], {**PREINF, "PRENOINF": "N", "PREELIG": "N", "PRENREAS": "Febrile neutropenia"})
            assert answered(trial, number, body["id"], "NO_IDENTIFIERS_REASON")


# --------------------------------------------------------------------------- INF


def test_inf_fractions_set_day0_and_derive_the_dose(trial):
    """X1: the INF1 fraction sets Day 0; planned % and dose/kg are computed; a clean course opens no query."""
    number = subject(trial)
    bodies = infuse(trial, number, F1, F2, F3)
    assert subject_facts(trial, number)["day0"] == "2026-11-16"
    assert [b["data"]["EXPLPCT"] for b in bodies] == [10.0, 30.0, 60.0]
    assert [b["data"]["EXDOSKG"] for b in bodies] == [0.1, 0.3, 0.6]
    assert [q for b in bodies for q in b["queries_opened"]] == []
    assert all(q["state"] != "open" for q in trial.queries(number) if q["form"] in ("inf", "ld", "mfg"))


def test_inf_impossible_values_are_refused(trial, session, subtests):
    for changes, pointer in [
        ({"EXFRACT": 4}, "/data/EXFRACT"),
        ({"EXSTDTC": "2026-11-16T10:00:00"}, "/data/EXSTDTC"),        # an offset is required
        ({"EXSTDTC": "2026-11-21T10:00:00+01:00"}, "/data/EXSTDTC"),  # not in the future
        ({"COI": "ARI-00012"}, "/data/COI"),
        ({"EXWT": 0.5}, "/data/EXWT"),
        ({"EXDOSKG": 0.1}, "/data/EXDOSKG"),                          # computed by the server
        ({"EXPLPCT": 10}, "/data/EXPLPCT"),
        ({"PRECRS": "N"}, "/data/PRECRS"),                            # asked from the second fraction on
        ({"PREMED": "Y"}, "/data/PREMEDCS"),                          # corticosteroid premedication answered
        ({"EXOCCUR": "N"}, "/data/EXREASND"),                         # reason for a fraction not given
    ]:
        with subtests.test(changes=changes, pointer=pointer):
            number = subject(trial)
            refused(trial, session, number, "inf", {**F1, **changes}, pointer, event="INF1")


def test_inf_fraction_not_given_has_no_dose(trial, session):
    number = subject(trial)
    infuse(trial, number, F1)
    not_given = {"EXFRACT": 2, "PRECRS": "Y", "EXOCCUR": "N", "EXREASND": "CRS grade 2", "EXSTDTC": F2["EXSTDTC"]}
    refused(trial, session, number, "inf", {**not_given, "EXDOSE": 6.0}, "/data/EXDOSE", event="INF2")
    body = trial.saved(number, "inf", not_given, event="INF2")
    assert "EXDOSKG" not in body["data"] and body["queries_opened"] == []


def test_inf_product_id_must_match_manufacturing_and_apheresis(trial, subtests):
    """X5: INF.COI = MFG.COI = APH.COI; a mismatch saves with a critical query, answered when corrected."""
    for mfg_coi, inf_coi, checks in [
        (COI, OTHER_COI, {"COI_MATCHES_MFG", "COI_MATCHES_APH"}),      # the bag is another patient's product
        (OTHER_COI, COI, {"COI_MATCHES_MFG"}),                         # manufacturing recorded another product
    ]:
        with subtests.test(mfg_coi=mfg_coi, inf_coi=inf_coi, checks=checks):
            number = subject(trial, mfg={**MFG, "COI": mfg_coi})
            body = trial.saved(number, "inf", {**F1, "COI": inf_coi}, event="INF1")
            queries = [q for q in body["queries_opened"] if q["check"].startswith("COI_")]
            assert {q["check"] for q in queries} == checks
            assert all(q["item"] == "COI" and q["critical"] and q["kind"] == "cross_form" for q in queries)
            if inf_coi != COI:
                trial.update(body["id"], F1)
                assert not [q for q in trial.open_queries(number) if q["entry_id"] == body["id"]]
                assert {q["check"] for q in trial.queries(number) if q["entry_id"] == body["id"]} == checks


def test_inf_product_id_query_follows_a_manufacturing_correction(trial):
    number = subject(trial, mfg={**MFG, "COI": OTHER_COI})
    [inf1] = infuse(trial, number, F1)
    assert open_on(trial, number, inf1["id"], "COI_MATCHES_MFG")
    mfg_id = entry_id(trial, number, "mfg")
    trial.update(mfg_id, MFG, role="manufacturing")
    assert not open_on(trial, number, inf1["id"], "COI_MATCHES_MFG")
    assert answered(trial, number, inf1["id"], "COI_MATCHES_MFG")


def test_inf_without_a_release_record_opens_a_query(trial):
    number = subject(trial, mfg=False)
    [inf1] = infuse(trial, number, F1)
    [query] = opened(inf1, "PRODUCT_RELEASED")
    assert query["critical"] is True and query["item"] == "EXOCCUR"
    trial.saved(number, "mfg", MFG, event="MFG", role="manufacturing")
    assert answered(trial, number, inf1["id"], "PRODUCT_RELEASED")


def test_inf_out_of_specification_product_needs_sponsor_approval(trial, subtests):
    for approval, queried in [("N", True), ("Y", False)]:
        with subtests.test(approval=approval, queried=queried):
            number = subject(trial, mfg={**MFG, "VIAB": 60.0, "OOSAPPR": approval})
            [inf1] = infuse(trial, number, F1)
            assert [q["critical"] for q in opened(inf1, "OOS_APPROVED")] == ([True] if queried else [])
            if queried:
                mfg_id = entry_id(trial, number, "mfg")
                trial.update(mfg_id, {**MFG, "VIAB": 60.0, "OOSAPPR": "Y"}, role="manufacturing")
                assert answered(trial, number, inf1["id"], "OOS_APPROVED")


def test_inf_after_a_failed_pre_infusion_check_opens_a_query(trial):
    number = subject(trial, preinf={**PREINF, "PRENOINF": "N", "PREELIG": "N", "PRENREAS": "Febrile neutropenia"})
    [inf1] = infuse(trial, number, F1)
    [query] = opened(inf1, "CLEARED_TO_INFUSE")
    assert query["critical"] is True
    preinf_id = entry_id(trial, number, "preinf")
    trial.update(preinf_id, PREINF)
    assert answered(trial, number, inf1["id"], "CLEARED_TO_INFUSE")


def test_inf_fractions_at_least_the_minimum_interval_apart(trial, subtests):
    """§2.6 / X3: a fraction less than params.min_fraction_interval_hours after another saves with a critical query."""
    for start, too_soon in [
        ("2026-11-17T09:59:00+01:00", True),          # 23 h 59 min after fraction 1
        ("2026-11-17T10:00:00+01:00", False),         # exactly params.min_fraction_interval_hours
        ("2026-11-17T09:30:00Z", False),              # 24 h 30 min (another offset)
        ("2026-11-17T08:00:00Z", True),               # 23 h
    ]:
        with subtests.test(start=start, too_soon=too_soon):
            number = subject(trial)
            [inf1] = infuse(trial, number, F1)
            body = trial.saved(number, "inf", {**F2, "EXSTDTC": start}, event="INF2")
            queries = opened(body, "FRACTION_INTERVAL")
            assert [(q["item"], q["critical"]) for q in queries] == ([("EXSTDTC", True)] if too_soon else [])
            # The other fraction is re-checked too.
            assert bool(open_on(trial, number, inf1["id"], "FRACTION_INTERVAL")) is too_soon


def test_inf_interval_query_is_answered_on_both_fractions_when_corrected(trial):
    number = subject(trial)
    [inf1] = infuse(trial, number, F1)
    inf2 = trial.saved(number, "inf", {**F2, "EXSTDTC": "2026-11-16T20:00:00+01:00"}, event="INF2")
    assert open_on(trial, number, inf1["id"], "FRACTION_INTERVAL") and open_on(trial, number, inf2["id"], "FRACTION_INTERVAL")
    trial.update(inf2["id"], F2)
    for fraction_id in (inf1["id"], inf2["id"]):
        assert not open_on(trial, number, fraction_id, "FRACTION_INTERVAL")
        assert answered(trial, number, fraction_id, "FRACTION_INTERVAL")
    # Moving fraction 1 later re-opens it on both.
    trial.update(inf1["id"], {**F1, "EXSTDTC": "2026-11-17T00:00:00+01:00"})
    assert open_on(trial, number, inf1["id"], "FRACTION_INTERVAL") and open_on(trial, number, inf2["id"], "FRACTION_INTERVAL")


def test_inf_interval_ignores_a_fraction_not_given(trial):
    number = subject(trial)
    infuse(trial, number, F1)
    skipped = trial.saved(number, "inf", {"EXFRACT": 2, "PRECRS": "Y", "EXOCCUR": "N", "EXREASND": "CRS",
                                          "EXSTDTC": "2026-11-16T20:00:00+01:00"}, event="INF2")
    assert not opened(skipped, "FRACTION_INTERVAL")


def test_inf_cumulative_dose_per_kg(trial, subtests):
    """X4: the sum of the fractions' dose/kg above params.target_dose_per_kg × cumulative_dose_tolerance (1.1)."""
    for third, above in [(12.0, False), (14.0, False), (14.2, True)]:
        with subtests.test(third=third, above=above):
            number = subject(trial)
            *_, inf3 = infuse(trial, number, F1, F2, {**F3, "EXDOSE": third})
            queries = opened(inf3, "CUMULATIVE_DOSE")
            assert [(q["item"], q["critical"]) for q in queries] == ([("EXDOSE", True)] if above else [])
            if above:
                trial.update(inf3["id"], F3)
                assert answered(trial, number, inf3["id"], "CUMULATIVE_DOSE")


def test_inf_cumulative_dose_is_rechecked_when_an_earlier_fraction_changes(trial):
    number = subject(trial)
    inf1, _, inf3 = infuse(trial, number, F1, F2, F3)
    trial.update(inf1["id"], {**F1, "EXDOSE": 5.0})             # 0.25 + 0.3 + 0.6 = 1.15 ×10⁶/kg
    assert open_on(trial, number, inf1["id"], "CUMULATIVE_DOSE")
    assert open_on(trial, number, inf3["id"], "CUMULATIVE_DOSE")


def test_inf_dosing_weight_against_lymphodepletion_weight(trial, subtests):
    """Dosing weight within ±params.dosing_weight_tolerance_pct of the LD weight (20 kg)."""
    for weight, off in [(22.0, False), (18.0, False), (22.1, True), (17.9, True)]:
        with subtests.test(weight=weight, off=off):
            number = subject(trial)
            [inf1] = infuse(trial, number, {**F1, "EXWT": weight})
            queries = opened(inf1, "DOSING_WEIGHT")
            assert [(q["item"], q["critical"]) for q in queries] == ([("EXWT", False)] if off else [])
            if off:
                trial.update(inf1["id"], F1)
                assert answered(trial, number, inf1["id"], "DOSING_WEIGHT")


def test_inf_fraction_given_with_crs_before_it(trial, subtests):
    """X3: a fraction given although CRS was present before it: a critical query."""
    for precrs, given, queried in [("Y", "Y", True), ("Y", "N", False), ("N", "Y", False)]:
        with subtests.test(precrs=precrs, given=given, queried=queried):
            number = subject(trial)
            infuse(trial, number, F1)
            data = {**F2, "PRECRS": precrs} if given == "Y" else {
                "EXFRACT": 2, "PRECRS": precrs, "EXOCCUR": "N", "EXREASND": "CRS", "EXSTDTC": F2["EXSTDTC"]}
            body = trial.saved(number, "inf", data, event="INF2")
            assert [(q["item"], q["critical"]) for q in opened(body, "NO_CRS_BEFORE_FRACTION")] == (
                [("EXOCCUR", True)] if queried else [])
            if queried:
                trial.update(body["id"], F2)
                assert answered(trial, number, body["id"], "NO_CRS_BEFORE_FRACTION")


def test_inf_fraction_numbers_are_unique_and_sequential(trial):
    number = subject(trial)
    inf2 = trial.saved(number, "inf", F2, event="INF2")            # fraction 2 before fraction 1 is recorded
    assert [q["item"] for q in opened(inf2, "FRACTION_SEQUENCE")] == ["EXFRACT"]
    [inf1] = infuse(trial, number, F1)
    assert answered(trial, number, inf2["id"], "FRACTION_SEQUENCE")
    inf3 = trial.saved(number, "inf", {**F3, "EXFRACT": 2, "PRECRS": "N"}, event="INF3")   # fraction 2 again
    assert [q["item"] for q in opened(inf3, "FRACTION_UNIQUE")] == ["EXFRACT"]
    assert open_on(trial, number, inf2["id"], "FRACTION_UNIQUE")
    trial.update(inf3["id"], F3)
    assert answered(trial, number, inf3["id"], "FRACTION_UNIQUE") and answered(trial, number, inf2["id"], "FRACTION_UNIQUE")
    assert not open_on(trial, number, inf1["id"], "FRACTION_SEQUENCE")


def test_inf_first_fraction_too_late_after_the_planned_date(trial):
    number = subject(trial, aph={**APH, "PLANINFDAT": "2026-11-01"})
    [inf1] = infuse(trial, number, F1)                              # 15 days after the planned date
    assert [q["item"] for q in opened(inf1, "INFUSION_DELAY")] == ["EXSTDTC"]
    aph_id = entry_id(trial, number, "aph")
    trial.update(aph_id, {**APH, "PLANINFDAT": "2026-11-02"})       # 14 days: within params.infusion_max_delay_days
    assert answered(trial, number, inf1["id"], "INFUSION_DELAY")


def test_inf_corticosteroid_premedication_opens_a_query(trial):
    number = subject(trial)
    [inf1] = infuse(trial, number, {**F1, "PREMED": "Y", "PREMEDCS": "Y"})
    assert [q["item"] for q in opened(inf1, "NO_STEROID_PREMEDICATION")] == ["PREMEDCS"]
    trial.update(inf1["id"], {**F1, "PREMED": "Y", "PREMEDCS": "N"})
    assert answered(trial, number, inf1["id"], "NO_STEROID_PREMEDICATION")


def test_inf_reason_not_given_identifiers_open_a_query(trial, subtests):
    for text in IDENTIFIERS:
        with subtests.test(text=text):
            number = subject(trial)
            infuse(trial, number, F1)
            not_given = {"EXFRACT": 2, "PRECRS": "Y", "EXOCCUR": "N", "EXSTDTC": F2["EXSTDTC"]}
            body = trial.saved(number, "inf", {**not_given, "EXREASND": text}, event="INF2")
            assert [q["item"] for q in opened(body, "NO_IDENTIFIERS_REASON")] == ["EXREASND"]
            trial.update(body["id"], {**not_given, "EXREASND": "CRS grade 2"})
            assert answered(trial, number, body["id"], "NO_IDENTIFIERS_REASON")


# --------------------------------------------------------------------------- CM


def test_cm_log_takes_many_entries(trial):
    number = trial.enrol()
    for name in ("Levetiracetam", "Aciclovir"):
        body = trial.saved(number, "cm", {**CM, "CMTRT": name})
        assert body["event"] is None and body["queries_opened"] == []


def test_cm_impossible_values_are_refused(trial, session, subtests):
    for changes, pointer in [
        ({"CMONGO": "N", "CMENDAT": "2026-11-14"}, "/data/CMENDAT"),   # END_AFTER_START
        ({"CMONGO": "N", "CMENDAT": "2026-10"}, "/data/CMENDAT"),      # partial end month before the start
        ({"CMONGO": "N"}, "/data/CMENDAT"),                            # end date required when not ongoing
        ({"CMENDAT": "2026-11-16"}, "/data/CMENDAT"),                  # hidden while ongoing
        ({"CMCAT": "VASOPRESSOR"}, "/data/CMVPAGT"),                   # vasopressor agent
        ({"CMCAT": "CRS/ICANS THERAPY"}, "/data/CMCRSAGT"),            # CRS/ICANS agent
        ({"CMDOSU": "mg/kg"}, "/data/CMWT"),                           # weight for a weight-based dose
        ({"CMWT": 20.0}, "/data/CMWT"),                                # weight not asked for a fixed dose
        ({"CMDOSE": None}, "/data/CMDOSU"),                            # no unit without a dose
    ]:
        with subtests.test(changes=changes, pointer=pointer):
            number = trial.enrol()
            refused(trial, session, number, "cm", {**CM, **changes}, pointer)


def test_cm_partial_dates_and_vasopressin(trial):
    number = trial.enrol()
    body = trial.saved(number, "cm", {**CM, "CMCAT": "VASOPRESSOR", "CMVPAGT": "VASOPRESSIN", "CMTRT": "Vasopressin",
                                      "CMDOSE": 0.0005, "CMDOSU": "U", "CMSTDAT": "2026-11", "CMONGO": "N",
                                      "CMENDAT": "2026-11"})
    assert body["data"]["CMVPAGT"] == "VASOPRESSIN" and body["queries_opened"] == []


def test_cm_tocilizumab_dose(trial, subtests):
    for dose, unit, weight, above in [
        (12.0, "mg/kg", 20.0, False),            # 12 mg/kg under params.toci_weight_cutoff_kg (30 kg)
        (12.5, "mg/kg", 20.0, True),
        (240.0, "mg", 20.0, False),              # 240 mg = 12 mg/kg
        (250.0, "mg", 20.0, True),
        (8.0, "mg/kg", 30.0, False),             # 8 mg/kg from 30 kg
        (9.0, "mg/kg", 30.0, True),
        (12.0, "mg/kg", 29.9, False),
        (8.0, "mg/kg", 100.0, False),            # 800 mg: the maximum single dose
        (8.0, "mg/kg", 101.0, True),             # 808 mg
        (800.0, "mg", 110.0, False),
        (810.0, "mg", 110.0, True),
    ]:
        with subtests.test(dose=dose, unit=unit, weight=weight, above=above):
            number = trial.enrol()
            body = trial.saved(number, "cm", toci("2026-11-17", dose, unit, weight))
            assert [(q["item"], q["critical"]) for q in opened(body, "TOCI_DOSE")] == ([("CMDOSE", True)] if above else [])
            if above:
                trial.update(body["id"], toci("2026-11-17", 7.0, "mg/kg", weight))
                assert answered(trial, number, body["id"], "TOCI_DOSE")


def test_cm_dose_rule_is_for_tocilizumab_only(trial):
    number = trial.enrol()
    steroid = {**toci("2026-11-17", 20.0), "CMTRT": "Dexamethasone", "CMCRSAGT": "CORTICOSTEROID"}
    assert not opened(trial.saved(number, "cm", steroid), "TOCI_DOSE")


def test_cm_tocilizumab_dose_count(trial):
    """More than params.toci_max_doses tocilizumab doses: the extra dose gets a critical query."""
    number = trial.enrol()
    bodies = [trial.saved(number, "cm", toci(f"2026-11-1{day}", 12.0)) for day in range(5, 9)]
    assert [q for b in bodies for q in opened(b, "TOCI_DOSE_COUNT")] == []
    fifth = trial.saved(number, "cm", toci("2026-11-19", 12.0))
    [query] = opened(fifth, "TOCI_DOSE_COUNT")
    assert query["item"] == "CMCRSAGT" and query["critical"] is True
    assert not any(open_on(trial, number, b["id"], "TOCI_DOSE_COUNT") for b in bodies)
    # Recorded by mistake: it was siltuximab.
    trial.update(fifth["id"], {**toci("2026-11-19", 11.0), "CMTRT": "Siltuximab", "CMCRSAGT": "SILTUXIMAB"})
    assert answered(trial, number, fifth["id"], "TOCI_DOSE_COUNT")


def test_cm_free_text_identifiers_open_a_query(trial, subtests):
    for text in IDENTIFIERS:
        for item, check in [("CMTRT", "NO_IDENTIFIERS_TRT"), ("CMINDC", "NO_IDENTIFIERS_INDC")]:
            with subtests.test(item=item, check=check, text=text):
                number = trial.enrol()
                body = trial.saved(number, "cm", {**CM, item: text})
                assert [q["item"] for q in opened(body, check)] == [item]
                trial.update(body["id"], CM)
                assert answered(trial, number, body["id"], check)


IVIG = {"CMTRT": "Immunoglobulin", "CMCAT": "IVIG", "CMINDC": "Hypogammaglobulinaemia", "CMDOSE": 8.0, "CMDOSU": "g",
        "CMROUTE": "INTRAVENOUS", "CMSTDAT": "2026-11-18", "CMONGO": "N", "CMENDAT": "2026-11-18"}


def test_cm_ivig_needs_a_recent_igg_result(trial, subtests):
    for lab, queried in [
        ({"LBDAT": "2026-11-18", "IGG": 350}, False),            # same day
        ({"LBDAT": "2026-10-19", "IGG": 350}, False),            # params.igg_ivig_window_days (30) before
        ({"LBDAT": "2026-10-18", "IGG": 350}, True),             # 31 days before
        ({"LBDAT": "2026-11-19", "IGG": 350}, True),             # after the IVIG start
        ({"LBDAT": "2026-11-17", "IGG": {"missing": "ND"}}, True),
    ]:
        with subtests.test(lab=lab, queried=queried):
            number = trial.enrol()
            trial.saved(number, "lb", lab, event="SCR")
            body = trial.saved(number, "cm", IVIG)
            assert [(q["item"], q["critical"]) for q in opened(body, "IVIG_NEEDS_IGG")] == ([("CMCAT", False)] if queried else [])


def test_cm_ivig_query_is_answered_when_the_igg_result_is_entered(trial):
    number = trial.enrol()
    body = trial.saved(number, "cm", IVIG)
    assert opened(body, "IVIG_NEEDS_IGG")
    assert not opened(trial.saved(number, "cm", CM), "IVIG_NEEDS_IGG")          # other medications: no rule
    trial.saved(number, "lb", {"LBDAT": "2026-11-10", "IGG": 280}, event="SCR")
    assert answered(trial, number, body["id"], "IVIG_NEEDS_IGG")
    assert not open_on(trial, number, body["id"], "IVIG_NEEDS_IGG")


def test_cm_vasopressor_needs_hypotension_on_the_crs_assessment_of_its_start_day(trial):
    """§8.2 CM: a vasopressor row on a CRS-DAILY date needs HYPOT = vasopressor(s) on that assessment."""
    number = subject(trial)
    infuse(trial, number, F1)
    crs = trial.save(number, "crs_daily", {"CRSDAT": "2026-11-17", "HYPOT": "FLUIDS"}, complete=False)
    assert crs.status_code == 201, crs.get_json()
    vasopressor = {"CMTRT": "Norepinephrine", "CMCAT": "VASOPRESSOR", "CMVPAGT": "NOREPINEPHRINE",
                   "CMINDC": "CRS grade 3", "CMDOSE": 0.1, "CMDOSU": "ug/kg/min", "CMROUTE": "INTRAVENOUS",
                   "CMSTDAT": "2026-11-17", "CMONGO": "Y"}
    body = trial.saved(number, "cm", vasopressor)
    assert [(q["item"], q["critical"]) for q in opened(body, "VASOPRESSOR_ON_CRS_DAY")] == [("CMSTDAT", False)]
    other_day = trial.saved(number, "cm", {**vasopressor, "CMSTDAT": "2026-11-18"})   # no assessment that day
    assert not opened(other_day, "VASOPRESSOR_ON_CRS_DAY")
    trial.update(crs.get_json()["id"], {"CRSDAT": "2026-11-17", "HYPOT": "VASO"}, complete=False)
    assert answered(trial, number, body["id"], "VASOPRESSOR_ON_CRS_DAY")
