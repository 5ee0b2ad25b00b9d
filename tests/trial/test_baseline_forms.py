"""Baseline forms of the trial through the HTTP API: informed consent (ic), demographics (dm), eligibility (ie),
medical history (mh), disease history (dh), prior therapy (prior_tx), prior HSCT (hsct_hx), vital signs (vs),
physical examination (pe), performance status (ps) and pregnancy test (preg).

Every check and derivation of these forms is exercised: the good path, the bad path (422 with the JSON
pointer, nothing saved) and, for warnings, the automatic query that opens and is answered when the data
are corrected. The clock is fixed at 2026-11-20 (the registration date of every subject enrolled here);
the default subject was born in April 2016 (10 years old) and is female."""

from __future__ import annotations

from conftest import bearer, count_rows, login, problem

TODAY = "2026-11-20"

IC = {"RFICDAT": "2026-11-02", "ICVERS": "V1_0", "LTFUCONS": "Y", "SAMPCONS": "Y"}
DM = {"RFICDAT": "2026-11-02", "BRTHYY": 2016, "BRTHMO": 4, "SEX": "F", "DEVDELAY": "N", "WEIGHT": 32.0, "HEIGHT": 140.0}
DH = {"DXDAT": "2023-05", "DXIMMUNO": "COMMON", "DXGENET": ["ETV6RUNX1"], "DXCNS": "CNS1", "NRELAPSE": 2,
      "LASTREL_DAT": "2026-09-15", "LASTREL_SITE": "BM", "REFRACT": "N", "PRIORHSCT": 0}
CHEMO_LINE = {"CMTRT": "Induction and consolidation chemotherapy", "CMAGCLAS": ["CHEMO"], "CMSTDAT": "2023-05",
              "CMENDAT": "2024-01", "CMBRESP": "CR"}
BLINA_LINE = {"CMTRT": "Blinatumomab", "CMAGCLAS": ["CD19"], "CMSTDAT": "2025-02", "CMENDAT": "2025-04", "CMBRESP": "NR"}
PRIOR_TX = {"CMPRIOR": [CHEMO_LINE, BLINA_LINE]}
HSCT_1 = {"PRSTDAT": "2025-03-10", "HSCTDON": "MSD", "HSCTTBI": "Y", "HSCTGVHD": "ACUTE"}
HSCT_2 = {"PRSTDAT": "2026-06-20", "HSCTDON": "HAPLO", "HSCTTBI": "N", "HSCTGVHD": "NONE"}
PS = {"PSDAT": TODAY, "LANSKY": 80}
VS = {"VSDAT": TODAY, "TEMP": 36.8, "HR": 96, "SYSBP": 105, "DIABP": 65, "RESP": 20, "OXYSAT": 98, "WEIGHT": 32.0,
      "HEIGHT": 140.0}
PE = {"PEDAT": TODAY, "PEEXAM": [{"PETESTCD": "GENERAL", "PEORRES": "NORMAL"},
                                 {"PETESTCD": "ABDOMEN", "PEORRES": "ABNORMAL", "PEDESC": "Spleen palpable 2 cm below the costal margin",
                                  "PECLSIG": "N"}]}
MH = {"MHYN": "Y", "MH": [{"MHCAT": "GENERAL", "MHTERM": "Asthma", "MHSTDAT": "2019", "MHONGO": "Y"},
                          {"MHCAT": "GENERAL", "MHTERM": "Appendicectomy", "MHSTDAT": "2021-03", "MHONGO": "N",
                           "MHENDAT": "2021-03"}]}
PREG = {"PREGCBP": "Y", "PREGDAT": TODAY, "PREGSPEC": "URINE", "PREGRES": "NEG"}
IE = {"IEPROTV": "V1_0", "IEINCL01": "Y", "IEINCL01DAT": "2026-10-01", "IEINCL02": "Y", "IEINCL02R": ["REL2"],
      "IEINCL03": "Y", "IEINCL04": "Y", "IEEXCL01": "N", "IEEXCL02": "N", "IEEXCL03": "N", "IEEXCL04": "N",
      "IEEXCL05": "N", "IEEXCL06": "N"}
X12_TEXTS = ["call the mother at jane.doe@example.org", "MRN 12345678", "phone 612 345 678"]


# ------------------------------------------------------------------------------------------------ helpers


def saved(trial, number, form, data, *, event="SCR", **kwargs):
    """Save an entry that must be accepted; return its body."""
    return trial.saved(number, form, data, event=event, **kwargs)


def rejected(trial, session, number, form, data, *pointers, event="SCR"):
    """A save refused with 422 naming `pointers`, that stores nothing and opens no query."""
    before = count_rows(session, "entries"), count_rows(session, "queries"), count_rows(session, "audit_records")
    body = problem(trial.save(number, form, data, event=event), 422)
    found = {error["pointer"] for error in body["errors"]}
    assert set(pointers) <= found, body["errors"]
    assert (count_rows(session, "entries"), count_rows(session, "queries"), count_rows(session, "audit_records")) == before
    return body["errors"]


def opened(body, check):
    """The automatic queries of `check` that a save opened."""
    return [q for q in body["queries_opened"] if q["check"] == check]


def no_queries(body):
    assert body["queries_opened"] == [], body["queries_opened"]
    assert body["warnings"] == [], body["warnings"]


def corrected(trial, body, data, check):
    """Update the entry with `data`: the query of `check` is answered by the correction."""
    response = trial.update(body["id"], data)
    assert response.status_code == 200, response.get_json()
    assert {q["check"] for q in response.get_json()["queries_answered"]} == {check}
    return response.get_json()


def advance(trial, fake_clock, days):
    """Move the clock forward by `days` and log the investigator in again (access tokens expire)."""
    fake_clock.advance(days=days)
    trial.headers["investigator_ES01"] = bearer(login(trial.client, "investigator-es01"))


def warns_then_fixed(trial, number, form, bad, good, check, *, items, critical=False, event="SCR"):
    """`bad` saves with a query of `check` on `items`; correcting to `good` answers it."""
    body = saved(trial, number, form, bad, event=event)
    queries = opened(body, check)
    assert [q["item"] for q in queries] == items, body["queries_opened"]
    assert all(q["state"] == "open" and q["critical"] is critical and q["kind"] != "soft_range" for q in queries)
    corrected(trial, body, good, check)
    assert trial.open_queries(number, check) == []
    return body


# ------------------------------------------------------------------------------------------------ IC


def test_ic_good_path_derives_age_and_no_assent_for_a_young_child(trial):
    number = trial.enrol()
    body = saved(trial, number, "ic", IC)
    no_queries(body)
    assert body["data"]["ICAGEMO"] == 127          # April 2016 -> November 2026: 10 years 7 months, from the 1st
    assert body["data"]["ASSENTREQ"] == "N"        # below params.assent_min_age_years


def test_ic_assent_items_are_hidden_when_assent_is_not_required(trial, session):
    number = trial.enrol()
    rejected(trial, session, number, "ic", {**IC, "ASSENTOBT": "Y"}, "/data/ASSENTOBT")


def test_ic_assent_required_from_the_assent_age(trial, session):
    number = trial.enrol(birth_year=2012, birth_month=1)          # 14 at consent
    rejected(trial, session, number, "ic", IC, "/data/ASSENTOBT")
    rejected(trial, session, number, "ic", {**IC, "ASSENTOBT": "Y"}, "/data/ASSENTDAT")
    rejected(trial, session, number, "ic", {**IC, "ASSENTOBT": "N"}, "/data/ASSENTNR")
    rejected(trial, session, number, "ic", {**IC, "ASSENTOBT": "Y", "ASSENTDAT": "2026-11-02", "ASSENTNR": "UNABLE"},
             "/data/ASSENTNR")
    body = saved(trial, number, "ic", {**IC, "ASSENTOBT": "Y", "ASSENTDAT": "2026-11-02"})
    no_queries(body)
    assert body["data"]["ASSENTREQ"] == "Y"


def test_ic_no_assent_because_the_child_is_unable_needs_no_query(trial):
    number = trial.enrol(birth_year=2012, birth_month=1)
    no_queries(saved(trial, number, "ic", {**IC, "ASSENTOBT": "N", "ASSENTNR": "UNABLE"}))


def test_ic_assent_not_obtained_for_another_reason_opens_a_query(trial, session):
    number = trial.enrol(birth_year=2012, birth_month=1)
    rejected(trial, session, number, "ic", {**IC, "ASSENTOBT": "N", "ASSENTNR": "OTHER"}, "/data/ASSENTNRO")
    warns_then_fixed(trial, number, "ic", {**IC, "ASSENTOBT": "N", "ASSENTNR": "OTHER", "ASSENTNRO": "Not asked"},
                     {**IC, "ASSENTOBT": "N", "ASSENTNR": "UNABLE"}, "IC_ASSENT_NOT_OBTAINED", items=["ASSENTNR"])


def test_ic_free_text_identifiers_open_a_query(trial):
    for text in X12_TEXTS:
        number = trial.enrol(birth_year=2012, birth_month=1)
        data = {**IC, "ASSENTOBT": "N", "ASSENTNR": "OTHER"}
        body = warns_then_fixed(trial, number, "ic", {**data, "ASSENTNRO": text}, {**data, "ASSENTNRO": "Parents asked not to"},
                                "IC_ASSENT_NO_IDENTIFIERS", items=["ASSENTNRO"])
        assert opened(body, "IC_ASSENT_NOT_OBTAINED")


def test_ic_no_consent_to_long_term_follow_up_opens_a_query(trial):
    number = trial.enrol()
    warns_then_fixed(trial, number, "ic", {**IC, "LTFUCONS": "N"}, IC, "IC_LTFU_REFUSED", items=["LTFUCONS"])


def test_ic_consent_after_registration_opens_a_critical_query(trial, fake_clock):
    number = trial.enrol()                                        # registered on 2026-11-20
    advance(trial, fake_clock, 3)
    warns_then_fixed(trial, number, "ic", {**IC, "RFICDAT": "2026-11-22"}, IC, "IC_CONSENT_BEFORE_REGISTRATION",
                     items=["RFICDAT"], critical=True)


def test_ic_assent_after_registration_opens_a_query(trial, fake_clock):
    number = trial.enrol(birth_year=2012, birth_month=1)
    advance(trial, fake_clock, 3)
    data = {**IC, "ASSENTOBT": "Y"}
    warns_then_fixed(trial, number, "ic", {**data, "ASSENTDAT": "2026-11-22"}, {**data, "ASSENTDAT": "2026-11-02"},
                     "IC_ASSENT_BEFORE_REGISTRATION", items=["ASSENTDAT"])


def test_ic_reconsent_to_an_amended_version_cannot_precede_the_consent(trial, session):
    number = trial.enrol()
    rejected(trial, session, number, "ic", {**IC, "ICAMEND": [{"ICAVERS": "V1_0", "ICADAT": "2026-11-01"}]},
             "/data/ICAMEND/0/ICADAT")
    no_queries(saved(trial, number, "ic", {**IC, "ICAMEND": [{"ICAVERS": "V1_0", "ICADAT": "2026-11-10"}]}))


def test_ic_reconsent_at_majority_only_for_minors_and_not_before_consent(trial, session):
    adult = trial.enrol(birth_year=2006, birth_month=1)           # 20 at consent: no re-consent at majority
    rejected(trial, session, adult, "ic", {**IC, "RECONSDAT": "2026-11-10"}, "/data/RECONSDAT")
    minor = trial.enrol()
    rejected(trial, session, minor, "ic", {**IC, "RECONSDAT": "2026-11-01"}, "/data/RECONSDAT")


def test_ic_reconsent_before_majority_opens_a_query(trial, fake_clock):
    number = trial.enrol(birth_year=2008, birth_month=12)         # 17 years 11 months at consent
    data = {**IC, "ASSENTOBT": "Y", "ASSENTDAT": "2026-11-02"}
    body = saved(trial, number, "ic", {**data, "RECONSDAT": "2026-11-10"})
    [query] = opened(body, "IC_RECONSENT_AT_MAJORITY")
    assert query["item"] == "RECONSDAT" and query["kind"] == "cross_form"
    advance(trial, fake_clock, 12)                                # 2026-12-02: 18 years old
    corrected(trial, body, {**data, "RECONSDAT": "2026-12-01"}, "IC_RECONSENT_AT_MAJORITY")


# ------------------------------------------------------------------------------------------------ DM


def test_dm_good_path_derives_age_in_years_and_months(trial):
    number = trial.enrol()
    saved(trial, number, "ic", IC)
    body = saved(trial, number, "dm", DM)
    no_queries(body)
    assert (body["data"]["AGE"], body["data"]["AGEMO"]) == (10, 127)


def test_dm_bad_values_are_422(trial, session):
    for change, pointer in [
        ({"BRTHMO": 13}, "/data/BRTHMO"),
        ({"BRTHMO": 0}, "/data/BRTHMO"),
        ({"BRTHYY": "2015-03-04"}, "/data/BRTHYY"),                  # a full birth date is never accepted
        ({"BRTHYY": "2016-04"}, "/data/BRTHYY"),
        ({"BRTHYY": 1989}, "/data/BRTHYY"),
        ({"BRTHYY": {"missing": "UNK"}}, "/data/BRTHYY"),
        ({"BRTHDAT": "2016-04-12"}, "/data/BRTHDAT"),                # no such item: the day of birth is not collected
        ({"WEIGHT": 0.5}, "/data/WEIGHT"),
        ({"HEIGHT": 300}, "/data/HEIGHT"),
        ({"SEX": "X"}, "/data/SEX"),
        ({"AGE": 10}, "/data/AGE"),                                  # computed by the server
        ({"DEVDELAY": None}, "/data/DEVDELAY"),
    ]:
        number = trial.enrol()
        rejected(trial, session, number, "dm", {**DM, **change}, pointer)


def test_dm_birth_after_consent_is_an_error(trial, session):
    number = trial.enrol()
    rejected(trial, session, number, "dm", {**DM, "BRTHYY": 2026, "BRTHMO": 12}, "/data/BRTHYY", "/data/BRTHMO")


def test_dm_birth_different_from_enrolment_opens_a_query(trial):
    number = trial.enrol()
    body = warns_then_fixed(trial, number, "dm", {**DM, "BRTHMO": 5}, DM, "DM_BIRTH_MATCHES_SUBJECT",
                            items=["BRTHYY", "BRTHMO"])
    assert body["queries_opened"][0]["kind"] == "cross_form"


def test_dm_sex_different_from_enrolment_opens_a_query(trial):
    number = trial.enrol()
    warns_then_fixed(trial, number, "dm", {**DM, "SEX": "M"}, DM, "DM_SEX_MATCHES_SUBJECT", items=["SEX"])


def test_dm_consent_date_different_from_ic_opens_a_query_answered_from_either_side(trial):
    number = trial.enrol()
    ic = saved(trial, number, "ic", IC)
    warns_then_fixed(trial, number, "dm", {**DM, "RFICDAT": "2026-11-03"}, DM, "DM_CONSENT_MATCHES_IC", items=["RFICDAT"])
    # The IC side changes: DM's query opens again; correcting IC back answers it without touching DM.
    assert trial.update(ic["id"], {**IC, "RFICDAT": "2026-11-01"}).status_code == 200
    [query] = trial.open_queries(number, "DM_CONSENT_MATCHES_IC")
    assert query["form"] == "dm" and query["item"] == "RFICDAT"
    assert trial.update(ic["id"], IC).status_code == 200
    assert trial.open_queries(number, "DM_CONSENT_MATCHES_IC") == []


def test_dm_age_outside_the_eligible_range_opens_a_query(trial):
    number = trial.enrol(birth_year=2026, birth_month=1)          # 10 months at consent (minimum 12)
    data = {**DM, "BRTHYY": 2026, "BRTHMO": 1, "WEIGHT": 8.5, "HEIGHT": 72.0}
    body = saved(trial, number, "dm", data)
    assert body["data"]["AGEMO"] == 10 and body["data"]["AGE"] == 0
    [query] = opened(body, "DM_AGE_ELIGIBLE")
    assert query["item"] == "AGEMO" and query["kind"] == "check"


def test_dm_implausible_weight_and_height_open_soft_range_queries(trial):
    number = trial.enrol()
    body = saved(trial, number, "dm", {**DM, "WEIGHT": 160.0, "HEIGHT": 60.0})
    assert sorted(q["item"] for q in body["queries_opened"] if q["kind"] == "soft_range") == ["HEIGHT", "WEIGHT"]


# ------------------------------------------------------------------------------------------------ IE


def baseline(trial, number, *, dh=DH, prior_tx=PRIOR_TX, hsct_hx=None, ps=PS, dm=DM):
    saved(trial, number, "dm", dm)
    saved(trial, number, "dh", dh)
    saved(trial, number, "prior_tx", prior_tx)
    saved(trial, number, "hsct_hx", hsct_hx or {"HSCTOCC": "N"})
    saved(trial, number, "ps", ps)


def test_ie_good_path_is_eligible_without_queries(trial):
    number = trial.enrol()
    baseline(trial, number)
    body = saved(trial, number, "ie", IE)
    no_queries(body)
    assert body["data"]["IEELIG"] == "Y"


def test_ie_any_failed_criterion_makes_the_subject_not_eligible(trial):
    for item, answer in [("IEINCL01", "N"), ("IEINCL02", "N"), ("IEINCL03", "N"), ("IEINCL04", "N"), ("IEEXCL01", "Y"),
                         ("IEEXCL02", "Y"), ("IEEXCL03", "Y"), ("IEEXCL04", "Y"), ("IEEXCL05", "Y"), ("IEEXCL06", "Y")]:
        number = trial.enrol()
        data = {**IE, item: answer}
        if item == "IEINCL01":
            del data["IEINCL01DAT"]
        if item == "IEINCL02":
            del data["IEINCL02R"]
        assert saved(trial, number, "ie", data)["data"]["IEELIG"] == "N"


def test_ie_bad_values_are_422(trial, session):
    for change, pointer in [
        ({"IEINCL01DAT": None}, "/data/IEINCL01DAT"),                                  # required when INCL01 is met
        ({"IEINCL01": "N"}, "/data/IEINCL01DAT"),                                      # hidden when it is not
        ({"IEINCL02R": []}, "/data/IEINCL02R"),                                        # at least one definition
        ({"IEINCL02": "N"}, "/data/IEINCL02R"),
        ({"IEINCL02R": ["RELAPSE"]}, "/data/IEINCL02R"),
        ({"IEEXCL06": None}, "/data/IEEXCL06"),
        ({"IEEXCL03": {"missing": "UNK"}}, "/data/IEEXCL03"),                          # every criterion is answered
        ({"IEELIG": "Y"}, "/data/IEELIG"),
    ]:
        number = trial.enrol()
        rejected(trial, session, number, "ie", {**IE, **change}, pointer)


def test_ie_cd19_documented_too_long_before_registration_opens_a_query(trial):
    number = trial.enrol()
    warns_then_fixed(trial, number, "ie", {**IE, "IEINCL01DAT": "2026-08-01"}, IE, "IE_CD19_WINDOW", items=["IEINCL01DAT"])


def test_ie_relapsed_refractory_definition_not_supported_by_the_disease_history_opens_a_query(trial):
    for definition, dh_change, check in [
        ("REL2", {"NRELAPSE": 1}, "IE_REL2_DH"),
        ("REFRACT", {"REFRACT": "N"}, "IE_REFRACT_DH"),
        ("PHTKI", {"DXGENET": ["KMT2AR"]}, "IE_PHTKI_DH"),
        ("POSTHSCT", {"PRIORHSCT": 0}, "IE_POSTHSCT_HSCT_RECORDED"),
    ]:
        number = trial.enrol()
        dh = saved(trial, number, "dh", {**DH, **dh_change})
        body = saved(trial, number, "ie", {**IE, "IEINCL02R": [definition]})
        assert [q["item"] for q in opened(body, check)] == ["IEINCL02R"]
        # Correcting the disease history answers the eligibility query.
        fixed = {"REL2": {"NRELAPSE": 2}, "REFRACT": {"REFRACT": "Y"}, "PHTKI": {"DXGENET": ["BCRABL1"]},
                 "POSTHSCT": {"PRIORHSCT": 2}}[definition]
        assert trial.update(dh["id"], {**DH, **fixed}).status_code == 200
        assert trial.open_queries(number, check) == []


def post_hsct_subject(trial, planned_infusion, *, last_relapse="2026-09-15"):
    """A subject relapsing after two transplants (the latest on 2026-06-20) with a planned infusion date."""
    number = trial.enrol()
    saved(trial, number, "dh", {**DH, "PRIORHSCT": 2, "LASTREL_DAT": last_relapse})
    hsct = saved(trial, number, "hsct_hx", {"HSCTOCC": "Y", "HSCT": [HSCT_2, HSCT_1]})
    assert hsct["data"]["HSCTLDAT"] == "2026-06-20"
    aph = saved(trial, number, "aph", {"APHDAT": TODAY, "PLANINFDAT": planned_infusion}, event="APH", complete=False)
    return number, aph


def test_ie_relapse_post_hsct_more_than_the_minimum_interval_before_infusion_is_accepted(trial):
    number, _ = post_hsct_subject(trial, "2026-12-21")             # 6 months and a day after the HSCT
    no_queries(saved(trial, number, "ie", {**IE, "IEINCL02R": ["POSTHSCT"]}))


def test_ie_relapse_post_hsct_too_soon_before_infusion_opens_a_query_rechecked_when_the_plan_moves(trial):
    number, aph = post_hsct_subject(trial, "2026-12-01")
    body = saved(trial, number, "ie", {**IE, "IEINCL02R": ["POSTHSCT"]})
    assert [q["item"] for q in opened(body, "IE_POSTHSCT_INTERVAL")] == ["IEINCL02R"]
    # Moving the planned infusion (the anchor) re-runs the rule: exactly 6 months is not "more than 6 months".
    assert trial.update(aph["id"], {"APHDAT": TODAY, "PLANINFDAT": "2026-12-20"}, complete=False).status_code == 200
    assert [q["state"] for q in trial.queries(number) if q["check"] == "IE_POSTHSCT_INTERVAL"] == ["open"]
    assert trial.update(aph["id"], {"APHDAT": TODAY, "PLANINFDAT": "2027-01-10"}, complete=False).status_code == 200
    assert [q["state"] for q in trial.queries(number) if q["check"] == "IE_POSTHSCT_INTERVAL"] == ["answered"]


def test_ie_relapse_post_hsct_needs_the_relapse_after_the_transplant(trial):
    number, _ = post_hsct_subject(trial, "2027-01-10", last_relapse="2026-05-01")
    body = saved(trial, number, "ie", {**IE, "IEINCL02R": ["POSTHSCT"]})
    assert [q["item"] for q in opened(body, "IE_POSTHSCT_RELAPSE_AFTER_HSCT")] == ["IEINCL02R"]
    assert not opened(body, "IE_POSTHSCT_INTERVAL")


def test_ie_age_answer_against_demographics_opens_a_query(trial):
    number = trial.enrol()
    saved(trial, number, "dm", DM)
    warns_then_fixed(trial, number, "ie", {**IE, "IEINCL03": "N"}, IE, "IE_AGE_DM", items=["IEINCL03"])


def test_ie_age_met_for_a_subject_too_young_opens_a_query(trial):
    number = trial.enrol(birth_year=2026, birth_month=1)
    saved(trial, number, "dm", {**DM, "BRTHYY": 2026, "BRTHMO": 1, "WEIGHT": 8.5, "HEIGHT": 72.0})
    body = saved(trial, number, "ie", IE)
    assert [q["item"] for q in opened(body, "IE_AGE_DM")] == ["IEINCL03"]


def test_ie_performance_answer_against_the_lansky_score_opens_a_query(trial):
    number = trial.enrol()
    ps = saved(trial, number, "ps", {**PS, "LANSKY": 50})
    body = saved(trial, number, "ie", IE)
    assert [q["item"] for q in opened(body, "IE_LANSKY_PS")] == ["IEINCL04"]
    assert trial.update(ps["id"], PS).status_code == 200
    assert trial.open_queries(number, "IE_LANSKY_PS") == []


def test_ie_performance_answer_against_the_karnofsky_score_opens_a_query(trial):
    number = trial.enrol(birth_year=2009, birth_month=1)          # 17 at the assessment: Karnofsky
    saved(trial, number, "ps", {"PSDAT": TODAY, "KARNOFSKY": 70})
    warns_then_fixed(trial, number, "ie", {**IE, "IEINCL04": "N"}, IE, "IE_KARNOFSKY_PS", items=["IEINCL04"])


def test_ie_cns3_at_the_screening_assessment_opens_a_query(trial):
    number = trial.enrol()
    resp = saved(trial, number, "resp", {"RSDAT": TODAY, "CNSSIGN": "Y"}, complete=False)
    assert resp["data"]["CNSSTAT"] == "CNS3"
    warns_then_fixed(trial, number, "ie", IE, {**IE, "IEEXCL04": "Y"}, "IE_CNS3_RESP", items=["IEEXCL04"])


def test_ie_positive_pregnancy_test_opens_a_query(trial):
    number = trial.enrol()
    saved(trial, number, "preg", {**PREG, "PREGRES": "POS"})
    warns_then_fixed(trial, number, "ie", IE, {**IE, "IEEXCL06": "Y"}, "IE_PREG_TEST", items=["IEEXCL06"])


def test_ie_pregnancy_recorded_for_a_male_subject_opens_a_query(trial):
    number = trial.enrol(sex="M")
    warns_then_fixed(trial, number, "ie", {**IE, "IEEXCL06": "Y"}, IE, "IE_PREG_NOT_FEMALE", items=["IEEXCL06"])


def test_ie_not_eligible_subject_with_apheresis_opens_a_query(trial):
    number = trial.enrol()
    ie = saved(trial, number, "ie", {**IE, "IEEXCL03": "Y"})
    assert ie["data"]["IEELIG"] == "N" and not opened(ie, "IE_NOT_ELIGIBLE_TREATED")
    saved(trial, number, "aph", {"APHDAT": TODAY, "PLANINFDAT": "2027-01-10"}, event="APH", complete=False)
    [query] = trial.open_queries(number, "IE_NOT_ELIGIBLE_TREATED")
    assert query["form"] == "ie" and query["item"] == "IEELIG"
    corrected(trial, ie, IE, "IE_NOT_ELIGIBLE_TREATED")


# ------------------------------------------------------------------------------------------------ MH


def test_mh_good_path(trial):
    number = trial.enrol()
    no_queries(saved(trial, number, "mh", MH))
    no_queries(saved(trial, trial.enrol(), "mh", {"MHYN": "N"}))


def test_mh_bad_rows_are_422(trial, session):
    for data, pointer in [
        ({"MHYN": "Y"}, "/data/MH"),                                                   # at least one condition
        ({"MHYN": "N", "MH": MH["MH"]}, "/data/MH"),                                   # no rows without history
        ({"MHYN": "Y", "MH": [{**MH["MH"][0], "MHENDAT": "2020"}]}, "/data/MH/0/MHENDAT"),   # ongoing: no end date
        ({"MHYN": "Y", "MH": [{**MH["MH"][1], "MHENDAT": None}]}, "/data/MH/0/MHENDAT"),     # ended: end date needed
        ({"MHYN": "Y", "MH": [{**MH["MH"][1], "MHENDAT": "2020-12"}]}, "/data/MH/0/MHENDAT"),  # end before start
        ({"MHYN": "Y", "MH": [{**MH["MH"][0], "MHSTDAT": "2019-02-30"}]}, "/data/MH/0/MHSTDAT"),
        ({"MHYN": "Y", "MH": [{**MH["MH"][0], "MHCAT": "OTHER"}]}, "/data/MH/0/MHCAT"),
    ]:
        rejected(trial, session, trial.enrol(), "mh", data, pointer)


def test_mh_end_in_the_start_month_is_accepted(trial):
    row = {**MH["MH"][1], "MHSTDAT": "2021-03-15", "MHENDAT": "2021-03"}
    no_queries(saved(trial, trial.enrol(), "mh", {"MHYN": "Y", "MH": [row]}))


def test_mh_condition_before_birth_opens_a_query(trial):
    number = trial.enrol()
    bad = {"MHYN": "Y", "MH": [MH["MH"][0], {**MH["MH"][1], "MHSTDAT": "2016-02", "MHENDAT": "2016-03"}]}
    warns_then_fixed(trial, number, "mh", bad, MH, "MH_START_AFTER_BIRTH", items=["MH/1/MHSTDAT"])


def test_mh_free_text_identifiers_open_a_query(trial):
    for text in X12_TEXTS:
        number = trial.enrol()
        bad = {"MHYN": "Y", "MH": [{**MH["MH"][0], "MHTERM": text}]}
        warns_then_fixed(trial, number, "mh", bad, {"MHYN": "Y", "MH": [MH["MH"][0]]}, "MH_NO_IDENTIFIERS",
                         items=["MH/0/MHTERM"])


# ------------------------------------------------------------------------------------------------ DH


def test_dh_good_path(trial):
    no_queries(saved(trial, trial.enrol(), "dh", DH))
    no_queries(saved(trial, trial.enrol(), "dh", {**DH, "NRELAPSE": 0, "REFRACT": "Y", "LASTREL_DAT": None,
                                                  "LASTREL_SITE": None}))


def test_dh_bad_values_are_422(trial, session):
    for change, pointer in [
        ({"NRELAPSE": 0}, "/data/LASTREL_DAT"),                                        # no relapse: no relapse date
        ({"LASTREL_DAT": None}, "/data/LASTREL_DAT"),                                  # relapses: date needed
        ({"LASTREL_SITE": None}, "/data/LASTREL_SITE"),
        ({"NRELAPSE": 11}, "/data/NRELAPSE"),
        ({"LASTREL_DAT": "2023-04-30"}, "/data/LASTREL_DAT"),                          # before the diagnosis month
        ({"DXGENET": ["NONE", "IAMP21"]}, "/data/DXGENET"),
        ({"DXGENET": ["OTHER"]}, "/data/DXGENETO"),
        ({"DXGENETO": "t(1;19)"}, "/data/DXGENETO"),                                   # hidden without OTHER
        ({"DXDAT": "2023"}, "/data/DXDAT"),                                            # year and month needed
        ({"PRIORHSCT": -1}, "/data/PRIORHSCT"),
    ]:
        rejected(trial, session, trial.enrol(), "dh", {**DH, **change}, pointer)


def test_dh_diagnosis_before_birth_opens_a_query(trial):
    number = trial.enrol()
    warns_then_fixed(trial, number, "dh", {**DH, "DXDAT": "2016-03"}, DH, "DH_DX_AFTER_BIRTH", items=["DXDAT"])


def test_dh_bcr_abl1_without_a_tki_opens_a_query_answered_from_prior_therapy(trial):
    number = trial.enrol()
    prior = saved(trial, number, "prior_tx", PRIOR_TX)
    assert prior["data"]["CMTKIANY"] == "N"
    body = saved(trial, number, "dh", {**DH, "DXGENET": ["BCRABL1"]})
    assert [q["item"] for q in opened(body, "DH_BCRABL1_TKI")] == ["DXGENET"]
    tki = {**CHEMO_LINE, "CMTRT": "Imatinib with chemotherapy", "CMAGCLAS": ["CHEMO", "TKI"]}
    changed = trial.update(prior["id"], {"CMPRIOR": [tki, BLINA_LINE]})
    assert changed.get_json()["data"]["CMTKIANY"] == "Y"
    assert trial.open_queries(number, "DH_BCRABL1_TKI") == []


def test_dh_free_text_identifiers_open_a_query(trial):
    for text in X12_TEXTS:
        number = trial.enrol()
        data = {**DH, "DXGENET": ["OTHER"]}
        warns_then_fixed(trial, number, "dh", {**data, "DXGENETO": text}, {**data, "DXGENETO": "t(17;19)"},
                         "DH_GENET_NO_IDENTIFIERS", items=["DXGENETO"])


# ------------------------------------------------------------------------------------------------ PRIOR-TX


def test_prior_tx_good_path(trial):
    body = saved(trial, trial.enrol(), "prior_tx", PRIOR_TX)
    no_queries(body)
    assert body["data"]["CMTKIANY"] == "N"


def test_prior_tx_bad_rows_are_422(trial, session):
    for data, pointer in [
        ({}, "/data/CMPRIOR"),
        ({"CMPRIOR": [{**CHEMO_LINE, "CMENDAT": "2023-04"}]}, "/data/CMPRIOR/0/CMENDAT"),
        ({"CMPRIOR": [{**CHEMO_LINE, "CMAGCLAS": []}]}, "/data/CMPRIOR/0/CMAGCLAS"),
        ({"CMPRIOR": [{**CHEMO_LINE, "CMSTDAT": "2023"}]}, "/data/CMPRIOR/0/CMSTDAT"),
        ({"CMPRIOR": [CHEMO_LINE], "CMTKIANY": "Y"}, "/data/CMTKIANY"),
    ]:
        rejected(trial, session, trial.enrol(), "prior_tx", data, pointer)


def test_prior_tx_line_before_the_diagnosis_opens_a_query(trial):
    number = trial.enrol()
    saved(trial, number, "dh", DH)
    bad = {"CMPRIOR": [{**CHEMO_LINE, "CMSTDAT": "2023-03"}, BLINA_LINE]}
    warns_then_fixed(trial, number, "prior_tx", bad, PRIOR_TX, "PRIORTX_AFTER_DX", items=["CMPRIOR/0/CMSTDAT"])


def test_prior_tx_free_text_identifiers_open_a_query(trial):
    for text in X12_TEXTS:
        number = trial.enrol()
        warns_then_fixed(trial, number, "prior_tx", {"CMPRIOR": [CHEMO_LINE, {**BLINA_LINE, "CMTRT": text}]}, PRIOR_TX,
                         "PRIORTX_NO_IDENTIFIERS", items=["CMPRIOR/1/CMTRT"])


# ------------------------------------------------------------------------------------------------ HSCT-HX


def test_hsct_hx_good_path_derives_the_latest_transplant(trial):
    number = trial.enrol()
    saved(trial, number, "dh", {**DH, "PRIORHSCT": 2})
    body = saved(trial, number, "hsct_hx", {"HSCTOCC": "Y", "HSCT": [HSCT_2, HSCT_1]})
    no_queries(body)
    assert body["data"]["HSCTLDAT"] == "2026-06-20"
    none = saved(trial, trial.enrol(), "hsct_hx", {"HSCTOCC": "N"})
    assert "HSCTLDAT" not in none["data"] or none["data"]["HSCTLDAT"] is None


def test_hsct_hx_bad_values_are_422(trial, session):
    for data, pointer in [
        ({"HSCTOCC": "Y"}, "/data/HSCT"),
        ({"HSCTOCC": "N", "HSCT": [HSCT_1]}, "/data/HSCT"),
        ({"HSCTOCC": "Y", "HSCT": [{**HSCT_1, "HSCTDON": "AUTO"}]}, "/data/HSCT/0/HSCTDON"),
        ({"HSCTOCC": "Y", "HSCT": [{**HSCT_1, "PRSTDAT": "2025-03"}]}, "/data/HSCT/0/PRSTDAT"),
        ({"HSCTOCC": "Y", "HSCT": [HSCT_1], "HSCTLDAT": "2025-03-10"}, "/data/HSCTLDAT"),
    ]:
        rejected(trial, session, trial.enrol(), "hsct_hx", data, pointer)


def test_hsct_hx_count_against_the_disease_history_opens_a_query(trial):
    number = trial.enrol()
    saved(trial, number, "dh", {**DH, "PRIORHSCT": 2})
    warns_then_fixed(trial, number, "hsct_hx", {"HSCTOCC": "Y", "HSCT": [HSCT_1]}, {"HSCTOCC": "Y", "HSCT": [HSCT_1, HSCT_2]},
                     "HSCT_COUNT_DH", items=["HSCT"])


def test_hsct_hx_none_against_the_disease_history_opens_a_query(trial):
    number = trial.enrol()
    dh = saved(trial, number, "dh", {**DH, "PRIORHSCT": 1})
    body = saved(trial, number, "hsct_hx", {"HSCTOCC": "N"})
    assert [q["item"] for q in opened(body, "HSCT_NONE_DH")] == ["HSCTOCC"]
    assert trial.update(dh["id"], DH).status_code == 200
    assert trial.open_queries(number, "HSCT_NONE_DH") == []


def test_hsct_hx_transplant_before_the_diagnosis_opens_a_query(trial):
    number = trial.enrol()
    saved(trial, number, "dh", {**DH, "PRIORHSCT": 1})
    warns_then_fixed(trial, number, "hsct_hx", {"HSCTOCC": "Y", "HSCT": [{**HSCT_1, "PRSTDAT": "2023-04-10"}]},
                     {"HSCTOCC": "Y", "HSCT": [HSCT_1]}, "HSCT_AFTER_DX", items=["HSCT/0/PRSTDAT"])


# ------------------------------------------------------------------------------------------------ VS


def test_vs_good_path(trial):
    body = saved(trial, trial.enrol(), "vs", VS)
    no_queries(body)
    assert body["data"]["VSHYPOT"] == "N"


def test_vs_impossible_values_are_422(trial, session):
    for change, pointer in [
        ({"TEMP": 50}, "/data/TEMP"),
        ({"TEMP": 33.9}, "/data/TEMP"),
        ({"OXYSAT": 101}, "/data/OXYSAT"),
        ({"HR": 0}, "/data/HR"),
        ({"RESP": 130}, "/data/RESP"),
        ({"SYSBP": 60, "DIABP": 60}, "/data/SYSBP"),
        ({"SYSBP": 60, "DIABP": 70}, "/data/DIABP"),
        ({"VSDAT": "2026-11-21"}, "/data/VSDAT"),                                      # not in the future
        ({"VSHYPOT": "N"}, "/data/VSHYPOT"),
    ]:
        rejected(trial, session, trial.enrol(), "vs", {**VS, **change}, pointer)


def test_vs_implausible_values_open_soft_range_queries(trial):
    for item, value in [("TEMP", 41.0), ("TEMP", 34.5), ("HR", 210), ("SYSBP", 190), ("DIABP", 25), ("RESP", 70),
                        ("OXYSAT", 88), ("WEIGHT", 160.0), ("HEIGHT", 215.0)]:
        body = saved(trial, trial.enrol(), "vs", {**VS, item: value})
        assert [(q["item"], q["kind"]) for q in body["queries_opened"]] == [(item, "soft_range")]


def test_vs_paediatric_hypotension_flag_by_age(trial):
    for birth_year, birth_month, sbp, flag in [
        (2016, 4, 89, "Y"), (2016, 4, 90, "N"),          # 10 years: below 70 + 2 x 10 = 90
        (2023, 5, 75, "Y"), (2023, 5, 76, "N"),          # 3 years: below 76
        (2025, 6, 71, "Y"), (2025, 6, 72, "N"),          # 1 year: below 72
        (2012, 1, 89, "Y"), (2012, 1, 90, "N"),          # 14 years: below 90
    ]:
        number = trial.enrol(birth_year=birth_year, birth_month=birth_month)
        body = saved(trial, number, "vs", {**VS, "SYSBP": sbp, "DIABP": 50})
        assert body["data"]["VSHYPOT"] == flag, (birth_year, birth_month, sbp)


def test_vs_date_outside_the_visit_window_opens_a_query(trial):
    number = trial.enrol()
    warns_then_fixed(trial, number, "vs", {**VS, "VSDAT": "2026-11-19"}, VS, "VS_VISIT_WINDOW", items=["VSDAT"])


# ------------------------------------------------------------------------------------------------ PE


def test_pe_good_path(trial):
    no_queries(saved(trial, trial.enrol(), "pe", PE))


def test_pe_bad_values_are_422(trial, session):
    for data, pointer in [
        ({"PEDAT": TODAY}, "/data/PEEXAM"),
        ({**PE, "PEEXAM": [PE["PEEXAM"][0], {"PETESTCD": "GENERAL", "PEORRES": "NORMAL"}]}, "/data/PEEXAM"),   # twice
        ({**PE, "PEEXAM": [{"PETESTCD": "SKIN", "PEORRES": "NORMAL", "PEDESC": "Rash"}]}, "/data/PEEXAM/0/PEDESC"),
        ({**PE, "PEEXAM": [{"PETESTCD": "SKIN", "PEORRES": "ABNORMAL"}]}, "/data/PEEXAM/0/PEDESC"),
        ({**PE, "PEEXAM": [{"PETESTCD": "SKIN", "PEORRES": "ABNORMAL", "PEDESC": "Rash"}]}, "/data/PEEXAM/0/PECLSIG"),
    ]:
        rejected(trial, session, trial.enrol(), "pe", data, pointer)


def test_pe_free_text_identifiers_open_a_query(trial):
    for text in X12_TEXTS:
        number = trial.enrol()
        bad = {**PE, "PEEXAM": [PE["PEEXAM"][0], {**PE["PEEXAM"][1], "PEDESC": text}]}
        warns_then_fixed(trial, number, "pe", bad, PE, "PE_NO_IDENTIFIERS", items=["PEEXAM/1/PEDESC"])


def test_pe_date_outside_the_visit_window_opens_a_query(trial):
    number = trial.enrol()
    warns_then_fixed(trial, number, "pe", {**PE, "PEDAT": "2026-11-19"}, PE, "PE_VISIT_WINDOW", items=["PEDAT"])


# ------------------------------------------------------------------------------------------------ PS


def test_ps_lansky_under_the_cut_off_age_and_karnofsky_from_it(trial, session):
    child = trial.enrol()                                         # 10 years
    rejected(trial, session, child, "ps", {"PSDAT": TODAY, "KARNOFSKY": 80}, "/data/KARNOFSKY")
    rejected(trial, session, child, "ps", {"PSDAT": TODAY}, "/data/LANSKY")
    no_queries(saved(trial, child, "ps", PS))
    adolescent = trial.enrol(birth_year=2010, birth_month=11)     # 16 years exactly at the assessment
    rejected(trial, session, adolescent, "ps", {"PSDAT": TODAY, "LANSKY": 80}, "/data/LANSKY")
    no_queries(saved(trial, adolescent, "ps", {"PSDAT": TODAY, "KARNOFSKY": 80}))
    younger = trial.enrol(birth_year=2010, birth_month=12)        # 15 years 11 months: still Lansky
    no_queries(saved(trial, younger, "ps", PS))


def test_ps_score_is_0_to_100_in_steps_of_10(trial, session):
    for data, pointer in [
        ({"PSDAT": TODAY, "LANSKY": 55}, "/data/LANSKY"),
        ({"PSDAT": TODAY, "LANSKY": 110}, "/data/LANSKY"),
        ({"PSDAT": TODAY, "LANSKY": -10}, "/data/LANSKY"),
    ]:
        rejected(trial, session, trial.enrol(), "ps", data, pointer)
        adult = trial.enrol(birth_year=2005, birth_month=1)
        rejected(trial, session, adult, "ps", {"PSDAT": TODAY, "KARNOFSKY": data["LANSKY"]}, "/data/KARNOFSKY")


def test_ps_lansky_below_the_threshold_opens_a_query(trial):
    number = trial.enrol()
    warns_then_fixed(trial, number, "ps", {**PS, "LANSKY": 50}, {**PS, "LANSKY": 60}, "PS_LANSKY_MIN", items=["LANSKY"])


def test_ps_karnofsky_below_the_threshold_opens_a_query(trial):
    number = trial.enrol(birth_year=2005, birth_month=1)
    warns_then_fixed(trial, number, "ps", {"PSDAT": TODAY, "KARNOFSKY": 40}, {"PSDAT": TODAY, "KARNOFSKY": 70},
                     "PS_KARNOFSKY_MIN", items=["KARNOFSKY"])


def test_ps_date_outside_the_visit_window_opens_a_query(trial):
    number = trial.enrol()
    warns_then_fixed(trial, number, "ps", {**PS, "PSDAT": "2026-11-19"}, PS, "PS_VISIT_WINDOW", items=["PSDAT"])


# ------------------------------------------------------------------------------------------------ PREG


def test_preg_good_path_for_a_female_of_child_bearing_potential(trial):
    no_queries(saved(trial, trial.enrol(), "preg", PREG))
    no_queries(saved(trial, trial.enrol(), "preg", {"PREGCBP": "N"}))


def test_preg_items_are_hidden_for_male_subjects(trial, session):
    male = trial.enrol(sex="M")
    rejected(trial, session, male, "preg", {"PREGCBP": "Y"}, "/data/PREGCBP")
    rejected(trial, session, male, "preg", PREG, "/data/PREGCBP", "/data/PREGRES")
    body = saved(trial, male, "preg", {})
    assert body["status"] == "complete"


def test_preg_bad_values_are_422(trial, session):
    for data, pointer in [
        ({}, "/data/PREGCBP"),
        ({"PREGCBP": "Y"}, "/data/PREGRES"),
        ({"PREGCBP": "N", "PREGRES": "NEG"}, "/data/PREGRES"),
        ({**PREG, "PREGRES": "POSITIVE"}, "/data/PREGRES"),
    ]:
        rejected(trial, session, trial.enrol(), "preg", data, pointer)


def test_preg_positive_test_opens_a_query(trial):
    number = trial.enrol()
    warns_then_fixed(trial, number, "preg", {**PREG, "PREGRES": "POS"}, PREG, "PREG_POSITIVE", items=["PREGRES"])
