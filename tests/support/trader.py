"""A trader's view of the Platform API for live-stack tests: one tenant, plain HTTP calls.

The user holds every role, so a test can also put its tenant's risk policy and engage kill
switches, the way a risk officer would.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from tests.support.stack import LiveStack


def new_key(prefix: str = "k") -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


@dataclass
class Trader:
    client: httpx.Client
    tenant: str

    @classmethod
    def open(cls, stack: LiveStack, tenant: str) -> Trader:
        return cls(stack.client(stack.headers(tenant=tenant)), tenant)

    def close(self) -> None:
        self.client.close()

    def post(
        self, path: str, body: dict[str, Any] | None, key: str | None = None, **headers: str
    ) -> httpx.Response:
        extra = dict(headers)
        if key:
            extra["Idempotency-Key"] = key
        if body is None:
            return self.client.post(path, headers=extra)
        return self.client.post(path, json=body, headers=extra)

    def put_policy(self, policy: dict[str, Any], reason: str = "execution tests") -> int:
        """Puts a risk-policy.v1 for the tenant (the user holds risk-officer); its version."""
        response = self.client.put("/v1/risk/policy", json={"policy": policy, "reason": reason})
        assert response.status_code in (200, 201), response.text
        version: int = response.json()["version"]
        return version

    def engage(self, scope: str, scope_id: str, reason: str = "test halt") -> dict[str, Any]:
        """Engages a kill switch by hand (risk-officer), as an operator would."""
        response = self.client.post(
            f"/v1/risk/kill-switches/{scope}/{scope_id}/actions/engage", json={"reason": reason}
        )
        assert response.status_code == 200, response.text
        switch: dict[str, Any] = response.json()
        return switch

    def kill_switch(self, scope: str, scope_id: str) -> dict[str, Any]:
        response = self.client.get(f"/v1/risk/kill-switches/{scope}/{scope_id}")
        assert response.status_code == 200, response.text
        switch: dict[str, Any] = response.json()
        return switch

    def deploy(self, account: str, capital: str = "100000", **fields: Any) -> dict[str, Any]:
        body = {
            "strategyId": "trend-1",
            "accountId": account,
            "instruments": ["BTC-USD", "ETH-USD"],
            "capitalAllocation": capital,
            "mode": "paper",
            **fields,
        }
        response = self.post("/v1/deployments", body, new_key("dep"))
        assert response.status_code == 201, response.text
        deployment: dict[str, Any] = response.json()
        return deployment

    def mark(self, instrument: str, price: str) -> dict[str, Any]:
        response = self.post(
            "/v1/sandbox/marks", {"marks": [{"instrument": instrument, "price": price}]}
        )
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    def order_body(
        self,
        deployment_id: str,
        side: str,
        quantity: str,
        instrument: str = "BTC-USD",
        **fields: Any,
    ) -> dict[str, Any]:
        return {
            "deploymentId": deployment_id,
            "instrument": instrument,
            "side": side,
            "type": "market",
            "quantity": quantity,
            **fields,
        }

    def order(
        self,
        deployment_id: str,
        side: str,
        quantity: str,
        key: str | None = None,
        headers: dict[str, str] | None = None,
        **fields: Any,
    ) -> httpx.Response:
        body = self.order_body(deployment_id, side, quantity, **fields)
        return self.post("/v1/orders", body, key or new_key("ord"), **(headers or {}))

    def filled(self, deployment_id: str, side: str, quantity: str, **fields: Any) -> dict[str, Any]:
        response = self.order(deployment_id, side, quantity, **fields)
        assert response.status_code == 201, response.text
        order: dict[str, Any] = response.json()
        assert order["status"] == "filled", order
        return order

    def deployment(self, deployment_id: str) -> dict[str, Any]:
        response = self.client.get(f"/v1/deployments/{deployment_id}")
        assert response.status_code == 200, response.text
        deployment: dict[str, Any] = response.json()
        return deployment

    def orders(self, deployment_id: str) -> list[dict[str, Any]]:
        response = self.client.get("/v1/orders", params={"deploymentId": deployment_id})
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["orders"]
        return items

    def stop(
        self, deployment_id: str, flatten: bool = False, key: str | None = None
    ) -> httpx.Response:
        return self.post(
            f"/v1/deployments/{deployment_id}/actions/stop",
            {"flatten": flatten, "reason": "test stop"},
            key,
        )

    def position(self, deployment_id: str, instrument: str = "BTC-USD") -> dict[str, Any]:
        for position in self.deployment(deployment_id)["positions"]:
            if position["instrument"] == instrument:
                found: dict[str, Any] = position
                return found
        return {"instrument": instrument, "quantity": "0"}
