"""A test hook: kill this process with SIGKILL at a named point of a task run.

    CROSSREVIEW_TEST_CRASH_AT=solve:b:after-agent crossreview run tasks/

The value is a comma-separated list of points, each ``NODE:WHERE`` or
``NODE:AGENT:WHERE`` (the agent whose branch it is; for review, the
reviewing agent). The first point reached kills the process at once, as a
power cut or the OOM killer would: no cleanup, no flush. The crash-safety
tests use it to check that `crossreview resume` loses nothing that had
finished. The points:

    prepare:after                    the base commit is fixed
    solve[:AGENT]:before             the worktree exists, the agent has not started
    solve[:AGENT]:after-agent        the agent finished, its diff is not taken yet
    solve[:AGENT]:after              the candidate is built, not yet checkpointed
    verify[:AGENT]:before / :after   around the task's tests
    review[:AGENT]:before / :after   around one review
    decide:after                     the policy decided, not yet checkpointed
    holdout:after                    holdout tests ran on every candidate
    record:before-branch             about to keep the accepted branch
    record:before-ledger             the branch is kept, the ledger not written
    record:after-ledger              the ledger is written, the graph not finished
    task:before-cleanup              the task run finished, its worktrees not removed
    human:recorded                   `decide` wrote the human's decision, the graph has not taken it

Not for anything but tests: nothing reads it unless it is set.
"""

from __future__ import annotations

import os
import signal

ENV = "CROSSREVIEW_TEST_CRASH_AT"


def crash_point(node: str, where: str, agent: str | None = None) -> None:
    """SIGKILL this process if $CROSSREVIEW_TEST_CRASH_AT names this point."""
    wanted = os.environ.get(ENV)
    if not wanted:
        return
    here = {f"{node}:{where}"}
    if agent:
        here.add(f"{node}:{agent}:{where}")
    if any(p.strip() in here for p in wanted.split(",")):
        os.kill(os.getpid(), signal.SIGKILL)
