"""The chain-of-identity product ID (COI, `identifying` in aph, mfg and inf) over the API: manufacturing reads
the COI it enters, the site and the data manager read it, everyone else gets it withheld, and FHIR never
carries it."""

from trial.test_treatment_forms import APH, MFG

WITHHELD = {"withheld": "identifying"}

COI, COI_2 = "ARI-314159", "ARI-271828"


def test_the_chain_of_identity_reaches_its_writers_and_the_site_only(trial):
    number = trial.enrol(consent_date="2026-10-01")
    aph = trial.saved(number, "aph", {**APH, "COI": COI}, event="APH")
    mfg = trial.saved(number, "mfg", {**MFG, "COI": COI}, event="MFG", role="manufacturing")
    assert trial.update(mfg["id"], {**MFG, "COI": COI_2}, role="manufacturing").status_code == 200
    # Manufacturing reads the COI it enters; the site and the data manager read both.
    assert trial.entry(mfg["id"], role="manufacturing")["data"]["COI"] == COI_2
    listed = trial.client.get(f"/api/v1/subjects/{number}/entries", headers=trial.headers["manufacturing"]).get_json()
    assert [e["data"]["COI"] for e in listed] == [COI_2]
    for role in ("investigator_ES01", "coordinator_ES01", "data_manager"):
        assert trial.entry(aph["id"], role=role)["data"]["COI"] == COI
        assert trial.entry(mfg["id"], role=role)["data"]["COI"] == COI_2
    # Monitors and safety get it withheld, and FHIR (statistician, data manager) never carries it.
    for role in ("monitor_ES01", "safety"):
        for entry in (aph, mfg):
            response = trial.client.get(f"/api/v1/entries/{entry['id']}", headers=trial.headers[role])
            assert response.get_json()["data"]["COI"] == WITHHELD
            assert COI.encode() not in response.get_data() and COI_2.encode() not in response.get_data()
        audit = trial.client.get(f"/api/v1/subjects/{number}/audit", headers=trial.headers[role])
        assert audit.status_code == 200 and COI.encode() not in audit.get_data() and COI_2.encode() not in audit.get_data()
    for role in ("statistician", "data_manager"):
        bundle = trial.client.get(f"/fhir/Patient/{number}/$everything", headers=trial.headers[role])
        assert bundle.status_code == 200 and COI.encode() not in bundle.get_data() and COI_2.encode() not in bundle.get_data()
