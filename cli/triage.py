"""`gate4 triage conversation|risk`: walk one of the runbook's decision trees against the live
platform and print the branch reached, the evidence behind each decision and the runbook's
containment action for the leaf.

The trees and their checks are in cli/incident/ (trees.py, conversation_checks.py,
risk_checks.py); this module is the command. Reads go through the Platform API and the local
trace store only. `triage conversation` also sends probe requests (the runbook's minimal
repro: two `openclaw` sessions with topic `triage-probe` and a few `help` turns), which need
the `trader` role; `--no-probes` decides from /readyz and the evidence alone.

Exit codes: 0 when a leaf is reached (whatever the leaf), 8 when a decision could not be made
because the platform did not answer (the branch stops there), 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import timedelta

from cli.apicommand import read_json_file
from cli.errors import EXIT_OK, EXIT_UNAVAILABLE, TRIAGE_UNDETERMINED, UsageError
from cli.incident.platform import (
    add_api_options,
    add_trace_options,
    open_api,
    rfc3339,
    trace_sources,
    utcnow,
)
from cli.incident.reads import Options, Platform
from cli.incident.redact import Redactor
from cli.incident.trees import TREES, Evidence, Result, answer_text
from cli.incident.triage import walk
from services.runtime.correlation import valid_request_id

NAME = "triage"
HELP = "walk the runbook's decision trees (conversation, risk) against the live platform"

_MARKS = {"pass": "ok  ", "fail": "FAIL", "info": "info", "unknown": "??  "}


def register(parser: argparse.ArgumentParser) -> None:
    trees = parser.add_subparsers(dest="tree", metavar="TREE", required=True)
    conversation = trees.add_parser(
        "conversation",
        help="Runbook A: routes healthy? payload/headers valid? memory/notifications valid?",
        description=(
            "Walk Runbook A's decision tree (conversation and OpenClaw): route health from "
            "GET /readyz and probe requests, contract validity of payloads and headers (the "
            "runbook's minimal repro, --payload, and the incident's --request-id spans), memory "
            "and notification semantics. Probes open two openclaw sessions (topic "
            "triage-probe) and send `help` turns: they need the trader role."
        ),
    )
    _common(conversation)
    conversation.add_argument(
        "--session", metavar="ID", help="the incident's session: channel and notifications"
    )
    conversation.add_argument(
        "--payload",
        metavar="FILE",
        help="a client's POST /v2/conversations/sessions body (JSON) to replay as a repro",
    )
    conversation.add_argument(
        "--no-probes",
        action="store_true",
        help="send no probe request: decide from /readyz, spans and the audit trail only",
    )

    risk = trees.add_parser(
        "risk",
        help="Runbook B: kill switch triggered? breach evidence valid? rejections increasing?",
        description=(
            "Walk Runbook B's decision tree (risk runtime and kill switch): kill-switch state, "
            "the validity of each engaged switch's breach evidence (arithmetic, policy version, "
            "audit trail), and the pre-trade rejection trend in the audit trail. Read only."
        ),
    )
    _common(risk)
    risk.add_argument(
        "--deployment", metavar="ID", help="only the kill switches that hold this deployment"
    )
    risk.add_argument(
        "--window",
        type=float,
        default=15.0,
        metavar="MINUTES",
        help="rejection trend: the last window against the one before it (default 15)",
    )
    risk.add_argument(
        "--min-rejections",
        type=int,
        default=3,
        metavar="N",
        help="fewest pre-trade rejections in the window that count as a rise (default 3)",
    )


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--request-id",
        dest="request_ids",
        action="append",
        default=[],
        metavar="ID",
        help="a requestId of the incident (repeatable): its spans are evidence",
    )
    parser.add_argument(
        "--output", "-o", choices=("text", "json"), default="text", help="text (default) or json"
    )
    add_trace_options(parser)
    add_api_options(parser)
    parser.set_defaults(handler=cmd_triage)


def options_from(args: argparse.Namespace) -> Options:
    for request_id in args.request_ids:
        if not valid_request_id(request_id):
            raise UsageError(f"--request-id {request_id!r}: 8-128 of A-Z a-z 0-9 . _ : -")
    payload = (
        read_json_file(args.payload, "payload file") if getattr(args, "payload", None) else None
    )
    window = getattr(args, "window", 15.0)
    if window <= 0:
        raise UsageError("--window must be a positive number of minutes")
    return Options(
        request_ids=list(dict.fromkeys(args.request_ids)),
        session_id=getattr(args, "session", None),
        deployment_id=getattr(args, "deployment", None),
        trace_sources=trace_sources(args),
        span_wait=args.span_wait,
        probes=not getattr(args, "no_probes", False),
        payload=payload,
        window=timedelta(minutes=window),
        min_rejections=max(1, getattr(args, "min_rejections", 3)),
        now=utcnow(),
    )


def cmd_triage(args: argparse.Namespace) -> int:
    options = options_from(args)
    api = open_api(args)
    with api.client:
        result = walk(TREES[args.tree], Platform(api, options))
    redactor = Redactor()
    document = redactor.value(
        {"tenantId": api.tenant_id, "at": rfc3339(options.now), **result.as_json()}
    )
    if args.output == "json":
        print(json.dumps(document, indent=2, ensure_ascii=False))
    else:
        print(redactor.text(render(result, api.tenant_id, rfc3339(options.now))))
    if result.leaf is None:
        print(
            f"gate4: error: {TRIAGE_UNDETERMINED}: the platform did not answer a decision "
            "(see the evidence); fail closed",
            file=sys.stderr,
        )
        return EXIT_UNAVAILABLE
    return EXIT_OK


def _evidence_line(evidence: Evidence) -> str:
    return (
        f"     {_MARKS.get(evidence.result, evidence.result)}  {evidence.check}: {evidence.detail}"
    )


def render(result: Result, tenant_id: str, at: str) -> str:
    tree = result.tree
    lines = [f"{tree.title}: triage of tenant {tenant_id} at {at}", f"A  {tree.start}"]
    for step in result.steps:
        lines.append(
            f"{step.decision.id}  {step.decision.question} {answer_text(step.answer.value)}"
        )
        lines += [_evidence_line(e) for e in step.answer.evidence]
    if result.leaf is not None:
        lines.append(f"{result.leaf.id}  {result.leaf.action}")
    else:
        lines.append("?  undetermined: the platform did not answer this decision")
    lines += [_evidence_line(e) for e in result.context]
    lines.append(f"branch: {result.branch}")
    lines.append("containment (runbook):")
    lines += [f"  - {action}" for action in result.containment]
    if result.leaf is not None and result.leaf.next_steps:
        lines.append("next:")
        lines += [f"  $ {command}" for command in result.leaf.next_steps]
    return "\n".join(lines)
