from monitoring.conftest import MONITORING_ACCOUNTS


def test_every_monitoring_account_is_signed_in(monitoring):
    for name in MONITORING_ACCOUNTS:
        response = monitoring.client.get("/api/v1/me", headers=monitoring.headers[name])
        assert response.status_code == 200, (name, response.get_json())
