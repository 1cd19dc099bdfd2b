"""The dev certificate authority behind GATE4_TLS=tls|mtls on a local stack.

`gate4 dev up` (and the test stacks) call `ensure_dev_ca` when TLS is on: it writes
`ca.crt`/`ca.key` and, for each internal identity, `<name>.crt`/`<name>.key` into the TLS
folder (GATE4_TLS_DIR, default var/tls), keeping what is already there and still valid.
Each certificate's common name is its identity (how a service recognises its caller under
mtls) and its names cover the local and Kubernetes addresses (127.0.0.1, localhost,
gate4-<name>). Dev only: production certificates come from your own CA.
"""

from __future__ import annotations

import ipaddress
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from services.runtime.config import IDENTITIES
from services.runtime.identity import CA_FILE

CA_KEY_FILE = "ca.key"
VALIDITY = timedelta(days=365)
#: A certificate closer than this to its end is issued again.
RENEW_BEFORE = timedelta(days=7)


def ensure_dev_ca(folder: Path, identities: tuple[str, ...] = IDENTITIES) -> list[Path]:
    """Creates what is missing or expiring; returns the files it wrote."""
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    ca_cert, ca_key = _load(folder / CA_FILE, folder / CA_KEY_FILE)
    if ca_cert is None or ca_key is None:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = _issue(
            "gate4 dev CA", ca_key.public_key(), ca_key, None, authority=True, names=()
        )
        written += _save(folder, "ca", ca_cert, ca_key, cert_name=CA_FILE, key_name=CA_KEY_FILE)
    for identity in identities:
        cert, _key = _load(folder / f"{identity}.crt", folder / f"{identity}.key")
        if cert is not None and _issued_by(cert, ca_cert):
            continue
        key = ec.generate_private_key(ec.SECP256R1())
        names = (identity, f"gate4-{identity}", "localhost")
        cert = _issue(identity, key.public_key(), ca_key, ca_cert, authority=False, names=names)
        written += _save(folder, identity, cert, key)
    return written


def _load(
    cert_path: Path, key_path: Path
) -> tuple[x509.Certificate | None, ec.EllipticCurvePrivateKey | None]:
    """A certificate and key still good for a while, or (None, None)."""
    if not cert_path.is_file() or not key_path.is_file():
        return None, None
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    if cert.not_valid_after_utc - RENEW_BEFORE < datetime.now(UTC):
        return None, None
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        return None, None
    return cert, key


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _issue(
    common_name: str,
    public_key: ec.EllipticCurvePublicKey,
    signer: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    *,
    authority: bool,
    names: tuple[str, ...],
) -> x509.Certificate:
    now = datetime.now(UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject if issuer else subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=authority, path_length=None), critical=True)
    )
    if authority:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        alternative: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
        alternative += [
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ]
        builder = builder.add_extension(
            x509.SubjectAlternativeName(alternative), critical=False
        ).add_extension(
            # One certificate per process: it serves (its port) and calls (its peers).
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    return builder.sign(signer, hashes.SHA256())


def _save(
    folder: Path,
    name: str,
    cert: x509.Certificate,
    key: ec.EllipticCurvePrivateKey,
    *,
    cert_name: str | None = None,
    key_name: str | None = None,
) -> list[Path]:
    cert_path = folder / (cert_name or f"{name}.crt")
    key_path = folder / (key_name or f"{name}.key")
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # The key is private to its owner from the first byte written.
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        os.fchmod(fh.fileno(), 0o600)
        fh.write(key_bytes)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return [cert_path, key_path]
