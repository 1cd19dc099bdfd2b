"""The audit hash chain: pure logic, no I/O.

Every tenant's events form one chain ordered by `sequence` (1, 2, 3, ...). Event n stores
`prevHash` (the hash of event n-1; 64 ASCII zeros for n = 1) and

    hash = lowercase_hex(sha256(ascii_bytes(prevHash) || canonical_event))

`canonical_event` is the UTF-8 encoding of a JSON object with exactly these 19 keys:

    accountId channel data deploymentId eventId occurredAt orderId outcome policyVersion
    reason recordedAt requestId sequence sessionId source tenantId traceId type userId

written with keys sorted (recursively, by code point), no white space (separators "," and
":"), and non-ASCII characters as raw UTF-8 (not \\u-escaped; only '"', '\\' and control
characters are escaped, the way Python's json module does it). Values:

- `sequence`: a JSON integer.
- `occurredAt`, `recordedAt`: UTC, always `YYYY-MM-DDTHH:MM:SS.ffffffZ` (six fractional
  digits), exactly as the service stores and returns them.
- `data`: the event's JSON object (`{}` when unset); a number with an integral value is
  written as an integer (1.0 -> 1), any other number as the shortest decimal that round-trips
  (Python's float repr).
- every other key: a JSON string, `""` when the field is unset.

`position`, `prevHash` and `hash` are not covered: position is a global storage cursor, and
the other two are the chain itself. For example, the first event of tenant "t1"
(`{"type": "risk.decision", ...}`) hashes as

    sha256(b"000...000" + b'{"accountId":"","channel":"",...,"type":"risk.decision","userId":""}')

This is services.runtime.canonical.canonical_json over EventContent.canonical_fields()
(services/runtime/auditfields.py); an external verifier can recompute the
chain from `Query` results alone.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from services.runtime.auditfields import EventContent

GENESIS_HASH = "0" * 64
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def format_timestamp(value: datetime) -> str:
    """Fixed-width RFC 3339 UTC with microseconds, so text order is time order."""
    if value.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    v = value.astimezone(UTC)
    # strftime's %Y does not zero-pad years below 1000 on every platform.
    return (
        f"{v.year:04d}-{v.month:02d}-{v.day:02d}T"
        f"{v.hour:02d}:{v.minute:02d}:{v.second:02d}.{v.microsecond:06d}Z"
    )


def parse_timestamp(value: str) -> datetime:
    return datetime.strptime(value, TIMESTAMP_FORMAT).replace(tzinfo=UTC)


def ceil_to_microsecond(seconds: int, nanos: int) -> datetime:
    """A protobuf Timestamp rounded up to the microseconds the store keeps.

    Stored times have microsecond precision, so `t >= x` and `t < x` for a stored t give the
    same answers against ceil(x) as against the exact x.
    """
    micros = nanos // 1000 + (1 if nanos % 1000 else 0)
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds, microseconds=micros)


def link_hash(prev_hash: str, content: EventContent) -> str:
    """The hash of an event chained after prev_hash."""
    return hashlib.sha256(prev_hash.encode("ascii") + content.canonical()).hexdigest()


@dataclass(frozen=True)
class ChainProblem:
    sequence: int
    problem: str


@dataclass
class ChainChecker:
    """Checks one tenant's events fed in sequence order, up to the first broken link.

    `checked` counts the events found intact before the first problem.
    """

    expected_sequence: int = 1
    last_hash: str = GENESIS_HASH
    checked: int = 0
    problem: ChainProblem | None = None

    def check(self, content: EventContent, prev_hash: str, stored_hash: str) -> bool:
        """Checks the next event; returns False (and records why) at the first problem."""
        if self.problem is not None:
            return False
        seq = content.sequence
        if seq != self.expected_sequence:
            return self._fail(
                self.expected_sequence,
                f"sequence {self.expected_sequence}: missing (the next stored event is {seq})",
            )
        if prev_hash != self.last_hash:
            if seq == 1:
                return self._fail(seq, "sequence 1: prev_hash is not the genesis hash")
            return self._fail(
                seq, f"sequence {seq}: prev_hash does not match the hash of sequence {seq - 1}"
            )
        if link_hash(prev_hash, content) != stored_hash:
            return self._fail(seq, f"sequence {seq}: stored hash does not match its content")
        self.expected_sequence = seq + 1
        self.last_hash = stored_hash
        self.checked += 1
        return True

    def check_head(self, head_sequence: int, head_hash: str) -> bool:
        """After the last event: the chain head row must name the last event checked."""
        if self.problem is not None:
            return False
        last = self.expected_sequence - 1
        if head_sequence > last:
            return self._fail(
                last + 1,
                f"sequence {last + 1}: missing (the chain head is at sequence {head_sequence})",
            )
        if head_sequence < last:
            return self._fail(
                head_sequence + 1,
                f"sequence {head_sequence + 1}: stored beyond the chain head "
                f"(head is at sequence {head_sequence})",
            )
        if head_hash != self.last_hash:
            return self._fail(last, f"chain head: hash does not match the hash of sequence {last}")
        return True

    def _fail(self, sequence: int, problem: str) -> bool:
        self.problem = ChainProblem(sequence, problem)
        return False
