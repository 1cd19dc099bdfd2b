# Generated from aio.py by clients/python/generate_sync.py (unasync): do not edit.
# Change aio.py, then run `uv run --frozen python clients/python/generate_sync.py`.
"""`Gate4Client`: the synchronous Platform API client (httpx).

The same methods as `AsyncGate4Client`, without `await`: this module is aio.py, unasynced.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import httpx

from gate4_client import calls
from gate4_client._core import (
    Call,
    ClientConfig,
    ClientCore,
    Credentials,
    RetryPolicy,
    SyncSleep,
    config_from_env,
    describe_transport_error,
    new_request_id,
)
from gate4_client.errors import TransportError
from gate4_client.models import (
    AuditEventPage,
    AuditFilters,
    ChainVerification,
    Deployment,
    DeploymentList,
    FeedMarksResult,
    HealthStatus,
    KillSwitch,
    KillSwitchList,
    Mark,
    NotificationList,
    Order,
    OrderList,
    PolicyValidation,
    PolicyVersion,
    PolicyVersionList,
    ReadinessStatus,
    Session,
    Turn,
)

T = TypeVar("T")


class Gate4Client:
    """Calls the Platform API gateway; every method is one operation of the contract.

    Each call sends an `X-Request-Id` (the caller's `request_id`, or a fresh one) and keeps it
    across retries, so every attempt and every audit record of the call share one id. Error
    answers raise a subclass of `gate4_client.ApiError`; no answer raises `TransportError`.
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        credentials: Credentials | None = None,
        channel: str | None = None,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
        config: ClientConfig | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: SyncSleep = time.sleep,
    ) -> None:
        base = config or ClientConfig()
        self.config = ClientConfig(
            base_url=base_url or base.base_url,
            credentials=credentials or base.credentials,
            channel=channel or base.channel,
            timeout=base.timeout if timeout is None else timeout,
            retry=retry or base.retry,
        )
        self._core = ClientCore(self.config)
        # Redirects are never followed: credentials must not ride along to another host.
        self._http = httpx.Client(
            timeout=self.config.timeout, transport=transport, follow_redirects=False
        )
        self._sleep = sleep

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
        **overrides: Any,
    ) -> Gate4Client:
        """A client configured from GATE4_* (see `gate4_client.config_from_env`)."""
        return cls(config=config_from_env(env, **overrides), transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Gate4Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def send(self, call: Call[T], *, request_id: str | None = None) -> T:
        """Performs one call, retrying it by the client's RetryPolicy."""
        rid = request_id or new_request_id()
        prepared = self._core.prepare(call, rid)
        attempt = 0
        while True:
            try:
                response = self._http.request(
                    prepared.method,
                    prepared.url,
                    params=prepared.params,
                    headers=prepared.headers,
                    content=prepared.content,
                )
            except httpx.TransportError as exc:
                delay = self._core.retry_after_exception(call, exc, attempt)
                if delay is None:
                    raise TransportError(
                        describe_transport_error(exc, self.config.base_url),
                        request_id=rid,
                        method=prepared.method,
                        url=prepared.url,
                    ) from exc
            else:
                delay = self._core.retry_after_response(call, response, attempt)
                if delay is None:
                    return self._core.parse(call, response, rid)
            self._sleep(delay)
            attempt += 1

    # -- operations -----------------------------------------------------------------------

    def healthz(self, *, request_id: str | None = None) -> HealthStatus:
        return self.send(calls.healthz(), request_id=request_id)

    def readyz(self, *, request_id: str | None = None) -> ReadinessStatus:
        return self.send(calls.readyz(), request_id=request_id)

    def metrics(self, *, request_id: str | None = None) -> str:
        return self.send(calls.metrics(), request_id=request_id)

    def openapi_document(self, *, request_id: str | None = None) -> dict[str, Any]:
        return self.send(calls.openapi_document(), request_id=request_id)

    # -- conversations --------------------------------------------------------------------

    def create_session(
        self,
        *,
        topic: str,
        channel: str = "openclaw",
        metadata: Mapping[str, Any] | None = None,
        request_id: str | None = None,
    ) -> Session:
        call = calls.create_session(topic=topic, channel=channel, metadata=metadata)
        return self.send(call, request_id=request_id)

    def get_session(self, session_id: str, *, request_id: str | None = None) -> Session:
        return self.send(calls.get_session(session_id), request_id=request_id)

    def create_turn(
        self,
        session_id: str,
        message: str,
        *,
        notifications_opt_in: bool | None = None,
        idempotency_key: str | None = None,
        request_id: str | None = None,
    ) -> Turn:
        call = calls.create_turn(
            session_id,
            message,
            notifications_opt_in=notifications_opt_in,
            idempotency_key=idempotency_key,
        )
        return self.send(call, request_id=request_id)

    def list_notifications(
        self,
        session_id: str,
        *,
        include_delivered: bool | None = None,
        request_id: str | None = None,
    ) -> NotificationList:
        call = calls.list_notifications(session_id, include_delivered=include_delivered)
        return self.send(call, request_id=request_id)

    # -- deployments ----------------------------------------------------------------------

    def create_deployment(
        self,
        *,
        strategy_id: str,
        account_id: str,
        instruments: Sequence[str],
        capital_allocation: str,
        mode: str | None = None,
        idempotency_key: str | None = None,
        request_id: str | None = None,
    ) -> Deployment:
        call = calls.create_deployment(
            strategy_id=strategy_id,
            account_id=account_id,
            instruments=instruments,
            capital_allocation=capital_allocation,
            mode=mode,
            idempotency_key=idempotency_key,
        )
        return self.send(call, request_id=request_id)

    def list_deployments(
        self,
        *,
        account_id: str | None = None,
        state: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        request_id: str | None = None,
    ) -> DeploymentList:
        call = calls.list_deployments(
            account_id=account_id, state=state, limit=limit, cursor=cursor
        )
        return self.send(call, request_id=request_id)

    def get_deployment(self, deployment_id: str, *, request_id: str | None = None) -> Deployment:
        return self.send(calls.get_deployment(deployment_id), request_id=request_id)

    def stop_deployment(
        self,
        deployment_id: str,
        *,
        flatten: bool | None = None,
        reason: str | None = None,
        idempotency_key: str | None = None,
        request_id: str | None = None,
    ) -> Deployment:
        call = calls.stop_deployment(
            deployment_id, flatten=flatten, reason=reason, idempotency_key=idempotency_key
        )
        return self.send(call, request_id=request_id)

    # -- orders ---------------------------------------------------------------------------

    def submit_order(
        self,
        *,
        deployment_id: str,
        instrument: str,
        side: str,
        type: str,
        quantity: str,
        limit_price: str | None = None,
        reduce_only: bool | None = None,
        client_order_id: str | None = None,
        idempotency_key: str | None = None,
        request_id: str | None = None,
    ) -> Order:
        call = calls.submit_order(
            deployment_id=deployment_id,
            instrument=instrument,
            side=side,
            type=type,
            quantity=quantity,
            limit_price=limit_price,
            reduce_only=reduce_only,
            client_order_id=client_order_id,
            idempotency_key=idempotency_key,
        )
        return self.send(call, request_id=request_id)

    def list_orders(
        self,
        *,
        deployment_id: str | None = None,
        status: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        request_id: str | None = None,
    ) -> OrderList:
        call = calls.list_orders(
            deployment_id=deployment_id, status=status, limit=limit, cursor=cursor
        )
        return self.send(call, request_id=request_id)

    def get_order(self, order_id: str, *, request_id: str | None = None) -> Order:
        return self.send(calls.get_order(order_id), request_id=request_id)

    def cancel_order(
        self, order_id: str, *, reason: str | None = None, request_id: str | None = None
    ) -> Order:
        return self.send(calls.cancel_order(order_id, reason=reason), request_id=request_id)

    def feed_marks(
        self, marks: Sequence[Mark], *, request_id: str | None = None
    ) -> FeedMarksResult:
        return self.send(calls.feed_marks(marks), request_id=request_id)

    # -- risk policy ----------------------------------------------------------------------

    def get_policy(
        self, *, account_id: str | None = None, request_id: str | None = None
    ) -> PolicyVersion:
        return self.send(calls.get_policy(account_id=account_id), request_id=request_id)

    def put_policy(
        self,
        policy: Mapping[str, Any],
        *,
        reason: str,
        account_id: str | None = None,
        request_id: str | None = None,
    ) -> PolicyVersion:
        call = calls.put_policy(policy, reason=reason, account_id=account_id)
        return self.send(call, request_id=request_id)

    def validate_policy(
        self, policy: Mapping[str, Any], *, request_id: str | None = None
    ) -> PolicyValidation:
        return self.send(calls.validate_policy(policy), request_id=request_id)

    def list_policy_versions(
        self,
        *,
        account_id: str | None = None,
        limit: int | None = None,
        request_id: str | None = None,
    ) -> PolicyVersionList:
        call = calls.list_policy_versions(account_id=account_id, limit=limit)
        return self.send(call, request_id=request_id)

    # -- kill switches --------------------------------------------------------------------

    def list_kill_switches(
        self, *, engaged_only: bool | None = None, request_id: str | None = None
    ) -> KillSwitchList:
        call = calls.list_kill_switches(engaged_only=engaged_only)
        return self.send(call, request_id=request_id)

    def get_kill_switch(
        self, scope: str, scope_id: str, *, request_id: str | None = None
    ) -> KillSwitch:
        return self.send(calls.get_kill_switch(scope, scope_id), request_id=request_id)

    def engage_kill_switch(
        self,
        scope: str,
        scope_id: str,
        *,
        reason: str,
        flatten: bool = False,
        request_id: str | None = None,
    ) -> KillSwitch:
        """Halts new risk in scope (new orders and deployments refused, open orders
        cancelled); closes positions too only with `flatten`."""
        call = calls.engage_kill_switch(scope, scope_id, reason=reason, flatten=flatten)
        return self.send(call, request_id=request_id)

    def release_kill_switch(
        self, scope: str, scope_id: str, *, reason: str, request_id: str | None = None
    ) -> KillSwitch:
        call = calls.release_kill_switch(scope, scope_id, reason=reason)
        return self.send(call, request_id=request_id)

    # -- audit ----------------------------------------------------------------------------

    def query_audit_events(
        self,
        filters: AuditFilters | None = None,
        *,
        limit: int | None = None,
        cursor: str | None = None,
        request_id: str | None = None,
    ) -> AuditEventPage:
        call = calls.query_audit_events(filters, limit=limit, cursor=cursor)
        return self.send(call, request_id=request_id)

    def verify_audit_chain(self, *, request_id: str | None = None) -> ChainVerification:
        return self.send(calls.verify_audit_chain(), request_id=request_id)
