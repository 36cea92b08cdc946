"""Run one agent CLI preset in the current directory (the candidate's worktree).

    python preset_runner.py claude-code|codex|aider|gemini [MODEL]

Started by crossreview (crossreview/default_plugins/presets.py) as a
``command:`` agent, inside the same sandbox: it reads the instruction from
$CROSSREVIEW_INSTRUCTION_FILE, runs the CLI non-interactively, passes its
output through, and writes what the CLI says it spent to
$CROSSREVIEW_USAGE_FILE (tokens, and cost when the CLI reports one).

Standard library only and no package imports: it runs by file path, so it
works wherever the sandbox lets the interpreter read this one file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable


def _model_flag(model: str | None) -> list[str]:
    return ["--model", model] if model else []


def argv_claude(model: str | None, instruction: Path) -> list[str]:
    return ["claude", "-p", "--output-format", "json", "--permission-mode", "acceptEdits", *_model_flag(model)]


def argv_codex(model: str | None, instruction: Path) -> list[str]:
    return ["codex", "exec", "--json", "--full-auto", "--skip-git-repo-check", *_model_flag(model), "-"]


def argv_aider(model: str | None, instruction: Path) -> list[str]:
    return ["aider", "--yes-always", "--no-auto-commits", "--no-dirty-commits", "--no-gitignore",
            "--no-check-update", "--no-show-model-warnings", "--no-pretty", "--no-stream",
            *_model_flag(model), "--message-file", str(instruction)]


def argv_gemini(model: str | None, instruction: Path) -> list[str]:
    return ["gemini", "--output-format", "json", "--yolo", *_model_flag(model),
            "--prompt", instruction.read_text(encoding="utf-8")]


def _last_json_object(text: str) -> dict | None:
    text = text.strip()
    for chunk in [text, *reversed(text.splitlines())]:
        chunk = chunk.strip()
        if not chunk.startswith("{"):
            continue
        try:
            data = json.loads(chunk)
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict):
            return data
    return None


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def usage_claude(stdout: str) -> dict | None:
    """Claude Code's ``--output-format json`` result: usage and total_cost_usd."""
    data = _last_json_object(stdout)
    if not data:
        return None
    u = data.get("usage") or {}
    cost = data.get("total_cost_usd", data.get("cost_usd"))
    return {
        "tokens_in": sum(_int(u.get(k)) for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")),
        "tokens_out": _int(u.get("output_tokens")),
        "cost": float(cost) if isinstance(cost, (int, float)) else None,
        "calls": _int(data.get("num_turns")),
    }


def usage_codex(stdout: str) -> dict | None:
    """Codex's ``exec --json`` events: the usage of every turn.completed (it reports no cost)."""
    tin = tout = turns = 0
    for line in stdout.splitlines():
        try:
            ev = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(ev, dict) and ev.get("type") == "turn.completed" and isinstance(ev.get("usage"), dict):
            turns += 1
            tin += _int(ev["usage"].get("input_tokens"))
            tout += _int(ev["usage"].get("output_tokens"))
    return {"tokens_in": tin, "tokens_out": tout, "cost": None, "calls": turns} if turns else None


_AIDER = re.compile(r"Tokens: ([\d.]+)(k?) sent, ([\d.]+)(k?) received\.(?: Cost: \$([\d.]+) message, \$([\d.]+) session\.)?")


def usage_aider(stdout: str) -> dict | None:
    """aider's "Tokens: 2.1k sent, 150 received. Cost: $0.01 message, $0.02 session." lines."""
    matches = _AIDER.findall(stdout)
    if not matches:
        return None

    def num(value: str, k: str) -> int:
        return int(round(float(value) * (1000 if k else 1)))

    session = matches[-1][5]
    return {
        "tokens_in": sum(num(m[0], m[1]) for m in matches),
        "tokens_out": sum(num(m[2], m[3]) for m in matches),
        "cost": float(session) if session else None,
        "calls": len(matches),
    }


def usage_gemini(stdout: str) -> dict | None:
    """Gemini CLI's ``--output-format json``: stats.models.<name>.tokens (it reports no cost)."""
    data = _last_json_object(stdout)
    models = ((data or {}).get("stats") or {}).get("models")
    if not isinstance(models, dict):
        return None
    tin = tout = calls = 0
    for m in models.values():
        m = m or {}
        tokens = m.get("tokens") or {}
        tin += _int(tokens.get("prompt"))
        tout += _int(tokens.get("candidates")) + _int(tokens.get("thoughts"))
        calls += _int((m.get("api") or {}).get("totalRequests"))
    return {"tokens_in": tin, "tokens_out": tout, "cost": None, "calls": calls}


RUNNERS: dict[str, tuple[str, Callable[[str | None, Path], list[str]], bool, Callable[[str], dict | None]]] = {
    # name: (executable, argv builder, instruction on stdin?, usage parser)
    "claude-code": ("claude", argv_claude, True, usage_claude),
    "codex": ("codex", argv_codex, True, usage_codex),
    "aider": ("aider", argv_aider, False, usage_aider),
    "gemini": ("gemini", argv_gemini, False, usage_gemini),
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in RUNNERS:
        print(f"usage: preset_runner.py {{{','.join(RUNNERS)}}} [MODEL]", file=sys.stderr)
        return 2
    executable, build, on_stdin, parse = RUNNERS[argv[0]]
    model = argv[1] if len(argv) > 1 and argv[1] else None
    instruction = Path(os.environ["CROSSREVIEW_INSTRUCTION_FILE"])
    if shutil.which(executable) is None:
        print(f"crossreview: `{executable}` is not on PATH inside the agent's sandbox", file=sys.stderr)
        return 127
    with open(instruction if on_stdin else os.devnull, "rb") as stdin:
        proc = subprocess.run(build(model, instruction), stdin=stdin, stdout=subprocess.PIPE, text=True, errors="replace")
    sys.stdout.write(proc.stdout)
    sys.stdout.flush()
    usage = parse(proc.stdout)
    usage_file = os.environ.get("CROSSREVIEW_USAGE_FILE")
    if usage is not None and usage_file:
        Path(usage_file).write_text(json.dumps(usage))
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
