"""The auditor's commands: checkpoint, verify --since, signatures and the chain key, run as a
real program on real SQLite files."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa

import workflow as wf
from tests.integration.test_cli_safety import run
from tests.support import Clock, actor_for, drive, tampering

DAMAGED, USAGE = 1, 2


@pytest.fixture
def database(tmp_path: Path) -> Path:
    path = tmp_path / "idcards.db"
    url = f"sqlite:///{path}"
    wf.upgrade(url)
    with wf.Workflow(url, clock=Clock()) as flow:
        for n, state in enumerate(("collected", "ready", "transmitted", "submitted"), start=1):
            drive(flow, state, n=n)
    return path


def keys(tmp_path: Path) -> tuple[Path, Path]:
    private, public = tmp_path / "auditor.pem", tmp_path / "auditor.pub"
    subprocess.run(
        ["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(private)], check=True
    )
    subprocess.run(
        ["openssl", "pkey", "-in", str(private), "-pubout", "-out", str(public)], check=True
    )
    return private, public


def test_a_signed_checkpoint_then_verify_since(database: Path, tmp_path: Path) -> None:
    private, public = keys(tmp_path)
    taken = run(
        "checkpoint",
        "-o",
        str(tmp_path / "cp.json"),
        "--key",
        str(private),
        cwd=tmp_path,
        db=database,
    )
    assert taken.returncode == 0, taken.stderr
    statement = json.loads((tmp_path / "cp.json").read_text())
    assert statement["signature"]["algorithm"] == "ed25519"
    result = run(
        "verify",
        "--since",
        str(tmp_path / "cp.json"),
        "--public-key",
        str(public),
        cwd=tmp_path,
        db=database,
    )
    assert result.returncode == 0, result.stderr
    assert "extends the checkpoint" in result.stdout and "signature: valid" in result.stdout
    # new commands: still extends
    url = f"sqlite:///{database}"
    with wf.Workflow(url, clock=Clock()) as flow:
        drive(flow, "transmitted", n=9)
    again = run("verify", "--since", str(tmp_path / "cp.json"), "--json", cwd=tmp_path, db=database)
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert report["checkpoint"]["extends"] is True
    assert report["checkpoint"]["new_rows"] == 2


def test_a_forged_signature_or_a_rewritten_history_exits_1(database: Path, tmp_path: Path) -> None:
    private, public = keys(tmp_path)
    path = tmp_path / "cp.json"
    assert (
        run(
            "checkpoint", "-o", str(path), "--key", str(private), cwd=tmp_path, db=database
        ).returncode
        == 0
    )
    forged = json.loads(path.read_text())
    forged["rows"] -= 1
    (tmp_path / "forged.json").write_text(json.dumps(forged))
    result = run(
        "verify",
        "--since",
        str(tmp_path / "forged.json"),
        "--public-key",
        str(public),
        cwd=tmp_path,
        db=database,
    )
    assert result.returncode == DAMAGED and "signature: invalid" in result.stdout
    with tampering(f"sqlite:///{database}") as raw, raw.begin() as conn:
        conn.execute(sa.text("DELETE FROM idcard_transition_log WHERE seq = 6"))
    result = run("verify", "--since", str(path), cwd=tmp_path, db=database)
    assert result.returncode == DAMAGED
    assert "does NOT extend" in result.stdout and "removed" in result.stdout


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["verify", "--since", "missing.json"], "can't read checkpoint file"),
        (["verify", "--public-key", "x.pub"], "give --since too"),
        (["checkpoint", "-o", "cp.json", "--key", "missing.pem"], "can't read private key"),
        (["--chain-key-file", "short.key", "verify"], "at least 32 bytes"),
    ],
)
def test_usage_errors_exit_2_in_one_line(
    database: Path, tmp_path: Path, args: list[str], says: str
) -> None:
    (tmp_path / "short.key").write_bytes(b"k" * 10)
    result = run(*args, cwd=tmp_path, db=database)
    assert result.returncode == USAGE, (result.stdout, result.stderr)
    assert len(result.error_lines) == 1 and says in result.error_lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_verify_under_the_chain_key(tmp_path: Path) -> None:
    path = tmp_path / "keyed.db"
    url = f"sqlite:///{path}"
    wf.upgrade(url)
    key = tmp_path / "chain.key"
    key.write_bytes(bytes(range(32)))
    with wf.Workflow(url, clock=Clock(), chain_key=key.read_bytes()) as flow:
        view = drive(flow, "transmitted", n=1)
    keyed = run("--chain-key-file", str(key), "verify", cwd=tmp_path, db=path)
    assert keyed.returncode == 0 and "under the chain key: all intact" in keyed.stdout
    assert run("verify", cwd=tmp_path, db=path).returncode == DAMAGED  # without the key
    with wf.Workflow(url, clock=Clock()) as intruder:
        intruder.approve(view.id, actor=actor_for("approve", view))
    result = run("--chain-key-file", str(key), "verify", "--json", cwd=tmp_path, db=path)
    assert result.returncode == DAMAGED
    assert [b["problem"] for b in json.loads(result.stdout)["broken"]] == ["unkeyed_row"]
