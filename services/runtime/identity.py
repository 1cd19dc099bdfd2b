"""Internal identities: who a process is when it calls a service, and who is calling.

There are five identities, one per process kind: `gateway`, `audit`, `risk`, `execution` and
`conversation`. What a service may be asked by whom is the table in
services/runtime/callers.py; this module only establishes who the caller is:

- tokens (GATE4_TLS=off or tls): each process sends its own GATE4_<NAME>_SERVICE_TOKEN in
  `x-gate4-service-token`; a service knows only the tokens' SHA-256
  (GATE4_SERVICE_TOKEN_DIGESTS), so holding one service's configuration is not enough to
  pose as another;
- certificates (GATE4_TLS=mtls): every process presents `<name>.crt`, signed by the CA in
  the TLS folder, whose common name is its identity; no token is sent.

With GATE4_TLS=tls or mtls, servers present their certificate and clients verify it against
`ca.crt` (`gate4 dev up` creates a dev CA, cli/devca.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import grpc

from services.runtime import errors
from services.runtime.config import IDENTITIES, Settings, token_digest
from services.runtime.metadata import MD_SERVICE_TOKEN

CA_FILE = "ca.crt"
#: Where grpc puts the peer certificate's common name in a call's auth context.
COMMON_NAME = "x509_common_name"


def certificate_files(settings: Settings, identity: str) -> tuple[Path, Path, Path]:
    """The CA certificate, and the identity's certificate and private key."""
    folder = settings.tls_path()
    return folder / CA_FILE, folder / f"{identity}.crt", folder / f"{identity}.key"


def outgoing_token(settings: Settings, identity: str) -> str:
    """The token `identity` sends on its calls; empty when its certificate speaks for it."""
    return "" if settings.tls == "mtls" else settings.service_token_of(identity)


def server_credentials(settings: Settings, identity: str) -> grpc.ServerCredentials | None:
    """TLS for a service's port, requiring client certificates with mtls; None when off."""
    if settings.tls == "off":
        return None
    ca, cert, key = (p.read_bytes() for p in certificate_files(settings, identity))
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=settings.tls == "mtls"
    )


def channel_credentials(settings: Settings, identity: str) -> grpc.ChannelCredentials | None:
    """What `identity` dials services with: the CA to verify them, and with mtls its own
    certificate; None when TLS is off."""
    if settings.tls == "off":
        return None
    ca, cert, key = certificate_files(settings, identity)
    if settings.tls == "mtls":
        return grpc.ssl_channel_credentials(ca.read_bytes(), key.read_bytes(), cert.read_bytes())
    return grpc.ssl_channel_credentials(ca.read_bytes())


class CallerIdentifier:
    """Names the internal identity behind an incoming call, or refuses it (UNAUTHENTICATED)."""

    def __init__(self, settings: Settings) -> None:
        self.by_certificate = settings.tls == "mtls"
        self._by_digest = {d: name for name, d in settings.service_token_digest_map().items()}

    def caller(
        self, metadata: Mapping[str, str], auth_context: Mapping[str, Iterable[bytes]]
    ) -> str:
        if self.by_certificate:
            names = [n.decode() for n in auth_context.get(COMMON_NAME, ())]
            if len(names) != 1 or names[0] not in IDENTITIES:
                raise errors.Unauthenticated("the caller's certificate names no platform identity")
            return names[0]
        token = metadata.get(MD_SERVICE_TOKEN, "")
        # Looked up by digest: the comparison never runs over the token itself.
        name = self._by_digest.get(token_digest(token)) if token else None
        if name is None:
            raise errors.Unauthenticated("missing or invalid service token")
        return name
