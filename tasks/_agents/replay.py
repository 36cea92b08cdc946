"""Command agent that replays a recorded attempt of a coding agent.

Usage: replay.py NAME

Run by crossreview with cwd = the candidate's git worktree. Applies
``recordings/NAME/<task_id>.patch`` (next to this script) with ``git apply``.
If there is no recording for the task, the agent "gives up": it says so on
stderr, changes nothing and exits 0.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

RECORDINGS = Path(__file__).resolve().parent / "recordings"


def task_id() -> str:
    tid = os.environ.get("CROSSREVIEW_TASK_ID")
    if tid:
        return tid
    task_dir = os.environ.get("CROSSREVIEW_TASK_DIR")
    if task_dir:
        return Path(task_dir).name
    sys.exit("replay.py: CROSSREVIEW_TASK_ID is not set")


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: replay.py NAME", file=sys.stderr)
        return 2
    name = argv[0]
    task = task_id()
    patch = RECORDINGS / name / f"{task}.patch"
    if not patch.is_file():
        print(f"{name} gave up on {task}", file=sys.stderr)
        return 0
    result = subprocess.run(
        ["git", "apply", "--whitespace=nowarn", str(patch)],
        cwd=os.getcwd(),
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        print(f"{name}: recording {patch} does not apply:\n{result.stderr}", file=sys.stderr)
        return result.returncode
    print(f"{name} replayed {patch.name}", file=sys.stderr)
    return 0


def report_free_usage() -> None:
    """Replaying a recording calls no model: tell crossreview it cost nothing
    (a command that says nothing is recorded as of unknown cost)."""
    usage_file = os.environ.get("CROSSREVIEW_USAGE_FILE")
    if usage_file:
        Path(usage_file).write_text('{"tokens_in": 0, "tokens_out": 0, "cost": 0.0}')


if __name__ == "__main__":
    report_free_usage()
    sys.exit(main(sys.argv[1:]))
