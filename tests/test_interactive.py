"""An interactive `run` (a real terminal, outside CI) asks the human on the spot."""

from __future__ import annotations

import os
import pty
import subprocess
import sys

from conftest import read_until, approve_all_reviewer, cli_env, ledger_rows, make_task


def test_run_in_a_terminal_asks_and_records_the_answer(suite, tmp_path):
    make_task(suite)
    approve = approve_all_reviewer(tmp_path / "approve.py")
    env = cli_env()
    env.pop("CI")
    env["TERM"] = "dumb"
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "crossreview", "run", str(suite), "--agent", "noop", "--agent", "noop",
         "--reviewer", f"a={approve}", "--reviewer", "b=tests"],
        cwd=tmp_path, env=env, stdin=slave, stdout=subprocess.PIPE, stderr=slave,
    )
    os.close(slave)
    buf = bytearray()
    try:
        # a's reviewer approves b's failing candidate: a split, so the terminal channel asks.
        read_until(master, b"decision", buf)
        assert b"Where they disagree" in buf and b"pick a | pick b | reject | guide | skip" in buf
        os.write(master, b"pick b\n")
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    assert proc.returncode == 0, buf.decode(errors="replace")[-2000:]
    [tr] = ledger_rows(tmp_path / ".crossreview", "SELECT decision, winner FROM task_runs")
    assert (tr["decision"], tr["winner"]) == ("accepted", "b")
    [esc] = ledger_rows(tmp_path / ".crossreview", "SELECT * FROM escalations")
    assert esc["action"] == "pick" and esc["pick"] == "b" and esc["decided_by"]
    assert esc["created"] <= esc["first_shown"] <= esc["decided"]
