"""Run a command confined to a directory, with a hard timeout.

The process gets its own session so a timeout kills the whole tree (an agent
that spawns a test runner that spawns a server leaves nothing behind).
The interpreter running crossreview comes first on PATH, so ``python`` in a
task's verifier command is the one crossreview (and pytest) is installed in,
whether or not the user activated a virtualenv.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path


_live: set[subprocess.Popen] = set()
_live_lock = threading.Lock()
"""Children running right now, so an interrupted run can stop them all.

Module state on purpose: the children are this process's, and Ctrl-C must
reach every one of them wherever in the graph's thread pool it was started
(they run in their own sessions, so the terminal's SIGINT does not).
"""


_stopping = threading.Event()


class Stopping(Exception):
    """Raised by a confined command interrupted because crossreview is shutting down."""


def kill_all_children(stop: bool = True) -> int:
    """Kill every confined command still running; returns how many there were.

    With ``stop``, commands started afterwards are refused too: the process is
    shutting down and nodes still finishing must not start new work.
    """
    if stop:
        _stopping.set()
    with _live_lock:
        procs = list(_live)
    for proc in procs:
        _kill_tree(proc)
    return len(procs)


@dataclass
class ProcResult:
    """How a confined command ended."""

    returncode: int | None
    stdout: str
    stderr: str
    timed_out: bool
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a child gets: ours, our interpreter first on PATH, plus ``extra``."""
    env = dict(os.environ)
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    env.pop("PYTHONPATH", None)  # the candidate's imports must come from its worktree
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # keep __pycache__ out of candidates' diffs
    if extra:
        env.update(extra)
    return env


def _kill_tree(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


_MAX_OUTPUT = 1 << 20


def _read_tail(fh) -> str:
    """The last MiB a command printed (its end is where the errors are)."""
    size = fh.seek(0, os.SEEK_END)
    fh.seek(max(0, size - _MAX_OUTPUT))
    return fh.read().decode("utf-8", errors="replace")


def run_confined(
    argv: list[str] | str,
    cwd: Path,
    timeout: float,
    env: dict[str, str] | None = None,
    shell: bool = False,
    stdin_data: str | None = None,
) -> ProcResult:
    """Run ``argv`` in ``cwd``; kill its whole process group after ``timeout`` seconds."""
    started = time.monotonic()
    if _stopping.is_set():
        raise Stopping("crossreview is stopping: not started")
    # Output goes to files, not pipes: a command that leaves a background
    # process holding its stdout open must not look like a hang. We wait for
    # the leader only, then kill whatever it left in its group.
    with tempfile.TemporaryFile() as out_f, tempfile.TemporaryFile() as err_f, tempfile.TemporaryFile() as in_f:
        if stdin_data is not None:
            in_f.write(stdin_data.encode())
            in_f.seek(0)
        proc = subprocess.Popen(
            argv,
            cwd=str(cwd),
            env=child_env(env),
            shell=shell,
            stdin=in_f if stdin_data is not None else subprocess.DEVNULL,
            stdout=out_f,
            stderr=err_f,
            start_new_session=True,
        )
        timed_out = False
        with _live_lock:
            _live.add(proc)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        except BaseException:
            # Ctrl-C or a crash of ours: never leave the child running.
            _kill_tree(proc)
            proc.wait()
            raise
        finally:
            _kill_tree(proc)  # the leader's leftovers (or, on timeout, the leader) go too
            proc.wait()
            with _live_lock:
                _live.discard(proc)
        out, err = _read_tail(out_f), _read_tail(err_f)
    if _stopping.is_set():
        # Killed because we are shutting down, not because the command failed:
        # raising keeps this half-done work out of the checkpoint, so a resume
        # runs it again instead of recording a candidate that never finished.
        raise Stopping("crossreview is stopping: killed")
    return ProcResult(
        returncode=None if timed_out else proc.returncode,
        stdout=out or "",
        stderr=err or "",
        timed_out=timed_out,
        seconds=time.monotonic() - started,
    )
