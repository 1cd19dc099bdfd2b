"""The risk-policy.v1 document: its published JSON Schema, coherence checks and typed form.

The schema risk-policy.v1.schema.json (package data of `services.risk`) is the one the service
enforces, so the published contract cannot drift from what is applied. Validation lists
every problem (schema and coherence) as JSON pointers into the document; only a document
without problems becomes a `Policy`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from services.runtime import canonical, scopes
from services.runtime.decimals import parse_decimal

SCHEMA_ID = "risk-policy.v1"
#: The published policy schema, shipped inside the `services.risk` package.
SCHEMA: Traversable = files("services.risk") / "risk-policy.v1.schema.json"
HUNDRED = Decimal(100)
# Decimal limits (JSON pointer below /limits) that must be greater than zero.
POSITIVE_LIMITS = (
    "maxOrderNotional",
    "maxOrderQuantity",
    "maxPositionNotional",
    "maxCapitalAllocation",
    "dailyLossLimit",
)


@dataclass(frozen=True)
class Problem:
    #: JSON pointer into the document; "" for the document itself.
    path: str
    message: str


@dataclass(frozen=True)
class OrderRate:
    max_orders: int
    window_seconds: int


@dataclass(frozen=True)
class Limits:
    max_order_notional: Decimal
    max_order_quantity: Decimal
    max_position_notional: Decimal
    max_open_orders: int
    order_rate: OrderRate
    price_collar_pct: Decimal
    mark_max_age_seconds: int
    max_capital_allocation: Decimal
    daily_loss_limit: Decimal


@dataclass(frozen=True)
class Instruments:
    #: Empty means every instrument that is not restricted.
    allowed: frozenset[str]
    restricted: frozenset[str]


@dataclass(frozen=True)
class KillSwitchPolicy:
    max_drawdown_pct: Decimal
    confirmations: int
    flatten_on_trip: bool
    scopes: frozenset[str]


@dataclass(frozen=True)
class Policy:
    name: str
    limits: Limits
    instruments: Instruments
    kill_switch: KillSwitchPolicy


class PolicyProblems(Exception):
    """The document is not a valid risk-policy.v1; `problems` lists every reason."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(f"{p.path or '/'}: {p.message}" for p in problems))
        self.problems = problems


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SCHEMA.read_text(encoding="utf-8"))
    return loaded


@lru_cache(maxsize=1)
def _validator() -> Draft202012Validator:
    Draft202012Validator.check_schema(schema())
    return Draft202012Validator(schema())


def normalise(document: Any) -> Any:
    """The document as JSON would carry it: Struct turns 20 into 20.0, this turns it back."""
    return json.loads(canonical.canonical_json(document))


def digest(document: Any) -> str:
    """sha256 of the canonical JSON of the (normalised) document."""
    return canonical.digest(normalise(document))


def validate(document: Any) -> list[Problem]:
    """Every problem of the document: schema violations first, then incoherent values."""
    doc = normalise(document)
    problems = [p for e in _leaves(_validator().iter_errors(doc)) for p in _problems(e)]
    problems += _coherence(doc)
    return list(dict.fromkeys(problems))


def parse(document: Any) -> Policy:
    """The typed policy; raises PolicyProblems when the document is not valid."""
    doc = normalise(document)
    problems = validate(doc)
    if problems:
        raise PolicyProblems(problems)
    limits = doc["limits"]
    instruments = doc.get("instruments", {})
    kill = doc["killSwitch"]
    return Policy(
        name=str(doc.get("name", "")),
        limits=Limits(
            max_order_notional=Decimal(limits["maxOrderNotional"]),
            max_order_quantity=Decimal(limits["maxOrderQuantity"]),
            max_position_notional=Decimal(limits["maxPositionNotional"]),
            max_open_orders=int(limits["maxOpenOrders"]),
            order_rate=OrderRate(
                max_orders=int(limits["orderRate"]["maxOrders"]),
                window_seconds=int(limits["orderRate"]["windowSeconds"]),
            ),
            price_collar_pct=Decimal(limits["priceCollarPct"]),
            mark_max_age_seconds=int(limits["markMaxAgeSeconds"]),
            max_capital_allocation=Decimal(limits["maxCapitalAllocation"]),
            daily_loss_limit=Decimal(limits["dailyLossLimit"]),
        ),
        instruments=Instruments(
            allowed=frozenset(instruments.get("allowed", [])),
            restricted=frozenset(instruments.get("restricted", [])),
        ),
        kill_switch=KillSwitchPolicy(
            max_drawdown_pct=Decimal(kill["maxDrawdownPct"]),
            confirmations=int(kill["confirmations"]),
            flatten_on_trip=bool(kill["flattenOnTrip"]),
            scopes=frozenset(kill.get("scopes", scopes.SCOPES)),
        ),
    )


@lru_cache(maxsize=256)
def parse_stored(document_json: str) -> Policy | PolicyProblems:
    """Parses a stored version once; decisions ask for the same few documents all day."""
    try:
        return parse(json.loads(document_json))
    except PolicyProblems as exc:
        return exc


# -- problems ------------------------------------------------------------------------------


def _pointer(parts: Any) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def _leaves(errors: Any) -> list[ValidationError]:
    out: list[ValidationError] = []
    for error in sorted(errors, key=lambda e: [str(p) for p in e.absolute_path]):
        if error.context and error.validator in ("anyOf", "oneOf"):
            out.extend(_leaves(error.context))
        else:
            out.append(error)
    return out


def _problems(error: ValidationError) -> list[Problem]:
    """One problem per missing or unknown field, so a client can fix them all at once."""
    path = list(error.absolute_path)
    instance = error.instance
    if error.validator == "required" and isinstance(instance, dict):
        wanted: list[str] = list(error.validator_value)  # type: ignore[arg-type]
        return [
            Problem(_pointer([*path, name]), "required property is missing")
            for name in wanted
            if name not in instance
        ]
    if error.validator == "additionalProperties" and isinstance(instance, dict):
        known = sorted(error.schema.get("properties", {})) if isinstance(error.schema, dict) else []
        return [
            Problem(_pointer([*path, name]), f"unknown field {name!r}; allowed: {', '.join(known)}")
            for name in sorted(k for k in instance if k not in known)
        ]
    if error.validator == "const" and path == ["schema"]:
        return [
            Problem(
                "/schema",
                f"{instance!r} is not {SCHEMA_ID!r}: only {SCHEMA_ID} documents are accepted",
            )
        ]
    if (
        error.validator == "type"
        and error.validator_value == "string"
        and isinstance(instance, (int, float))
        and not isinstance(instance, bool)
    ):
        return [Problem(_pointer(path), f'write decimals as strings, e.g. "{instance}"')]
    if (
        error.validator == "pattern"
        and error.validator_value == schema()["$defs"]["decimal"]["pattern"]
    ):
        return [Problem(_pointer(path), f'{instance!r} is not a decimal string such as "50000"')]
    return [Problem(_pointer(path), error.message)]


def _decimal(value: Any) -> Decimal | None:
    """A policy writes its decimals as strings; the schema has already said so if not."""
    return parse_decimal(value) if isinstance(value, str) else None


def _coherence(doc: Any) -> list[Problem]:
    """Problems the schema cannot express; each check runs on the parts that are well-formed."""
    if not isinstance(doc, dict):
        return []
    problems: list[Problem] = []
    limits = doc.get("limits")
    if isinstance(limits, dict):
        for name in POSITIVE_LIMITS:
            number = _decimal(limits.get(name))
            if number is not None and number <= 0:
                problems.append(Problem(f"/limits/{name}", "must be greater than 0"))
        collar = _decimal(limits.get("priceCollarPct"))
        if collar is not None and not 0 < collar <= HUNDRED:
            problems.append(
                Problem("/limits/priceCollarPct", "a percentage greater than 0 and at most 100")
            )
        order = _decimal(limits.get("maxOrderNotional"))
        position = _decimal(limits.get("maxPositionNotional"))
        if order is not None and position is not None and order > position:
            problems.append(
                Problem(
                    "/limits/maxOrderNotional",
                    f"maxOrderNotional {order} is greater than maxPositionNotional {position}: "
                    "one order could never be placed whole",
                )
            )
    kill = doc.get("killSwitch")
    if isinstance(kill, dict):
        drawdown = _decimal(kill.get("maxDrawdownPct"))
        if drawdown is not None and not 0 < drawdown <= HUNDRED:
            problems.append(
                Problem("/killSwitch/maxDrawdownPct", "a percentage greater than 0 and at most 100")
            )
    instruments = doc.get("instruments")
    if isinstance(instruments, dict):
        allowed = instruments.get("allowed")
        restricted = instruments.get("restricted")
        if isinstance(allowed, list) and isinstance(restricted, list):
            both = sorted({a for a in allowed if isinstance(a, str)} & set(restricted))
            for symbol in both:
                problems.append(
                    Problem(
                        "/instruments/restricted",
                        f"{symbol} is both allowed and restricted",
                    )
                )
    return problems
