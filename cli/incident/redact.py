"""Redaction of everything an evidence bundle holds, and the final scan before it is written.

Two passes over every text that goes into the bundle:

1. known secret values, the ones in the environment of the capture (GATE4_TOKEN,
   GATE4_API_KEY, the runbook's TOKEN and API_KEY, GATE4_JWT_SECRET, every
   GATE4_<NAME>_SERVICE_TOKEN, any *PASSWORD*/*SECRET* variable, and the password of any
   URL in the environment), are replaced by the variable's name (`$TOKEN`), so a reader
   knows what stood there;
2. anything that looks like a credential whatever its origin (a JWT, a `g4k_` API key, a
   bearer token, the password of a URL) is replaced by a marker. Test tokens printed by a
   failing contract test, or a password someone typed into a kill-switch reason, end here.

`scan` then looks at the finished files once more and names (never prints) whatever still
looks like a secret; the bundle is not written when it finds anything.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

#: Variables whose values are secrets, in the names `var/dev-credentials.env` exports.
SECRET_VARIABLES = (
    "GATE4_TOKEN",
    "GATE4_API_KEY",
    "TOKEN",
    "API_KEY",
    "GATE4_JWT_SECRET",
    "GATE4_GATEWAY_SERVICE_TOKEN",
    "GATE4_AUDIT_SERVICE_TOKEN",
    "GATE4_RISK_SERVICE_TOKEN",
    "GATE4_EXECUTION_SERVICE_TOKEN",
    "GATE4_CONVERSATION_SERVICE_TOKEN",
)
_SECRET_NAME = re.compile(r"(PASSWORD|PASSWD|SECRET|_TOKEN|API_KEY)$", re.IGNORECASE)
#: Shorter values are too likely to occur by chance to be replaced everywhere.
MIN_SECRET_LENGTH = 8

JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{2,}\.eyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*")
API_KEY = re.compile(r"\bg4k_[A-Za-z0-9_-]{6,}")
BEARER = re.compile(r"(?i)\b(bearer)\s+(?!\$|\[redacted)([A-Za-z0-9._~+/=-]{16,})")
URL_PASSWORD = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@'\"]+):([^@\s/'\"]+)@")
API_KEY_HEADER = re.compile(
    r"(?i)\b(x-api-key['\"]?\s*[:=]\s*['\"]?)(?!\$|\[redacted)([^\s'\",}]{8,})"
)

REDACTED_JWT = "[redacted-jwt]"
REDACTED_API_KEY = "[redacted-api-key]"
REDACTED_TOKEN = "[redacted-token]"  # noqa: S105 - a marker, not a secret
REDACTED_PASSWORD = "***"  # noqa: S105 - a marker, not a secret


@dataclass(frozen=True)
class Finding:
    """Something that still looks like a secret: where and what kind, never the value."""

    path: str
    kind: str
    line: int


def _url_passwords(value: str) -> Iterable[str]:
    for match in URL_PASSWORD.finditer(value):
        password = match.group(2)
        if password != REDACTED_PASSWORD:
            yield password
    try:
        parts = urlsplit(value)
    except ValueError:
        return
    if parts.password and parts.password != REDACTED_PASSWORD:
        yield parts.password


class Redactor:
    """Replaces secret values by their variable's name and credential shapes by markers."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        secrets: dict[str, str] = {}
        for name, value in env.items():
            if not value:
                continue
            secret_name = name in SECRET_VARIABLES or _SECRET_NAME.search(name)
            if secret_name and len(value) >= MIN_SECRET_LENGTH:
                secrets.setdefault(value, f"${name}")
            for password in _url_passwords(value):
                if len(password) >= 4:
                    secrets.setdefault(password, f"${name}_PASSWORD")
        # Longest first, so a secret that contains another one is replaced whole.
        self._secrets = sorted(secrets.items(), key=lambda item: -len(item[0]))

    def add(self, value: str, name: str) -> None:
        """Also replace `value` (a secret known only at run time) with `$name`."""
        if len(value) >= MIN_SECRET_LENGTH:
            self._secrets.append((value, f"${name}"))
            self._secrets.sort(key=lambda item: -len(item[0]))

    def text(self, text: str) -> str:
        for value, name in self._secrets:
            if value in text:
                text = text.replace(value, name)
        text = JWT.sub(REDACTED_JWT, text)
        text = API_KEY.sub(REDACTED_API_KEY, text)
        text = BEARER.sub(lambda m: f"{m.group(1)} {REDACTED_TOKEN}", text)
        text = API_KEY_HEADER.sub(lambda m: f"{m.group(1)}{REDACTED_API_KEY}", text)
        return URL_PASSWORD.sub(lambda m: f"{m.group(1)}:{REDACTED_PASSWORD}@", text)

    def value(self, value: Any) -> Any:
        """A JSON-like value with every string (keys included) redacted."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.text(str(k)): self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        return value

    def scan(self, path: str, text: str) -> list[Finding]:
        """What in `text` still looks like a secret (after redaction there should be none)."""
        findings: list[Finding] = []
        for number, line in enumerate(text.splitlines(), start=1):
            kinds = []
            if any(value in line for value, _ in self._secrets):
                kinds.append("a secret value from the environment")
            if JWT.search(line):
                kinds.append("a JWT")
            if API_KEY.search(line):
                kinds.append("a g4k_ API key")
            if BEARER.search(line):
                kinds.append("a bearer token")
            if API_KEY_HEADER.search(line):
                kinds.append("an X-API-Key value")
            if any(True for _ in _url_passwords(line)):
                kinds.append("a password in a URL")
            findings += [Finding(path, kind, number) for kind in kinds]
        return findings
