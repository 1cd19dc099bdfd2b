"""The gateway's JSON (orjson) reads and writes what the standard library did."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.codec import dumps, loads

BODIES = [
    b'{"channel":"openclaw","metadata":{"notificationsOptIn":true}}',
    b' {"a": [1, 2.5, -0.0, 1E2, "\\u00e9\\n", null, false]}\n',
    '{"caf\u00e9":"\u2028"}'.encode(),
    b'{"a":1,"a":2}',  # duplicate keys: the last one wins, in both
    b'{"a":123456789012345678901234567890,"b":-9223372036854775809}',  # exact, not floats
    b'{"a":18446744073709551615,"b":-9223372036854775808}',
    b'{"a":"123456789","b":[123456789,12]}',  # many digits, no long run
    b'{"id":"12345678901234567890123","n":1}',  # a long run inside a string
    b'{"a":"\\ud800"}',  # a lone surrogate escape
    b'\xef\xbb\xbf{"a":1}',  # a UTF-8 byte order mark
    '{"a":1}'.encode("utf-16"),
    '{"a":"x"}'.encode("utf-32-le"),
]

MALFORMED = [
    b'{"a":1,}',
    b"[1,]",
    b'{"a":1}x',
    b'{"a":"\x01"}',
    b'{"a":"\xff"}',
    b"{'a':1}",
    b'{"a":01}',
    b"",
    b"nul",
]


@pytest.mark.parametrize("raw", BODIES)
def test_loads_reads_what_the_standard_library_reads(raw: bytes) -> None:
    expected = json.loads(raw)
    got = loads(raw)
    assert repr(got) == repr(expected)  # repr: NaN, -0.0 and int vs float compare exactly


@pytest.mark.parametrize("raw", MALFORMED)
def test_loads_refuses_what_the_standard_library_refuses_with_its_message(raw: bytes) -> None:
    with pytest.raises((json.JSONDecodeError, UnicodeDecodeError)) as expected:
        json.loads(raw)
    with pytest.raises(type(expected.value)) as got:
        loads(raw)
    assert str(got.value) == str(expected.value)


VALUES: list[Any] = [
    {"status": "ok"},
    {"sessionId": "ses_1", "metadata": {"b": [1, 2.5, True, None], "a": "caf\u00e9 \u2028"}},
    {"n": 18446744073709551615, "m": -9223372036854775808, "f": 1e16, "g": 0.1, "z": -0.0},
    {"control": '\x00\x1f\x7f"\\/</script>'},
]


@pytest.mark.parametrize("value", VALUES)
def test_dumps_writes_the_same_bytes_as_before(value: Any) -> None:
    assert dumps(value) == json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def test_small_floats_differ_only_in_how_the_exponent_is_spelt() -> None:
    assert dumps({"x": 1e-7}) == b'{"x":1e-7}'
    assert json.loads(dumps({"x": 1e-7})) == {"x": 1e-7}


@pytest.mark.parametrize(
    "value",
    [{"detail": "quoted \ud800 from a body"}, {"n": 1 << 64}, {"n": -(1 << 63) - 1}, {1: "x"}],
)
def test_what_orjson_refuses_is_written_by_the_standard_library(value: Any) -> None:
    assert dumps(value) == json.dumps(value, separators=(",", ":")).encode()


@pytest.mark.parametrize(
    "raw", [b'{"a":NaN}', b'{"b":Infinity}', b'{"c":[-Infinity]}', b'{"d":{"e":1e400}}']
)
def test_loads_refuses_numbers_json_has_not(raw: bytes) -> None:
    """NaN, Infinity and a number too large for a double are no JSON value a command could
    store or answer with: refused like malformed JSON (400), not read and failed later."""
    with pytest.raises(json.JSONDecodeError, match="not a JSON value"):
        loads(raw)
