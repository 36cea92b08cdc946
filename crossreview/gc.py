"""`crossreview gc`: stop processes and remove worktrees and work branches left by killed processes.

Nothing a run needs is lost: a parked or killed run keeps every finished
candidate's diff in its checkpoint and rebuilds worktrees when resumed.
"""

from __future__ import annotations

from pathlib import Path

from .ledger import Ledger
from .sandbox import kill_leftovers
from .tasks import load_task
from .worktrees import _pid_alive, gc, owner_pids, repos_with_work_branches


def collect(state_dir: Path, ledger_path: Path | None = None) -> tuple[int, int, int]:
    """Remove orphans under ``state_dir``; returns (worktrees, branches, processes) removed.

    Processes first: a command a killed run left running (see
    ``sandbox.kill_leftovers``) would go on writing in the worktrees removed here.
    """
    extra: list[Path] = []
    live: set[str] = set()
    waiting: set[str] = set()
    owners = owner_pids(state_dir)
    ledger_file = ledger_path or state_dir / "ledger.db"
    if ledger_file.exists():
        led = Ledger(ledger_file)
        for row in led.runs():
            if row["status"] == "running" and row["pid"]:
                owners.add(row["pid"])
            if row["status"] == "running" and _pid_alive(row["pid"]):
                live.add(row["id"])
            if row["status"] == "waiting":
                waiting.add(row["id"])
            config = (led.get_run(row["id"]) or {}).get("config", {})
            repos = [Path(config["gate"]["repo"]) / ".git"] if (config.get("gate") or {}).get("repo") else []
            for path in config.get("tasks", []):
                task = load_task(Path(path))
                if not isinstance(task, list) and not task.repo_is_folder:
                    dot_git = task.repo_path / ".git"
                    repos.append(dot_git if dot_git.exists() else task.repo_path)  # a bare repository
            extra += [g for g in repos if g not in extra]
    processes = kill_leftovers(owners)  # only those whose owner is dead
    _drop_gate_snapshots(state_dir, keep=live | waiting)
    return (*gc(state_dir, repos_with_work_branches(state_dir, extra), keep_runs=live), processes)


def _drop_gate_snapshots(state_dir: Path, keep: set[str]) -> None:
    """The base-branch copies of gate runs nobody will resume (a parked one keeps its copy)."""
    import shutil

    root = state_dir / "gate"
    if root.is_dir():
        for d in root.iterdir():
            if d.is_dir() and d.name not in keep:
                shutil.rmtree(d, ignore_errors=True)
