"""A scripted, OpenAI-compatible model server on loopback for driving the real OpenClaw offline.

It speaks the subset of `POST /v1/chat/completions` (streamed or not) and `GET /v1/models`
that OpenClaw's `openai-completions` provider uses, and plays a deterministic assistant
that follows the gate4-platform skill the way a model would:

1. it finds the skill's `<location>` in the system prompt OpenClaw built (the skill must be
   listed, i.e. eligible) and calls OpenClaw's `read` tool on it;
2. from the SKILL.md text that tool returned, it takes the `gate4 ...` commands of the code
   blocks and, for each step of the plan of the current user message, calls OpenClaw's
   `exec` tool with the first command that starts with the step's prefix, placeholders
   (SESSION_ID, DEPLOYMENT_ID, ...) filled from the JSON printed by earlier commands or from
   the plan's `values`;
3. then it answers with a text quoting each command's exit and requestId.

So every command that runs was read from the real skill file by the real OpenClaw runtime
and executed by its exec tool. Every request is kept in `requests` for assertions, and
`exec_transcript(requests)` lists the commands OpenClaw ran with what each printed.

A conversation of several user messages (`openclaw agent --session-id ...`, one run per
message) works the same way: OpenClaw sends the session's history with each request, so
later messages reuse the skill text and the ids (sessionId, ...) of earlier outputs.
`command_for` and `values_from` are the same template filling for a test that runs the
skill's commands itself (the CLI lane).
"""

from __future__ import annotations

import json
import re
import shlex
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODEL_ID = "scripted-gate4"
SKILL_NAME = "gate4-platform"
PLACEHOLDERS = {
    "SESSION_ID": "sessionId",
    "DEPLOYMENT_ID": "deploymentId",
    "ORDER_ID": "orderId",
    "REQUEST_ID": "requestId",
}


@dataclass
class Step:
    """Run the skill's first command that starts with `prefix` (e.g. "gate4 sessions create")
    and contains `contains` (e.g. '"yes"' to pick the confirming turn), or, when `command` is
    set, exactly that command: what a prompt-injected model would run instead."""

    prefix: str
    contains: str = ""
    command: str = ""


@dataclass
class Scenario:
    #: user message (a substring of it) -> the commands to run for it, in order.
    plans: dict[str, list[Step]]
    #: placeholder -> value when no earlier output supplies it.
    values: dict[str, str] = field(default_factory=dict)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def skill_commands(skill_text: str) -> list[str]:
    """The `gate4 ...` lines of the skill's fenced code blocks, in order."""
    commands: list[str] = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", skill_text, flags=re.S):
        commands += [line.strip() for line in block.splitlines() if line.startswith("gate4 ")]
    return commands


def command_for(step: Step, commands: Sequence[str], values: Mapping[str, str]) -> str:
    """The first skill command matching the step, placeholders filled from values."""
    template = next((c for c in commands if c.startswith(step.prefix) and step.contains in c), None)
    if template is None:
        raise LookupError(f"the skill shows no command like {step.prefix!r} {step.contains!r}")
    pattern = re.compile(r"\b(" + "|".join(PLACEHOLDERS) + r")\b")
    filled = [
        pattern.sub(lambda m: values.get(m.group(1), m.group(1)), arg)
        for arg in shlex.split(template)
    ]
    return shlex.join(filled)


def values_from(outputs: Sequence[str], defaults: Mapping[str, str]) -> dict[str, str]:
    """Placeholder values: the defaults, then the first id of each kind the outputs printed."""
    values = dict(defaults)
    for output in outputs:
        for document in _json_documents(output):
            for placeholder, key in PLACEHOLDERS.items():
                if isinstance(document.get(key), str) and placeholder not in values:
                    values[placeholder] = document[key]
    return values


def exec_transcript(requests: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """(command, output) of every exec call OpenClaw made, in order, from the requests it
    sent (each carries the session's history: tool calls and the results they returned)."""
    commands: dict[str, str] = {}
    outputs: dict[str, str] = {}
    for request in requests:
        for message in request.get("messages", []):
            for call in message.get("tool_calls") or []:
                if call["function"]["name"] == "exec":
                    arguments = json.loads(call["function"]["arguments"])
                    commands.setdefault(call["id"], arguments["command"])
            if message.get("role") == "tool" and message.get("tool_call_id") in commands:
                outputs.setdefault(message["tool_call_id"], _text(message.get("content")))
    return [(command, outputs.get(call_id, "")) for call_id, command in commands.items()]


def first_document(output: str) -> dict[str, Any]:
    """The JSON document a `gate4` command printed (its stdout), from a tool result."""
    return next(_json_documents(output), {})


class ScriptedModel:
    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    # -- the assistant -----------------------------------------------------------------------

    def reply(self, body: dict[str, Any]) -> dict[str, Any]:
        """The next assistant message: {"content": str} or {"tool": name, "args": {...}}."""
        messages: list[dict[str, Any]] = body.get("messages", [])
        system = "\n".join(_text(m.get("content")) for m in messages if m["role"] == "system")
        last_user = max(
            (i for i, m in enumerate(messages) if m["role"] == "user" and self._plan(m)),
            default=None,
        )
        if last_user is None:
            return {"content": "I have no script for this message."}
        plan = self._plan(messages[last_user]) or []
        skill_text = next(
            (
                _text(m.get("content"))
                for m in messages
                if m["role"] == "tool" and f"name: {SKILL_NAME}" in _text(m.get("content"))
            ),
            None,
        )
        if skill_text is None:
            match = re.search(
                rf"<name>{SKILL_NAME}</name>.*?<location>([^<]+)</location>", system, flags=re.S
            )
            if match is None:
                return {"content": f"The {SKILL_NAME} skill is not available."}
            return {"tool": "read", "args": {"path": match.group(1)}}
        outputs = [
            _text(m.get("content")) for m in messages[last_user + 1 :] if m["role"] == "tool"
        ]
        outputs = [o for o in outputs if f"name: {SKILL_NAME}" not in o]
        if len(outputs) < len(plan):
            command = self._command(plan[len(outputs)], skill_commands(skill_text), messages)
            return {
                "tool": "exec",
                "args": {"command": command, "title": plan[len(outputs)].prefix},
            }
        return {"content": "Done.\n" + "\n".join(_summary(o) for o in outputs)}

    def _plan(self, message: Mapping[str, Any]) -> list[Step] | None:
        if message.get("role") != "user":
            return None
        text = _text(message.get("content"))
        for trigger, plan in self.scenario.plans.items():
            if trigger in text:
                return plan
        return None

    def _command(self, step: Step, commands: Sequence[str], messages: list[dict[str, Any]]) -> str:
        if step.command:
            return step.command
        outputs = [_text(m.get("content")) for m in messages if m["role"] == "tool"]
        return command_for(step, commands, values_from(outputs, self.scenario.values))

    # -- HTTP --------------------------------------------------------------------------------

    def handler(self) -> type[BaseHTTPRequestHandler]:
        model = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._json(200, {"object": "list", "data": [{"id": MODEL_ID, "object": "model"}]})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with model.lock:
                    model.requests.append(body)
                    try:
                        answer = model.reply(body)
                    except LookupError as exc:
                        answer = {"content": f"script error: {exc}"}
                message: dict[str, Any] = {"role": "assistant", "content": answer.get("content")}
                finish = "stop"
                if "tool" in answer:
                    finish = "tool_calls"
                    message["tool_calls"] = [
                        {
                            "id": f"call_{len(model.requests)}",
                            "type": "function",
                            "function": {
                                "name": answer["tool"],
                                "arguments": json.dumps(answer["args"]),
                            },
                        }
                    ]
                if body.get("stream"):
                    self._stream(message, finish)
                else:
                    self._json(200, _completion(message, finish))

            def _json(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _stream(self, message: dict[str, Any], finish: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                delta: dict[str, Any] = {"role": "assistant"}
                if message.get("content"):
                    delta["content"] = message["content"]
                if "tool_calls" in message:
                    delta["tool_calls"] = [dict(message["tool_calls"][0], index=0)]
                usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
                chunks: list[dict[str, Any]] = [
                    {"choices": [{"index": 0, "delta": delta, "finish_reason": None}]},
                    {"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]},
                    {"choices": [], "usage": usage},
                ]
                for chunk in chunks:
                    chunk.update(_envelope("chat.completion.chunk"))
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()

        return Handler


def _envelope(kind: str) -> dict[str, Any]:
    return {"id": "cmpl-scripted", "object": kind, "created": int(time.time()), "model": MODEL_ID}


def _completion(message: dict[str, Any], finish: str) -> dict[str, Any]:
    return {
        **_envelope("chat.completion"),
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


def _json_documents(text: str) -> Iterator[dict[str, Any]]:
    """JSON objects printed in a tool result (gate4 prints one pretty-printed document)."""
    start = text.find("{")
    while start != -1:
        depth = 0
        for end in range(start, len(text)):
            depth += {"{": 1, "}": -1}.get(text[end], 0)
            if depth == 0:
                try:
                    value = json.loads(text[start : end + 1])
                except ValueError:
                    break
                if isinstance(value, dict):
                    yield value
                break
        start = text.find("{", start + 1)


def _summary(output: str) -> str:
    """One line per command: its requestId, and what a user must see of a turn's answer
    (the actions with their status, and the notifications by kind and severity)."""
    match = re.search(r"requestId (\S+?)[,)\s]", output + " ")
    line = f"- requestId {match.group(1) if match else 'unknown'}"
    document = first_document(output)
    reply = document.get("reply")
    actions = reply.get("actions", []) if isinstance(reply, dict) else []
    if actions:
        line += "; actions " + ", ".join(f"{a['kind']} {a['status']}" for a in actions)
    notes = document.get("notifications")
    if isinstance(notes, list) and notes:
        line += "; notifications " + ", ".join(f"{n['kind']} ({n['severity']})" for n in notes)
    return line


@contextmanager
def serve(scenario: Scenario) -> Iterator[tuple[ScriptedModel, str]]:
    """Runs the model server on a free loopback port; yields it and its /v1 base URL."""
    model = ScriptedModel(scenario)
    server = ThreadingHTTPServer(("127.0.0.1", 0), model.handler())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield model, f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def openclaw_config(base_url: str) -> dict[str, Any]:
    """An OpenClaw config whose only model is the scripted one (no real provider)."""
    return {
        "models": {
            "mode": "replace",
            "providers": {
                "scripted": {
                    "baseUrl": base_url,
                    "apiKey": "scripted-local",
                    "api": "openai-completions",
                    "models": [
                        {
                            "id": MODEL_ID,
                            "name": "Scripted gate4 model",
                            "reasoning": False,
                            "input": ["text"],
                            "cost": {"input": 0, "output": 0, "cacheRead": 0, "cacheWrite": 0},
                            "contextWindow": 128000,
                            "maxTokens": 4096,
                        }
                    ],
                }
            },
        },
        "agents": {"defaults": {"model": {"primary": f"scripted/{MODEL_ID}"}}},
    }
