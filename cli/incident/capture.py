"""`gate4 incident capture`: an evidence bundle and a handoff an SRE can send as is.

From one or more correlation ids (`--request-id`, `--deployment`, `--order`, `--session`) and
the lane, it collects the evidence (cli/incident/evidence.py), runs or attaches the lane's
contract tests (cli/incident/contracts.py), computes severity, guardrails, owner team and
escalation targets (report.py, severity.py, guardrails.py, escalation.py) and writes three
files into `--output-dir` (default `<var dir>/incidents/<incident id>/`):

- handoff.md: the runbook's On-Call Handoff Template, filled in;
- evidence.json: everything collected, with the decision-tree walk and the contract output;
- repro.sh: the reproduction commands, secrets as variable names.

Everything is redacted (cli/incident/redact.py) and scanned once more before anything is
written; if a secret still shows, nothing is written and the command fails. Capture changes
nothing on the platform: it reads, and the contract tests start platforms of their own.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from datetime import timedelta
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from cli import settings
from cli.errors import EXIT_OK, SECRET_IN_BUNDLE, CliError, UsageError
from cli.incident import contracts, handoff, report, repro
from cli.incident.escalation import DEFAULT_MATRIX, load_matrix, select
from cli.incident.evidence import Collected, collect, options_for
from cli.incident.lanes import LANES, REPO_ROOT, contract_command
from cli.incident.platform import (
    add_api_options,
    add_trace_options,
    open_api,
    parse_time,
    rfc3339,
    trace_sources,
    utcnow,
)
from cli.incident.reads import Platform
from cli.incident.redact import Redactor
from cli.incident.severity import LEVELS, next_checkpoint, suggest
from services.runtime.correlation import valid_request_id
from services.runtime.validation import ID_RE

EVIDENCE_SCHEMA = "gate4-incident-evidence.v1"
FILES = ("handoff.md", "evidence.json", "repro.sh")
INCIDENTS_DIR = "incidents"


class SecretInBundle(CliError):
    """The final scan found something that looks like a secret: nothing was written."""

    code = SECRET_IN_BUNDLE


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "capture",
        help="write an evidence bundle (handoff.md, evidence.json, repro.sh) for an incident",
        description=(
            "Collect the evidence of an incident from correlation ids through the Platform API "
            "and the local trace store, run (or attach) the lane's contract tests, and write "
            "handoff.md (the runbook's On-Call Handoff Template, filled in), evidence.json and "
            "repro.sh, redacted, into --output-dir. Reads only: nothing changes on the "
            "platform. Needs the sre role (audit) and any read role."
        ),
    )
    ids = parser.add_argument_group("correlation ids (at least one)")
    for flag, dest, what in (
        ("--request-id", "request_ids", "a requestId"),
        ("--deployment", "deployment_ids", "a deployment"),
        ("--order", "order_ids", "an order"),
        ("--session", "session_ids", "a conversation session"),
    ):
        ids.add_argument(
            flag,
            dest=dest,
            action="append",
            default=[],
            metavar="ID",
            help=f"{what} of the incident (repeatable)",
        )
    parser.add_argument(
        "--lane", required=True, choices=tuple(LANES), help="the affected lane (Runbook A or B)"
    )
    parser.add_argument(
        "--severity",
        choices=tuple(LEVELS),
        help="override the severity suggested from the evidence (the handoff shows both)",
    )
    parser.add_argument(
        "--status",
        choices=report.STATUSES,
        default="triage",
        help="current status (default triage)",
    )
    resolution = parser.add_argument_group(
        "resolution (required with --status resolved: the runbook's incident summary carries "
        "the root cause and the prevention action)"
    )
    for name, what in (
        ("root-cause", "the root cause"),
        ("prevention", "the prevention action"),
    ):
        given = resolution.add_mutually_exclusive_group()
        given.add_argument(f"--{name}", metavar="TEXT", help=what)
        given.add_argument(
            f"--{name}-file", type=Path, metavar="FILE", help=f"{what}, read from a text file"
        )
    parser.add_argument("--incident-id", metavar="ID", help="default: INC-<start>-<tenant>")
    parser.add_argument("--impact", metavar="TEXT", help="a sentence to open the impact summary")
    parser.add_argument(
        "--start-time", metavar="RFC3339", help="incident start (default: from the evidence)"
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        metavar="DIR",
        help="where the bundle goes (default: <var dir>/incidents/<incident id>)",
    )
    parser.add_argument(
        "--window",
        type=float,
        default=15.0,
        metavar="MINUTES",
        help="audit window before the start for guardrails and trends (default 15)",
    )
    tests = parser.add_mutually_exclusive_group()
    tests.add_argument(
        "--skip-contract-tests",
        nargs="?",
        const="skipped with --skip-contract-tests",
        metavar="REASON",
        help="do not run the lane's contract tests; evidence.json records that and why",
    )
    tests.add_argument(
        "--contract-results",
        type=Path,
        metavar="JUNIT_XML",
        help="attach the run the runbook's contract command made with --junitxml FILE "
        "instead of running the tests again",
    )
    parser.add_argument(
        "--contract-timeout",
        type=float,
        default=contracts.DEFAULT_TIMEOUT_SECONDS,
        metavar="SECONDS",
        help="longest the contract tests may run (default 1800)",
    )
    parser.add_argument(
        "--escalation-matrix",
        type=Path,
        default=DEFAULT_MATRIX,
        metavar="YAML",
        help="escalation matrix (default: the shipped cli/incident/escalation-matrix.yaml)",
    )
    parser.add_argument(
        "--output",
        "-o",
        choices=("text", "json"),
        default="text",
        help="what to print: a summary (default) or the bundle's manifest as JSON",
    )
    add_trace_options(parser)
    add_api_options(parser)
    parser.set_defaults(handler=cmd_capture)


def _given(args: argparse.Namespace) -> dict[str, list[str]]:
    given = {
        "requestIds": list(dict.fromkeys(args.request_ids)),
        "deploymentIds": list(dict.fromkeys(args.deployment_ids)),
        "orderIds": list(dict.fromkeys(args.order_ids)),
        "sessionIds": list(dict.fromkeys(args.session_ids)),
    }
    if not any(given.values()):
        raise UsageError("give at least one of --request-id, --deployment, --order, --session")
    for request_id in given["requestIds"]:
        if not valid_request_id(request_id):
            raise UsageError(f"--request-id {request_id!r}: 8-128 of A-Z a-z 0-9 . _ : -")
    for key in ("deploymentIds", "orderIds", "sessionIds"):
        for value in given[key]:
            if not ID_RE.match(value):
                raise UsageError(f"{value!r} is not a platform id (1-64 of A-Z a-z 0-9 _ -)")
    return given


def resolution(args: argparse.Namespace) -> tuple[str, str]:
    """The root cause and prevention action given as text or files; both are required for a
    resolved incident."""
    found: list[str] = []
    for name in ("root_cause", "prevention"):
        text: str = getattr(args, name) or ""
        path: Path | None = getattr(args, f"{name}_file")
        if path is not None:
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from exc
        found.append(text.strip())
    root_cause, prevention = found
    if args.status == "resolved" and not (root_cause and prevention):
        raise UsageError(
            "--status resolved needs --root-cause (or --root-cause-file) and --prevention (or "
            "--prevention-file): a resolved incident's summary names both"
        )
    return root_cause, prevention


def cmd_capture(args: argparse.Namespace) -> int:
    given = _given(args)
    root_cause, prevention = resolution(args)
    lane = LANES[args.lane]
    if args.window <= 0:
        raise UsageError("--window must be a positive number of minutes")
    start = None
    if args.start_time:
        start = parse_time(args.start_time)
        if start is None:
            raise UsageError(f"--start-time {args.start_time!r} is not an RFC 3339 time")
    rows = load_matrix(args.escalation_matrix)
    window = timedelta(minutes=args.window)
    api = open_api(args)
    now = utcnow()
    options = options_for(given, trace_sources(args), args.span_wait, window, now)
    with api.client:
        collected = collect(Platform(api, options), lane, given, window, start)
    if args.contract_results is not None:
        collected.contracts = contracts.from_junit(lane, args.contract_results)
    elif args.skip_contract_tests is not None:
        collected.contracts = contracts.skipped(lane, args.skip_contract_tests)
    else:
        print(f"gate4: running {contract_command(lane.contract_tests)}", file=sys.stderr)
        collected.contracts = contracts.run(lane, timeout=args.contract_timeout)

    built = build_report(collected, args, rows)
    built.root_cause, built.prevention = root_cause, prevention
    incident_id = built.incident_id
    var_dir = args.var_dir or settings.load_settings().var_dir
    out_dir = args.output_dir or var_dir / INCIDENTS_DIR / incident_id
    redactor = Redactor()
    files = {
        "handoff.md": handoff.render(built),
        "evidence.json": json.dumps(evidence_document(built), indent=2, ensure_ascii=False) + "\n",
        "repro.sh": repro.render(collected, incident_id),
    }
    write_bundle(out_dir, {name: redactor.text(text) for name, text in files.items()}, redactor)

    manifest = {
        "incidentId": incident_id,
        "outputDir": str(out_dir),
        "files": [str(out_dir / name) for name in FILES],
        "severity": built.severity.chosen,
        "branch": collected.triage.branch,
        "leaf": collected.triage.leaf.id if collected.triage.leaf else None,
        "guardrails": {g.name: g.value for g in built.guardrails},
        "ownerTeam": built.escalation.owner.primary_team,
        "contractTests": collected.contracts.status if collected.contracts else None,
    }
    if args.output == "json":
        print(json.dumps(manifest, indent=2))
    else:
        triage = collected.triage.summary
        print(f"incident {incident_id}: {built.severity.chosen}, lane {lane.name}, {triage}")
        for confirmation in built.guardrails:
            print(f"  {confirmation.name}: {confirmation.value}")
        owner, targets = built.escalation.owner, built.escalation.targets
        print(f"  owner: {owner.primary_team}; targets: {', '.join(targets)}")
        print(f"  contract tests: {collected.contracts.line if collected.contracts else 'n/a'}")
        print(f"bundle: {out_dir}/ ({', '.join(FILES)})")
    return EXIT_OK


def build_report(c: Collected, args: argparse.Namespace, rows: list[Any]) -> report.Report:
    facts = report.facts(c)
    gaps = report.audit_gaps(c)
    signals = report.signals(c, facts, gaps)
    chosen = suggest(facts, args.severity)
    confirmations = report.confirmations(c)
    escalation = select(rows, c.lane.name, signals, _display(args.escalation_matrix))
    checkpoint, why = next_checkpoint(chosen, c.start, c.now)
    incident_id = args.incident_id or f"INC-{c.start:%Y%m%d-%H%M%S}-{c.tenant_id}"
    if not _safe_name(incident_id):
        raise UsageError(f"--incident-id {incident_id!r}: use letters, digits, . _ -")
    return report.Report(
        incident_id=incident_id,
        status=args.status,
        collected=c,
        severity=chosen,
        guardrails=confirmations,
        escalation=escalation,
        checkpoint=checkpoint,
        checkpoint_reason=why,
        impact=report.impact(c, args.impact),
        verification=report.verification(c),
        risks=report.remaining_risks(c, facts, gaps, confirmations),
        signals=signals,
    )


def _display(path: Traversable) -> str:
    """A path inside the repository as the runbook names it, others as given."""
    if not isinstance(path, Path):
        return str(path)
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def _safe_name(name: str) -> bool:
    return bool(name) and len(name) <= 128 and all(ch.isalnum() or ch in "._-" for ch in name)


def evidence_document(r: report.Report) -> dict[str, Any]:
    c = r.collected
    return {
        "schema": EVIDENCE_SCHEMA,
        "incidentId": r.incident_id,
        "capturedAt": rfc3339(c.now),
        "capturedBy": c.user_id,
        "tenantId": c.tenant_id,
        "apiBase": c.api_base,
        "lane": c.lane.name,
        "runbook": c.lane.runbook,
        "status": r.status,
        "startTime": rfc3339(c.start),
        "given": c.given,
        "correlation": c.correlation,
        "severity": r.severity.as_json(),
        "guardrails": [g.as_json() for g in r.guardrails],
        "escalation": r.escalation.as_json(),
        "nextCheckpoint": {"at": rfc3339(r.checkpoint), "reason": r.checkpoint_reason},
        "impactSummary": r.impact,
        "rootCause": r.root_cause or None,
        "preventionAction": r.prevention or None,
        "remainingRisks": r.risks,
        "verification": [{"command": cmd, "result": res} for cmd, res in r.verification],
        "triage": c.triage.as_json(),
        "readiness": c.readyz.as_json(),
        "auditEvents": c.events,
        "auditQueries": [
            {"command": q.command, "ok": q.ok, "result": q.result()} for q in c.queries
        ],
        "auditChain": c.chain.as_json(),
        "traces": [t.as_json() for t in c.traces.values()],
        "killSwitches": c.switches.as_json(),
        "breachEvidence": [check.as_json() for check in c.switch_checks],
        "policy": {
            scope: {name: fetched.as_json() for name, fetched in entry.items()}
            for scope, entry in c.policies.items()
        },
        "policyVersions": c.versions.as_json(),
        "resources": {
            kind: {key: fetched.as_json() for key, fetched in items.items()}
            for kind, items in c.resources.items()
        },
        "window": {
            "since": rfc3339(c.window_start),
            "until": rfc3339(c.now),
            "reads": {
                key: {"command": read.command, "ok": read.ok, "count": len(read.data or [])}
                for key, read in c.window.items()
            },
            "rejectionTrend": c.trend.as_json(),
            "runtimeAnomalies": c.anomalies.as_json(),
        },
        "contractTests": c.contracts.as_json() if c.contracts else None,
        "signals": r.signals,
    }


def write_bundle(out_dir: Path, files: dict[str, str], redactor: Redactor) -> None:
    """Scans every file once more and writes them only if nothing looks like a secret."""
    findings = [f for name, text in files.items() for f in redactor.scan(name, text)]
    if findings:
        where = "; ".join(f"{f.path} line {f.line}: {f.kind}" for f in findings[:10])
        raise SecretInBundle(
            f"refusing to write the bundle: something still looks like a secret ({where})"
        )
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    for name, text in files.items():
        fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                os.fchmod(handle.fileno(), 0o700 if name.endswith(".sh") else 0o600)
                handle.write(text)
            os.replace(tmp, out_dir / name)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
