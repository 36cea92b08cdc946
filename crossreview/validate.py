"""`crossreview validate`: a task is well formed, its oracle passes and a no-op fails.

Runs outside the pipeline and writes nothing to the ledger: checking a task
is not an intervention to be counted.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

from .agents import Workspace
from .default_plugins.offline_agents import NoopAgent, OracleAgent
from .models import AgentSpec, Task
from .verify import run_tests
from .worktrees import (
    HOLDOUT_DIRNAME,
    create_worktree,
    prepare_base,
    remove_worktree,
    reset_to,
    take_diff,
    worktrees_root,
)


@dataclass
class Check:
    """One check of one task: what was checked, whether it held, and why not."""

    name: str
    ok: bool
    detail: str = ""


@dataclass
class TaskValidation:
    """Every check of one task."""

    task: str
    path: Path
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


def validate_task(task: Task, state_dir: Path) -> TaskValidation:
    """Apply oracle and noop in throwaway worktrees and run the tests (and holdout) on each."""
    report = TaskValidation(task.id, task.path, [Check("well formed", True)])
    base = prepare_base(task, state_dir)
    run = "validate-" + secrets.token_hex(3)
    for agent_cls, name in ((OracleAgent, "oracle"), (NoopAgent, "noop")):
        spec = AgentSpec(name=name, spec=name)
        path = worktrees_root(state_dir) / run / task.id / name
        create_worktree(state_dir, base, path)
        try:
            ws = Workspace(path=path, task=task, agent=spec, instruction=task.instruction,
                           timeout=task.agent_timeout, suite_dir=task.path.parent)
            solved = agent_cls(spec).solve(ws)
            if solved.status != "ok":
                report.checks.append(Check(f"{name} runs", False, solved.error or solved.status))
                continue
            diff = take_diff(path, base.commit).text
            # No changed= here or for the holdout below: the oracle applies the task author's trusted
            # solution and the noop changes nothing, so no candidate conftest.py needs a canary; and a
            # task folder's verifier must name {tests}, where the canary beside the tests already applies.
            tests = run_tests(task, path)
            summary = f"{tests.passed}/{tests.total} tests pass"
            if name == "oracle":
                detail = summary if tests.all_passed else summary + _failing(tests) + _tail(tests.output)
                report.checks.append(Check("oracle passes the tests", tests.all_passed, detail))
                if task.holdout_dir.is_dir():
                    reset_to(path, base.commit, diff)
                    hold = run_tests(task, path, source=task.holdout_dir, dirname=HOLDOUT_DIRNAME)
                    hsum = f"{hold.passed}/{hold.total} holdout tests pass"
                    report.checks.append(Check("oracle passes the holdout", hold.all_passed, hsum + ("" if hold.all_passed else _failing(hold))))
            else:
                fails = not tests.all_passed
                report.checks.append(Check(
                    "noop fails the tests", fails,
                    summary if fails else summary + ": the tests pass on the unchanged repository, so they cannot tell a fix from no change",
                ))
        finally:
            remove_worktree(state_dir, base, path)
    run_dir = worktrees_root(state_dir) / run
    if run_dir.is_dir():
        import shutil

        shutil.rmtree(run_dir, ignore_errors=True)
    return report


def _failing(tests) -> str:
    names = [o.name for o in tests.outcomes if o.outcome in ("failed", "error")][:5]
    extra = "; timed out" if tests.timed_out else ""
    return (": failing " + ", ".join(names) if names else "") + extra


def _tail(output: str) -> str:
    lines = [ln for ln in output.strip().splitlines() if ln.strip()][-3:]
    return ("\n      " + "\n      ".join(lines)) if lines else ""
