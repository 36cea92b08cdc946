"""Which process works on a run, or on one of its task runs, right now.

Locks are flocks on files under ``<state dir>/locks/``: the kernel drops them
when their process dies, however it dies, so a killed run or decide is free
to be resumed at once and nothing has to be cleaned up.

- ``<run>.lock``: held by `run` and `resume` for the whole run.
- ``<run>/<task>.lock``: held by whoever drives one task run's graph (a task
  run under way in `run` or `resume`, or `decide` carrying out a human's
  decision). Two processes never drive one graph at once.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator
from urllib.parse import quote


class Busy(Exception):
    """Another live process holds the lock; ``holder`` says which ("process 1234")."""

    def __init__(self, holder: str):
        super().__init__(holder)
        self.holder = holder


def run_lock_path(state_dir: Path, run: str) -> Path:
    """The lock file of a whole run."""
    return Path(state_dir) / "locks" / f"{run}.lock"


def task_run_lock_path(state_dir: Path, task_run: str) -> Path:
    """The lock file of one task run (``<run>/<task>``; the task id is quoted into one file name)."""
    run, _, task = task_run.partition("/")
    return Path(state_dir) / "locks" / run / f"{quote(task, safe='')}.lock"


@contextmanager
def hold(path: Path) -> Iterator[None]:
    """Hold the lock at ``path`` for this process, or raise :class:`Busy` at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        holder = fh.read().strip() or "another process"
        fh.close()
        raise Busy(holder) from None
    try:
        fh.seek(0)
        fh.truncate()
        fh.write(f"process {os.getpid()}")
        fh.flush()
        yield
    finally:
        fh.close()


def is_held(path: Path) -> bool:
    """Whether a live process holds the lock at ``path``."""
    try:
        fh = open(path)
    except OSError:
        return False
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        return False


def run_is_live(state_dir: Path, run: str) -> bool:
    """Whether some process works on ``run`` now: the run itself, or one of its task runs (a decide)."""
    if is_held(run_lock_path(state_dir, run)):
        return True
    folder = Path(state_dir) / "locks" / run
    try:
        return any(is_held(p) for p in folder.glob("*.lock"))
    except OSError:
        return False
