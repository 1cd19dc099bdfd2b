"""The trading-operations assistant: deterministic, rule-based, and only a platform client.

It reads one message, the session's context memory and live platform state, and answers
with text, structured actions and the next memory. No model is called; a model provider
would sit behind an adapter here and never be reachable from clients. Same message, same
memory, same platform state: same reply and same memory. Unknown input gets help, not an
error, and a failed platform call becomes a refused action with its code, not a failed turn.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from gate4.conversation.v1 import conversation_pb2
from gate4.execution.v1 import execution_pb2
from services.conversation import memory as mem
from services.conversation.platform import Platform
from services.runtime import correlation, errors, outcomes, roles

ID = r"[A-Za-z0-9_-]{1,64}"

HELP = (
    "I can help with: 'status' (all deployments), 'status of <deploymentId>', "
    "'order <orderId>' (and why it was rejected), 'kill switch', 'risk policy', "
    "'stop <deploymentId>' or 'stop <deploymentId> and flatten' (I ask you to confirm first), "
    "and 'notifications on' / 'notifications off'."
)


@dataclass
class Outcome:
    text: str
    memory: mem.Memory
    actions: list[conversation_pb2.Action] = field(default_factory=list)
    #: Set when the turn changes the session's notification opt-in.
    notifications_opt_in: bool | None = None


@dataclass(frozen=True)
class TurnInput:
    message: str
    memory: mem.Memory
    #: Idempotency key of the platform command a confirmation executes (derived from the turn).
    command_key: str


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower())


def _money(value: str) -> str:
    try:
        return f"{Decimal(value):,.2f}" if value else "n/a"
    except InvalidOperation:
        return value


def _deployment_line(d: execution_pb2.Deployment) -> str:
    switch = ", kill switch ENGAGED" if d.kill_switch.engaged else ""
    degraded = ", degraded" if d.degraded else ""
    return (
        f"{d.deployment_id} ({d.strategy_id} on {d.account_id}): {d.state}{degraded}{switch}; "
        f"equity {_money(d.equity)}, unrealised P&L {_money(d.unrealized_pnl)}, "
        f"drawdown {d.drawdown or '0'}"
    )


def _refused(
    kind: str, error: errors.Gate4Error, deployment_id: str = ""
) -> conversation_pb2.Action:
    return conversation_pb2.Action(
        kind=kind,
        status="refused",
        deployment_id=deployment_id,
        request_id=correlation.current().request_id,
        outcome=error.outcome or error.error_code(),
        detail=error.detail,
    )


#: Intents answered from the message and the session's memory alone.
LOCAL_INTENTS = frozenset({"cancel", "notifications", "help", "unknown"})


def _route(message: str) -> tuple[str, re.Match[str] | None]:
    """The turn's intent, first match wins, with the match its answer reads."""
    text = _norm(message)
    if re.fullmatch(r"(yes|y|confirm|confirmed|go ahead|do it)[.!]?", text):
        return "confirm", None
    if re.fullmatch(r"(no|n|cancel|abort|never ?mind)[.!]?", text):
        return "cancel", None
    if match := re.search(r"notifications? (on|off)|(enable|disable) notifications", text):
        return "notifications", match
    stop = rf"\bstop (?:deployment )?({ID}|it|this)( and flatten| with flatten)?"
    if match := re.search(stop, message, flags=re.IGNORECASE):
        return "stop", match
    if match := re.search(rf"\border ({ID})", message, flags=re.IGNORECASE):
        return "order", match
    if re.search(r"kill[ -]?switch", text):
        return "kill_switches", None
    if re.search(r"\b(risk )?(policy|policies|limits)\b", text):
        return "policy", None
    if match := re.search(r"\b(dep_[A-Za-z0-9_-]{1,60})", message):
        return "deployment", match
    if re.search(r"\b(status|deployments?|positions|overview)\b", text):
        return "deployments", None
    if re.fullmatch(r"(help|\?|what can you do\??|hi|hello)", text):
        return "help", None
    return "unknown", None


def _without_proposal(memory: mem.Memory) -> mem.Memory:
    """Anything but a yes or no drops a pending proposal: a confirmation must answer it
    directly."""
    return (
        mem.evolve(memory, pendingConfirmation=None)
        if memory.get("pendingConfirmation")
        else memory
    )


class Assistant:
    def __init__(self, platform: Platform) -> None:
        self.platform = platform

    def local(self, turn: TurnInput) -> Outcome | None:
        """The answer when it needs nothing from the platform (help, notifications, a
        cancelled proposal, not understood), else None. Pure: the same input gives the
        same answer, so it can be worked out inside the write that records the turn."""
        intent, match = _route(turn.message)
        if intent not in LOCAL_INTENTS:
            return None
        if intent == "cancel":
            return self._cancel(turn.memory)
        memory = _without_proposal(turn.memory)
        if intent == "notifications":
            assert match is not None
            return self._notifications(
                memory, (match.group(1) or match.group(2)) in ("on", "enable")
            )
        if intent == "help":
            return Outcome(HELP, mem.evolve(memory, lastIntent="help"))
        return Outcome(
            "I did not understand that. " + HELP, mem.evolve(memory, lastIntent="unknown")
        )

    async def respond(self, turn: TurnInput) -> Outcome:
        answered = self.local(turn)
        if answered is not None:
            return answered
        intent, match = _route(turn.message)
        if intent == "confirm":
            return await self._confirm(turn)
        memory = _without_proposal(turn.memory)
        if intent == "deployments":
            return await self._deployments(memory)
        if intent == "kill_switches":
            return await self._kill_switches(memory)
        if intent == "policy":
            return await self._policy(memory)
        assert match is not None
        if intent == "stop":
            target = match.group(1)
            if target.lower() in ("it", "this"):
                target = target.lower()
            return await self._propose_stop(memory, target, bool(match.group(2)), turn)
        if intent == "order":
            return await self._order(memory, match.group(1))
        return await self._deployment(memory, match.group(1))

    # -- reads -----------------------------------------------------------------------------

    async def _deployments(self, memory: mem.Memory) -> Outcome:
        try:
            items = await self.platform.deployments()
        except errors.Gate4Error as exc:
            return Outcome(
                f"I could not list deployments: {exc.detail}",
                memory,
                [_refused("list_deployments", exc)],
            )
        memory = mem.evolve(memory, lastIntent="status")
        if not items:
            return Outcome("There are no deployments yet.", memory)
        lines = "\n".join(f"- {_deployment_line(d)}" for d in items)
        return Outcome(f"{len(items)} deployment(s):\n{lines}", memory)

    async def _deployment(self, memory: mem.Memory, deployment_id: str) -> Outcome:
        try:
            d = await self.platform.deployment(deployment_id)
        except errors.Gate4Error as exc:
            return Outcome(
                f"I could not read deployment {deployment_id}: {exc.detail}",
                mem.evolve(memory, lastIntent="deployment_status"),
                [_refused("deployment_status", exc, deployment_id)],
            )
        positions = ", ".join(
            f"{p.instrument} {p.quantity} @ {p.average_price}" for p in d.positions
        )
        text = _deployment_line(d) + (
            f". Positions: {positions}." if positions else ". No open positions."
        )
        if d.policy_version:
            text += f" Policy {d.policy_version}."
        return Outcome(
            text,
            mem.evolve(memory, lastIntent="deployment_status", activeDeploymentId=deployment_id),
        )

    async def _order(self, memory: mem.Memory, order_id: str) -> Outcome:
        memory = mem.evolve(memory, lastIntent="order_status")
        try:
            order = await self.platform.order(order_id)
        except errors.Gate4Error as exc:
            return Outcome(
                f"I could not read order {order_id}: {exc.detail}",
                memory,
                [_refused("order_status", exc)],
            )
        text = (
            f"Order {order.order_id}: {order.side} {order.quantity} {order.instrument} "
            f"({order.type}) is {order.status}, filled {order.filled_quantity or '0'}"
        )
        if order.status == "rejected":
            reason = order.reject_reason
            try:
                events = await self.platform.order_events(order_id)
            except errors.Gate4Error:
                events = []
            refusals = [e for e in events if e.outcome and e.outcome != outcomes.APPROVED]
            if refusals:
                last = refusals[-1]
                reason = f"{last.outcome}: {last.reason}" + (
                    f" (policy {last.policy_version})" if last.policy_version else ""
                )
            text += f". Rejected because {reason or 'the venue refused it'}"
        return Outcome(
            text + ".",
            mem.evolve(memory, lastOrderId=order.order_id, activeDeploymentId=order.deployment_id),
        )

    async def _kill_switches(self, memory: mem.Memory) -> Outcome:
        memory = mem.evolve(memory, lastIntent="kill_switch")
        try:
            engaged = await self.platform.kill_switches()
        except errors.Gate4Error as exc:
            return Outcome(
                f"I could not read the kill switches: {exc.detail}",
                memory,
                [_refused("kill_switch", exc)],
            )
        if not engaged:
            return Outcome("No kill switch is engaged.", memory)
        lines = []
        for k in engaged:
            evidence = ""
            if k.evidence.drawdown:
                e = k.evidence
                evidence = (
                    f" (drawdown {e.drawdown} vs limit {e.threshold}, policy {e.policy_version})"
                )
            lines.append(f"- {k.scope} {k.scope_id}: {k.trigger or 'manual'}, {k.reason}{evidence}")
        return Outcome(
            f"{len(engaged)} kill switch(es) engaged; new orders in scope are refused until a "
            "risk officer releases them:\n" + "\n".join(lines),
            memory,
        )

    async def _policy(self, memory: mem.Memory) -> Outcome:
        memory = mem.evolve(memory, lastIntent="policy")
        try:
            version = await self.platform.policy()
        except errors.Gate4Error as exc:
            return Outcome(
                f"No active risk policy: {exc.detail}. "
                "Side-effecting commands are refused until one is put.",
                memory,
            )
        doc = version.policy
        limits = doc.fields.get("limits")
        parts = []
        if limits is not None:
            for key in sorted(limits.struct_value.fields):
                value = limits.struct_value.fields[key]
                if value.HasField("string_value"):
                    parts.append(f"{key} {value.string_value}")
                elif value.HasField("number_value"):
                    number = value.number_value
                    parts.append(f"{key} {int(number) if number.is_integer() else number}")
        return Outcome(
            f"Active policy version {version.version} (digest {version.digest[:12]}): "
            + (", ".join(parts) if parts else "no limits listed")
            + ".",
            memory,
        )

    # -- notifications ---------------------------------------------------------------------

    def _notifications(self, memory: mem.Memory, on: bool) -> Outcome:
        return Outcome(
            "Proactive notifications are on."
            if on
            else "Proactive notifications are off; nothing more will be pushed to this session.",
            mem.evolve(memory, lastIntent="notifications", notificationsOptIn=on),
            [
                conversation_pb2.Action(
                    kind="notifications", status="executed", detail="on" if on else "off"
                )
            ],
            notifications_opt_in=on,
        )

    # -- stop, with confirmation -----------------------------------------------------------

    async def _propose_stop(
        self, memory: mem.Memory, target: str, flatten: bool, turn: TurnInput
    ) -> Outcome:
        deployment_id = memory.get("activeDeploymentId", "") if target in ("it", "this") else target
        if not deployment_id:
            return Outcome(
                "Which deployment? Say 'stop <deploymentId>'.",
                mem.evolve(memory, lastIntent="stop"),
            )
        try:
            d = await self.platform.deployment(deployment_id)
        except errors.Gate4Error as exc:
            return Outcome(
                f"I cannot stop {deployment_id}: {exc.detail}",
                mem.evolve(memory, lastIntent="stop"),
                [_refused("stop_deployment", exc, deployment_id)],
            )
        pending = {"action": "stop_deployment", "deploymentId": deployment_id, "flatten": flatten}
        what = (
            "stop it and flatten its positions"
            if flatten
            else "stop it (open orders are cancelled, positions kept)"
        )
        return Outcome(
            f"{_deployment_line(d)}. I will {what}. Reply 'yes' to confirm or 'no' to cancel.",
            mem.evolve(
                memory,
                lastIntent="stop",
                activeDeploymentId=deployment_id,
                pendingConfirmation=pending,
            ),
            [
                conversation_pb2.Action(
                    kind="stop_deployment",
                    status="proposed",
                    deployment_id=deployment_id,
                    detail="flatten" if flatten else "",
                )
            ],
        )

    def _cancel(self, memory: mem.Memory) -> Outcome:
        if not memory.get("pendingConfirmation"):
            return Outcome(
                "There is nothing waiting for confirmation.",
                mem.evolve(memory, lastIntent="cancel"),
            )
        pending = memory["pendingConfirmation"]
        return Outcome(
            f"Cancelled: {pending['deploymentId']} keeps running.",
            mem.evolve(memory, lastIntent="cancel", pendingConfirmation=None),
            [
                conversation_pb2.Action(
                    kind=pending["action"],
                    status="refused",
                    deployment_id=pending["deploymentId"],
                    detail="cancelled by user",
                )
            ],
        )

    async def _confirm(self, turn: TurnInput) -> Outcome:
        memory = turn.memory
        pending = memory.get("pendingConfirmation")
        if not pending:
            return Outcome(
                "There is nothing waiting for confirmation.",
                mem.evolve(memory, lastIntent="confirm"),
            )
        memory = mem.evolve(memory, lastIntent="confirm", pendingConfirmation=None)
        deployment_id = str(pending["deploymentId"])
        corr = correlation.current()
        if roles.TRADER not in corr.roles:
            error = errors.Forbidden("stopping a deployment needs the 'trader' role")
            return Outcome(
                f"I cannot stop {deployment_id}: {error.detail}.",
                memory,
                [_refused("stop_deployment", error, deployment_id)],
            )
        try:
            d = await self.platform.stop(
                deployment_id,
                flatten=bool(pending.get("flatten")),
                reason="stopped from conversation after user confirmation",
                idempotency_key=turn.command_key,
            )
        except errors.Gate4Error as exc:
            return Outcome(
                f"The stop of {deployment_id} was refused: {exc.detail}",
                memory,
                [_refused("stop_deployment", exc, deployment_id)],
            )
        return Outcome(
            f"Stopped: {_deployment_line(d)}.",
            memory,
            [
                conversation_pb2.Action(
                    kind="stop_deployment",
                    status="executed",
                    deployment_id=deployment_id,
                    request_id=corr.request_id,
                    outcome="STOPPED",
                    detail="flatten" if pending.get("flatten") else "",
                )
            ],
        )
