"""/readyz follows the gRPC health of every service process."""

from __future__ import annotations

from tests.support.stack import LiveStack, wait_for


def test_readyz_names_a_killed_service_and_recovers(private_stack: LiveStack) -> None:
    with private_stack.client() as client:
        assert client.get("/readyz").json()["status"] == "ready"
        private_stack.stack.processes["risk"].kill()

        response = client.get("/readyz")
        assert response.status_code == 503
        body = response.json()
        assert body["status"] == "unavailable"
        assert body["services"]["risk"] == "UNREACHABLE"
        assert body["services"]["audit"] == "SERVING"
        # What an orchestrator routes on: this gateway still serves the routes risk is not
        # needed for, and answers 503 on the others by itself.
        scoped = client.get("/readyz?scope=gateway")
        assert scoped.status_code == 200
        assert scoped.json() == {**body, "status": "ready", "scope": "gateway", "database": "UP"}
        refused = client.get("/readyz?scope=nonsense")
        assert refused.status_code == 400
        assert refused.json()["code"] == "VALIDATION_FAILED"

        proc = private_stack.stack.processes["risk"]
        proc.start()
        proc.wait_ready()
        wait_for(lambda: client.get("/readyz").status_code == 200, timeout=15)


def test_side_effects_fail_closed_while_risk_is_down(private_stack: LiveStack) -> None:
    private_stack.stack.processes["risk"].kill()
    with private_stack.client(private_stack.headers()) as client:
        response = client.post(
            "/v1/deployments",
            json={
                "strategyId": "s",
                "accountId": "a",
                "instruments": ["ETH-USD"],
                "capitalAllocation": "1",
            },
            headers={"Idempotency-Key": "risk-down-0001"},
        )
    assert response.status_code == 503, response.text
    assert response.json()["code"] == "RISK_UNAVAILABLE"


def test_sigterm_drains_and_exits_cleanly(private_stack: LiveStack) -> None:
    for name in ("conversation", "execution", "risk", "audit"):
        assert private_stack.stack.processes[name].stop() == 0
