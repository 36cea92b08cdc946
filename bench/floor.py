"""The floor of a task run: what the required stack and the security features cost, with nothing else.

The overhead benchmark compares ``crossreview run`` with a baseline that only
copies trees and runs pytest. Between the two sit two kinds of cost:

- what the product must do whoever writes it: LangGraph (its import, its
  fan-out, a SQLite checkpoint per step, so a killed run resumes), a git
  base and one worktree per agent, each candidate's diff, the reset of each
  tree to exactly base + diff before its tests, the canary test file, and
  bubblewrap around every test run;
- crossreview's own orchestration: plugins, the ledger, reviews, policy,
  budgets, progress lines, tamper checks, locks and the rest.

``floor_run`` does only the first kind, through crossreview's own functions
for each piece (the same git commands, the same sandbox, the same verifier
command), in a LangGraph graph of the pipeline's shape whose other nodes do
nothing. With ``secure=False`` it leaves out the security features (the
reset, the canary, bubblewrap: the test command runs as the baseline runs
it), which leaves the required stack alone. The overhead benchmark runs
both beside the other two, so the gap splits into the stack, the security
features, and crossreview beyond them.
"""

from __future__ import annotations

import operator
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, TypedDict


class _State(TypedDict, total=False):
    task_dir: str
    base_git_dir: str
    base_commit: str
    results: Annotated[list, operator.add]


def floor_run(suite: Path, jobs: int, secure: bool = True) -> None:
    """Run every task of ``suite`` with an oracle and a noop agent through the required pieces only."""
    from langgraph.checkpoint.sqlite import SqliteSaver
    from langgraph.graph import END, START, StateGraph
    from langgraph.types import Send

    from crossreview.tasks import load_task
    from crossreview.verify import run_tests
    from crossreview.worktrees import (
        BaseRepo,
        create_worktree,
        ensure_state_dir,
        prepare_base,
        remove_worktrees,
        reset_to,
        take_diff,
        worktrees_root,
    )

    tasks = {}
    for d in sorted(p for p in suite.iterdir() if (p / "task.toml").exists()):
        task = load_task(d)
        if isinstance(task, list):
            raise SystemExit(f"floor: {d}: {task}")
        tasks[str(d)] = task
    state_dir = ensure_state_dir(Path(tempfile.mkdtemp(prefix="bench-floor-")))

    def tree(task_id: str, agent: str) -> Path:
        return worktrees_root(state_dir) / task_id / agent

    def prepare(s: _State) -> dict:
        base = prepare_base(tasks[s["task_dir"]], state_dir)
        return {"base_git_dir": str(base.git_dir), "base_commit": base.commit}

    def fan_out(s: _State) -> list:
        return [Send("solve", {**s, "agent": a}) for a in ("oracle", "noop")]

    def solve(p: dict) -> dict:
        task = tasks[p["task_dir"]]
        path = tree(task.id, p["agent"])
        create_worktree(state_dir, BaseRepo(Path(p["base_git_dir"]), p["base_commit"]), path)
        if p["agent"] == "oracle":
            shutil.copytree(task.solution_dir, path, dirs_exist_ok=True)
        diff = take_diff(path, p["base_commit"])
        if not secure:
            return {"results": [(p["agent"], _bare_tests(task, path))]}
        reset_to(path, p["base_commit"], diff.text)
        report = run_tests(task, path, changed=diff.files)
        return {"results": [(p["agent"], report.passed == report.total and report.total > 0)]}

    def record(s: _State) -> dict:
        task = tasks[s["task_dir"]]
        remove_worktrees(state_dir, BaseRepo(Path(s["base_git_dir"]), s["base_commit"]),
                         [tree(task.id, a) for a in ("oracle", "noop")])
        return {}

    g = StateGraph(_State)
    g.add_node("prepare", prepare)
    g.add_node("solve", solve)
    g.add_node("decide", lambda s: {})
    g.add_node("record", record)
    g.add_edge(START, "prepare")
    g.add_conditional_edges("prepare", fan_out, ["solve"])
    g.add_edge("solve", "decide")
    g.add_edge("decide", "record")
    g.add_edge("record", END)
    conn = sqlite3.connect(state_dir / "checkpoints.db", check_same_thread=False, timeout=60)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    graph = g.compile(checkpointer=SqliteSaver(conn))

    def task_run(key: str) -> None:
        cfg = {"configurable": {"thread_id": Path(key).name}, "max_concurrency": 2}
        out = graph.invoke({"task_dir": key}, cfg)
        if sorted(out["results"]) != [("noop", False), ("oracle", True)]:
            raise SystemExit(f"floor: {key}: unexpected outcomes {out['results']}")

    try:
        with ThreadPoolExecutor(jobs) as pool:
            list(pool.map(task_run, tasks))
    finally:
        conn.close()
        shutil.rmtree(state_dir, ignore_errors=True)


def _bare_tests(task, path: Path) -> bool:
    """The task's tests run as the baseline runs them: no sandbox, no canary."""
    from crossreview.verify import VERIFIER_ENV, build_command

    shutil.copytree(task.tests_dir, path / ".crossreview-tests")
    with tempfile.TemporaryDirectory(prefix="bench-floor-junit-") as tmp:
        cmd = build_command(task.verifier_command, ".crossreview-tests", Path(tmp) / "junit.xml")
        env = {**os.environ, **VERIFIER_ENV, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
        return subprocess.run(cmd, shell=True, cwd=path, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL).returncode == 0


if __name__ == "__main__":
    floor_run(Path(sys.argv[1]), int(sys.argv[2]), secure=sys.argv[3:] != ["--no-security"])
