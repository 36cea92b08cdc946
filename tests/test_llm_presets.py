"""Presets for agent CLIs (claude-code, codex, aider, gemini): fake executables on PATH check the
non-interactive invocation they get, do the task, and report usage the way the real ones do."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from conftest import ledger_rows, make_task, write

FAKE = """#!{python}
import json, os, pathlib, sys
name = pathlib.Path(sys.argv[0]).name
stdin = "" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
log = pathlib.Path(os.environ["FAKE_CLI_LOG"]) / (name + ".json")
log.write_text(json.dumps({{"argv": sys.argv[1:], "stdin": stdin, "cwd": os.getcwd()}}))
pathlib.Path("calc.py").write_text("def add(a, b):\\n    return a + b\\n")
print({output!r})
"""

OUTPUTS = {
    "claude": json.dumps({"type": "result", "subtype": "success", "result": "done", "num_turns": 3,
                          "total_cost_usd": 0.0123, "usage": {"input_tokens": 100, "cache_read_input_tokens": 20,
                                                               "output_tokens": 30}}),
    "codex": "\n".join(json.dumps(e) for e in [
        {"type": "thread.started", "thread_id": "t1"},
        {"type": "turn.completed", "usage": {"input_tokens": 400, "cached_input_tokens": 100, "output_tokens": 50}},
    ]),
    "aider": "Applied edit to calc.py\nTokens: 2.5k sent, 120 received. Cost: $0.0071 message, $0.0071 session.",
    "gemini": json.dumps({"response": "done", "stats": {"models": {"gemini-2.5-pro": {
        "api": {"totalRequests": 2}, "tokens": {"prompt": 700, "candidates": 40, "thoughts": 10}}}}}),
}


def fake_bin(tmp_path: Path) -> Path:
    bindir = tmp_path / "bin"
    for name, output in OUTPUTS.items():
        p = write(bindir / name, FAKE.format(python=sys.executable, output=output))
        p.chmod(0o755)
    return bindir


@pytest.mark.slow
def test_presets_run_the_clis_non_interactively(cli, suite, tmp_path):
    make_task(suite)
    instruction = (suite / "add" / "instruction.md").read_text()
    logs = tmp_path / "logs"
    logs.mkdir()
    bindir = fake_bin(tmp_path)
    # The CLIs run in the agent sandbox: let it see the fake binaries (under /tmp, hidden by default)
    # and write their argument logs.
    write(suite / "crossreview.toml", f'sandbox_readable = ["{bindir}"]\nsandbox_writable = ["{logs}"]\n'
                                      'sandbox_env = ["FAKE_CLI_LOG"]\n')
    env = {"PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}", "FAKE_CLI_LOG": str(logs)}
    res = cli("run", str(suite), "--json", "--agent", "cc=claude-code:sonnet", "--agent", "cx=codex",
              "--agent", "ai=aider:openai/gpt-4o", "--agent", "gm=gemini:gemini-2.5-pro", env=env)
    assert res.returncode == 0, res.stderr
    [t] = res.json()["tasks"]
    assert all(c["status"] == "ok" and c["tests_passed"] == 2 for c in t["candidates"]), t

    seen = {p.stem: json.loads(p.read_text()) for p in logs.glob("*.json")}
    assert seen["claude"]["argv"] == ["-p", "--output-format", "json", "--permission-mode", "acceptEdits",
                                      "--model", "sonnet"]
    assert seen["claude"]["stdin"] == instruction
    assert seen["codex"]["argv"] == ["exec", "--json", "--full-auto", "--skip-git-repo-check", "-"]
    assert seen["codex"]["stdin"] == instruction
    argv = seen["aider"]["argv"]
    assert argv[:8] == ["--yes-always", "--no-auto-commits", "--no-dirty-commits", "--no-gitignore",
                        "--no-check-update", "--no-show-model-warnings", "--no-pretty", "--no-stream"]
    assert argv[8:10] == ["--model", "openai/gpt-4o"] and argv[10] == "--message-file"
    assert Path(argv[11]).read_text() == instruction
    assert seen["gemini"]["argv"] == ["--output-format", "json", "--yolo", "--model", "gemini-2.5-pro",
                                      "--prompt", instruction]
    for name, agent in {"claude": "cc", "codex": "cx", "aider": "ai", "gemini": "gm"}.items():
        assert Path(seen[name]["cwd"]).parts[-3:] == (res.json()["run"], "add", agent)  # its own worktree

    rows = {r["agent"]: r for r in ledger_rows(tmp_path / ".crossreview", "SELECT * FROM candidates")}
    usage = {a: (r["tokens_in"], r["tokens_out"], r["cost"], r["calls"]) for a, r in rows.items()}
    assert usage["cc"] == (120, 30, pytest.approx(0.0123), 3)
    assert usage["cx"] == (400, 50, None, 1)  # codex reports no money: unknown, not 0
    assert usage["ai"] == (2500, 120, pytest.approx(0.0071), 1)
    assert usage["gm"] == (700, 50, None, 2)


def test_a_preset_whose_cli_is_missing_is_a_usage_error(cli, suite, tmp_path):
    make_task(suite)
    res = cli("run", str(suite), "--agent", "claude-code", env={"PATH": "/usr/bin:/bin"})
    assert res.returncode == 2
    assert "claude-code needs `claude` on PATH" in res.stderr and "npm install" in res.stderr


def test_presets_are_listed(cli):
    doc = cli("plugins", "--json").json()
    agents = {a["name"]: a["plugin"] for a in doc["agents"]}
    assert {"claude-code", "codex", "aider", "gemini", "llm"} <= set(agents)
    assert agents["codex"] == "crossreview.default_plugins.presets"
    assert "llm" in {r["name"] for r in doc["reviewers"]}
