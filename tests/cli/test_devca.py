"""The dev CA `gate4 dev up` creates for GATE4_TLS=tls|mtls (cli/devca.py)."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cli.devca import ensure_dev_ca
from services.runtime.config import IDENTITIES


def certificate(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_one_certificate_per_identity_signed_by_the_dev_ca(tmp_path: Path) -> None:
    written = ensure_dev_ca(tmp_path)
    expected = {"ca.crt", "ca.key", *(f"{n}.{e}" for n in IDENTITIES for e in ("crt", "key"))}
    assert {p.name for p in written} == expected
    ca = certificate(tmp_path / "ca.crt")
    for name in IDENTITIES:
        cert = certificate(tmp_path / f"{name}.crt")
        cert.verify_directly_issued_by(ca)
        (common_name,) = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        assert common_name.value == name  # how a service recognises its caller under mtls
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert {name, f"gate4-{name}", "localhost"} <= set(names.get_values_for_type(x509.DNSName))
        assert ipaddress.ip_address("127.0.0.1") in names.get_values_for_type(x509.IPAddress)
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH} <= set(usage)
        assert stat.S_IMODE((tmp_path / f"{name}.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "ca.key").stat().st_mode) == 0o600


def test_a_second_run_keeps_what_is_valid_and_reissues_under_a_new_ca(tmp_path: Path) -> None:
    ensure_dev_ca(tmp_path)
    before = (tmp_path / "risk.crt").read_bytes()
    assert ensure_dev_ca(tmp_path) == []
    assert (tmp_path / "risk.crt").read_bytes() == before
    # A new CA (its files deleted) makes every certificate signed by the old one useless.
    (tmp_path / "ca.key").unlink()
    rewritten = {p.name for p in ensure_dev_ca(tmp_path)}
    assert {"ca.crt", "risk.crt", "gateway.key"} <= rewritten
    certificate(tmp_path / "risk.crt").verify_directly_issued_by(certificate(tmp_path / "ca.crt"))
