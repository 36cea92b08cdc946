"""The undertaker: what kills every command a crossreview process started, once it is gone.

    python -I -S crossreview/undertaker.py PID:START LOOKS   (stdin: the read end of the lifeline)

One runs beside every crossreview process that starts commands (see
``sandbox.run_confined``), in a session of its own. It blocks reading its
stdin, a pipe nothing is written to and whose write end only that crossreview
process holds. However the process ends -- SIGKILL, the OOM killer, a normal
exit -- the kernel closes that end and the read returns. Then it SIGKILLs
every process whose environment carries ``CROSSREVIEW_OWNER=PID:START`` (what
``run_confined`` gives every command, and every command's descendants
inherit), and their process groups, and exits.

Why a process apart, and why this way:

- bwrap's ``--die-with-parent`` (PR_SET_PDEATHSIG) is armed by bwrap itself,
  late, twice, and a death that lands before either leaves something running:
  bwrap, or its sandbox, or a sandbox process blocked forever before it ran
  anything (bubblewrap issues #633, #700). Without bwrap there is no death
  signal at all. The undertaker does not care when the death came: whatever
  carries the mark dies, at whatever stage of its start it was.
- A child forked by crossreview but not yet exec'd (a kill caught it right
  after the fork) holds the write end too, until subprocess closes it just
  before exec: the read returns only once every such child is about to
  carry the mark, and the undertaker waits out the last instant
  (``forks_not_yet_execd``).
- One process for all commands, started once: a command costs nothing more.

Standard library only, and nothing of crossreview: it runs isolated (``-I``).
``sandbox.kill_leftovers`` sweeps with the same ``sweep``.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sys
import time
from typing import Callable

OWNER_ENV = "CROSSREVIEW_OWNER"


def sweep(match: Callable[[str, list[bytes]], bool], proc_dir: str = "/proc", groups: bool = False) -> int:
    """SIGKILL every process whose environment (NUL-split) ``match(pid, env)`` accepts; how many.

    With ``groups``, the process groups they lead too: a command leads a
    session of its own, and its group holds what it started (an unmarked
    one too, which cleared its environment). Sweeps again while it finds
    some: a process killed mid-fork may still have left a child.
    """
    me = os.getpid()
    killed: set[int] = set()  # still listed while they die: killed once, counted once
    for _ in range(10):
        found = 0
        leaders: set[int] = set()
        try:
            entries = os.listdir(proc_dir)
        except OSError:
            return len(killed)
        for entry in entries:
            if not entry.isdigit() or int(entry) == me or int(entry) in killed:
                continue
            try:
                with open(f"{proc_dir}/{entry}/environ", "rb") as fh:
                    env = fh.read()
            except OSError:
                continue
            if not match(entry, env.split(b"\0")):
                continue
            if groups:
                fields = stat_fields(entry, proc_dir)
                if fields and len(fields) > 2 and fields[2] == entry:
                    leaders.add(int(entry))
            try:
                os.kill(int(entry), signal.SIGKILL)
                killed.add(int(entry))
                found += 1
            except (ProcessLookupError, PermissionError):
                pass
        for pgid in leaders - {os.getpgid(0)}:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if not found:
            break
    return len(killed)


def stat_fields(pid: int | str, proc_dir: str = "/proc") -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state, ppid, pgrp, ...), or None."""
    try:
        with open(f"{proc_dir}/{pid}/stat", "rb") as fh:
            # "pid (comm) S ...": the fields follow the last ')' (comm may hold anything).
            return fh.read().rsplit(b")", 1)[1].decode().split()
    except (OSError, IndexError, UnicodeDecodeError):
        return None


def marked(mark: str) -> Callable[[str, list[bytes]], bool]:
    """A ``sweep`` match: the environment carries ``CROSSREVIEW_OWNER=mark``."""
    needle = f"{OWNER_ENV}={mark}".encode()
    return lambda _pid, env: needle in env


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return None


def looks(pid: int | str, proc_dir: str = "/proc") -> str | None:
    """A digest of process ``pid``'s command line and environment (as exec gave them), or None."""
    cmdline, env = _read(f"{proc_dir}/{pid}/cmdline"), _read(f"{proc_dir}/{pid}/environ")
    if not cmdline or env is None:
        return None
    return hashlib.sha256(cmdline + b"\0\0" + env).hexdigest()


def forks_not_yet_execd(owner: str, owner_looks: str, proc_dir: str = "/proc") -> bool:
    """Whether a child of crossreview process ``owner`` (its pid) may still be on its way to exec.

    Such a child lets go of the lifeline a moment before exec (subprocess
    closes the descriptors it does not pass on), and until exec it carries
    crossreview's environment, not the mark. Recognised by that: a session
    leader (every command starts a session) that started after ``owner``,
    which ``looks`` as ``owner`` did (``owner_looks``). Only ever waited for,
    never killed: a look-alike costs a wait.
    """
    owner_stat = stat_fields(owner, proc_dir)
    born = int(owner_stat[19]) if owner_stat and len(owner_stat) > 19 and owner_stat[19].isdigit() else 0
    me = os.getpid()
    for entry in os.listdir(proc_dir):
        if not entry.isdigit() or int(entry) in (me, int(owner)):
            continue
        fields = stat_fields(entry, proc_dir)
        if not fields or len(fields) <= 19 or fields[0] in "ZX" or fields[3] != entry:  # [3]: session id
            continue
        if fields[19].isdigit() and int(fields[19]) >= born and looks(entry, proc_dir) == owner_looks:
            return True
    return False


def main(argv: list[str]) -> int:
    """Wait for end-of-file on stdin, then kill what carries the mark ``argv[1]``.

    ``argv[2]``: how crossreview ``looks``, for ``forks_not_yet_execd``.
    """
    mark, owner_looks = argv[1], argv[2]
    owner = mark.partition(":")[0]
    os.chdir("/")  # hold no folder of crossreview's (a worktree, a mount) for as long as it runs
    os.closerange(3, 1 << 16)  # nor a file: posix_spawn passes on what is not close-on-exec
    # A Ctrl-C, a hangup or a `pkill -f crossreview` meant for crossreview must not take its
    # undertaker first: it would then have nobody to bury.
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)
    while True:
        try:
            if not os.read(0, 65536):
                break
        except InterruptedError:
            continue
        except OSError:
            break
    deadline = time.monotonic() + 10
    while True:  # bounded: a look-alike that never execs only delays the end
        sweep(marked(mark), groups=True)
        if not forks_not_yet_execd(owner, owner_looks) or time.monotonic() > deadline:
            break
        time.sleep(0.005)
    sweep(marked(mark), groups=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
