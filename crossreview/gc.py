"""`crossreview gc`: remove worktrees and work branches left by killed processes.

Nothing a run needs is lost: a parked or killed run keeps every finished
candidate's diff in its checkpoint and rebuilds worktrees when resumed.
"""

from __future__ import annotations

from pathlib import Path

from .ledger import Ledger
from .tasks import load_task
from .worktrees import _pid_alive, gc, repos_with_work_branches


def collect(state_dir: Path, ledger_path: Path | None = None) -> tuple[int, int]:
    """Remove orphans under ``state_dir``; returns (worktrees, branches) removed."""
    extra: list[Path] = []
    live: set[str] = set()
    ledger_file = ledger_path or state_dir / "ledger.db"
    if ledger_file.exists():
        led = Ledger(ledger_file)
        for row in led.runs():
            if row["status"] == "running" and _pid_alive(row["pid"]):
                live.add(row["id"])
            run = led.get_run(row["id"])
            for path in (run or {}).get("config", {}).get("tasks", []):
                task = load_task(Path(path))
                if not isinstance(task, list) and not task.repo_is_folder:
                    git_dir = task.repo_path / ".git"
                    if git_dir not in extra:
                        extra.append(git_dir)
    return gc(state_dir, repos_with_work_branches(state_dir, extra), keep_runs=live)
