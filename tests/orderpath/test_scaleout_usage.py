"""`gate4 dev scale-out` refusals that start nothing, and the topology it would start."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.devstack import SCALE_OUT, ScaleOut
from cli.main import main


@pytest.fixture(autouse=True)
def hermetic(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("GATE4_DATABASE_URL", raising=False)
    monkeypatch.delenv("GATE4_ENV", raising=False)
    monkeypatch.chdir(tmp_path)


def test_a_sqlite_url_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dev", "scale-out", "--postgres", "sqlite:///var/x.db"]) == 2
    assert "--postgres must be a postgresql:// URL" in capsys.readouterr().err


def test_refused_in_production(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GATE4_ENV", "prod")
    assert main(["dev", "scale-out"]) == 2
    assert "local development only" in capsys.readouterr().err


def test_an_unreachable_server_is_named_without_its_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Port 1 on loopback: nothing listens, the connection is refused at once.
    url = "postgresql://gate4:s3cret@127.0.0.1:1/gate4_scaleout"
    assert main(["dev", "scale-out", "--postgres", url, "--var-dir", "var"]) == 1
    err = capsys.readouterr()
    assert "cannot reach or create the database" in err.err
    assert "s3cret" not in err.out + err.err


def test_every_caller_dials_every_replica_and_each_listens_on_its_own(tmp_path: Path) -> None:
    scale = ScaleOut(tmp_path, "postgresql://postgres@127.0.0.1:5432/unused")
    assert [p.component for p in scale.processes.values()] == [
        kind for kind, count in SCALE_OUT.items() for _ in range(count)
    ]
    risks = ",".join(f"127.0.0.1:{p.port}" for p in scale.replicas_of("risk"))
    for proc in scale.processes.values():
        own = (
            proc.env[f"GATE4_{proc.component.upper()}_ADDR"] if proc.component != "gateway" else ""
        )
        if proc.component == "risk":
            assert own == f"127.0.0.1:{proc.port}"
        else:
            assert proc.env["GATE4_RISK_ADDR"] == risks, proc.name
        assert proc.env["GATE4_DATABASE_URL"].endswith("/unused")
        assert proc.log_path == tmp_path / "logs" / f"{proc.name}.log"
    assert scale.gateway_urls == [f"http://127.0.0.1:{p.port}" for p in scale.gateways]
