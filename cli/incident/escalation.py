"""The escalation matrix, read at run time from escalation-matrix.yaml (package data).

Editing the YAML changes owner teams and escalation targets without a code change; the file
documents its own format. The owner is the first row listing the incident's lane; rows whose
`signals` name a signal found in the evidence are escalation targets too.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Any

import yaml

from cli.errors import UsageError
from cli.incident.lanes import LANES

#: The shipped matrix, cli/incident/escalation-matrix.yaml in the source tree.
DEFAULT_MATRIX: Traversable = files("cli.incident") / "escalation-matrix.yaml"

#: Signals `gate4 incident capture` computes from the evidence (see the YAML's header).
SIGNALS = ("audit-evidence-gap", "contract-drift", "runtime-anomaly", "risk-uncertainty")


@dataclass(frozen=True)
class Row:
    condition: str
    lanes: tuple[str, ...]
    signals: tuple[str, ...]
    primary_team: str
    secondary_team: str
    escalate_to: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "condition": self.condition,
            "lanes": list(self.lanes),
            "signals": list(self.signals),
            "primaryTeam": self.primary_team,
            "secondaryTeam": self.secondary_team,
            "escalateTo": list(self.escalate_to),
        }


@dataclass(frozen=True)
class Escalation:
    """Who owns the incident and where the review handoff goes."""

    owner: Row
    #: Rows added by signals in the evidence (the owner's row is not repeated).
    also: tuple[Row, ...]
    signals: tuple[str, ...]
    source: str

    @property
    def targets(self) -> list[str]:
        """Every escalation issue, the owner's first, each once."""
        seen: list[str] = []
        for row in (self.owner, *self.also):
            seen += [t for t in row.escalate_to if t not in seen]
        return seen

    def as_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "owner": self.owner.as_json(),
            "also": [r.as_json() for r in self.also],
            "signals": list(self.signals),
            "targets": self.targets,
        }


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise UsageError(f"{where}: expected a list of strings")
    return tuple(value)


def _text(row: dict[str, Any], key: str, where: str) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value.strip():
        raise UsageError(f"{where}: `{key}` must be a non-empty string")
    return value.strip()


def load_matrix(path: Traversable = DEFAULT_MATRIX) -> list[Row]:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read the escalation matrix {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise UsageError(f"the escalation matrix {path} is not valid YAML: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("rows"), list):
        raise UsageError(f"the escalation matrix {path} needs a `rows:` list")
    rows: list[Row] = []
    for index, raw in enumerate(document["rows"], start=1):
        where = f"{path} row {index}"
        if not isinstance(raw, dict):
            raise UsageError(f"{where}: expected a mapping")
        lanes = _strings(raw.get("lanes"), f"{where} lanes")
        unknown = [lane for lane in lanes if lane not in LANES]
        if unknown:
            raise UsageError(f"{where}: unknown lane(s) {', '.join(unknown)}")
        signals = _strings(raw.get("signals"), f"{where} signals")
        unknown = [s for s in signals if s not in SIGNALS]
        if unknown:
            raise UsageError(f"{where}: unknown signal(s) {', '.join(unknown)}")
        rows.append(
            Row(
                condition=_text(raw, "condition", where),
                lanes=lanes,
                signals=signals,
                primary_team=_text(raw, "primaryTeam", where),
                secondary_team=_text(raw, "secondaryTeam", where),
                escalate_to=_strings(raw.get("escalateTo"), f"{where} escalateTo"),
            )
        )
    for lane in LANES:
        if not any(lane in row.lanes for row in rows):
            raise UsageError(f"the escalation matrix {path} has no row for lane {lane}")
    return rows


def select(rows: list[Row], lane: str, signals: Iterable[str], source: str) -> Escalation:
    found = tuple(dict.fromkeys(signals))
    owner = next(row for row in rows if lane in row.lanes)
    also = tuple(row for row in rows if row is not owner and any(s in row.signals for s in found))
    return Escalation(owner=owner, also=also, signals=found, source=source)
