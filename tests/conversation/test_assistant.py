"""The assistant's routing: what it answers alone (inside the turn's one write), what it
asks the platform for."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gate4.execution.v1 import execution_pb2
from services.conversation.assistant import HELP, Assistant, TurnInput


class Platform:
    """Records what the assistant asked; answers one running deployment."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def deployments(self) -> list[execution_pb2.Deployment]:
        self.asked.append("deployments")
        return [execution_pb2.Deployment(deployment_id="dep_1", state="running", equity="10")]

    def __getattr__(self, name: str) -> Any:
        async def call(*args: Any, **kwargs: Any) -> Any:
            self.asked.append(name)
            raise AssertionError(f"unexpected platform call {name}")

        return call


def turn(message: str, **memory: Any) -> TurnInput:
    return TurnInput(message=message, memory=dict(memory), command_key="turn:s:k")


@pytest.mark.parametrize(
    ("message", "intent"),
    [
        ("help", "help"),
        ("hello", "help"),
        ("what is the weather", "unknown"),
        ("notifications off", "notifications"),
        ("no", "cancel"),
    ],
)
def test_answers_that_need_no_platform_are_local(message: str, intent: str) -> None:
    platform = Platform()
    outcome = Assistant(platform).local(turn(message))  # type: ignore[arg-type]
    assert outcome is not None and outcome.memory["lastIntent"] == intent
    assert platform.asked == []


@pytest.mark.parametrize(
    "message",
    ["status of all deployments", "yes", "stop dep_1", "order ord_1", "kill switch", "policy"],
)
def test_reads_and_commands_are_not_local(message: str) -> None:
    assert Assistant(Platform()).local(turn(message)) is None  # type: ignore[arg-type]


def test_respond_gives_the_local_answer_and_reads_the_platform_otherwise() -> None:
    platform = Platform()
    assistant = Assistant(platform)  # type: ignore[arg-type]
    helped = asyncio.run(assistant.respond(turn("help")))
    assert helped.text == HELP
    status = asyncio.run(assistant.respond(turn("status of all deployments")))
    assert "dep_1" in status.text and platform.asked == ["deployments"]


def test_anything_but_yes_or_no_drops_a_pending_proposal() -> None:
    pending = {"action": "stop_deployment", "deploymentId": "dep_1", "flatten": False}
    outcome = Assistant(Platform()).local(turn("help", pendingConfirmation=pending))  # type: ignore[arg-type]
    assert outcome is not None and not outcome.memory.get("pendingConfirmation")
