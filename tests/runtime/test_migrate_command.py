"""Migrations applied apart from the processes: the command a migration Job runs, and
processes that skip their own with GATE4_MIGRATE_ON_START=false."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from gateway.apikeys import open_database
from services.runtime.config import Settings
from services.runtime.storage.migrations import current_revision, main, migrate_all
from tests.support import k8s


def test_the_command_migrates_every_component_and_only_the_named_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(var_dir=tmp_path / "one")
    assert set(migrate_all(settings, ["risk"])) == {"risk"}
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == ["risk.db"]
    done = migrate_all(settings)
    assert set(done) == {"audit", "risk", "execution", "conversation", "gateway"}
    assert all(done.values())

    monkeypatch.setenv("GATE4_VAR_DIR", str(tmp_path / "two"))
    assert main(["audit", "gateway"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"audit: at {done['audit']}",
        f"gateway: at {done['gateway']}",
    ]
    with pytest.raises(SystemExit):
        main(["nonsense"])


def test_a_process_told_not_to_migrate_leaves_the_schema_alone(tmp_path: Path) -> None:
    db = open_database(Settings(var_dir=tmp_path, migrate_on_start=False))
    try:
        assert current_revision(db, "gateway") is None
        assert db.read_sync(lambda c: sa.inspect(c).get_table_names()) == []
    finally:
        db.close()
    db = open_database(Settings(var_dir=tmp_path))  # the default, as in dev
    try:
        assert current_revision(db, "gateway") is not None
    finally:
        db.close()


def test_the_migration_job_refuses_the_manifests_placeholders(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    job = k8s.named("prod")["Job", "gate4-migrate"]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    env, secret_env = k8s.container_env("prod", container)
    assert set(secret_env) == {"GATE4_DATABASE_URL"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("GATE4_VAR_DIR", str(tmp_path))
    assert main([]) == 2
    err = capsys.readouterr().err
    assert "GATE4_DATABASE_URL: its password is a placeholder" in err
    assert secret_env["GATE4_DATABASE_URL"] not in err
    assert list(tmp_path.iterdir()) == []
