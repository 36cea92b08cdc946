"""`python -m bench compare --against REV`: this checkout against another revision, run by run.

On a shared machine the speed of the host drifts by tens of percent within
minutes, so two benchmark runs taken minutes apart cannot tell a 20 ms change
from the weather. This runs both versions of crossreview back to back on the
same suites, alternating which goes first, and reports the median of the
per-pair differences: drift that lasts longer than one pair cancels out.

Two workloads, the two the issue's targets are about:

- ``overhead``: one suite of trivial tasks, oracle + noop, ``--jobs 2``: the
  difference per task run, wall-clock and CPU-seconds (perf stat, whole process tree);
- ``parallel``: one task with N sleeping command agents and reviewers: the
  difference in the task run's wall-clock (prepare to record, from the ledger).

The other revision runs from a temporary git worktree of this repository
(``PYTHONPATH`` points at it; the installed dependencies are shared).
"""

from __future__ import annotations

import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

from .run import ENV, HERE, timed_with_cpu, trivial_task, write


def _checkout(rev: str, dest: Path) -> None:
    subprocess.run(["git", "-C", str(HERE.parent), "worktree", "add", "--quiet", "--detach", str(dest), rev],
                   check=True, capture_output=True, text=True)


def _env(src: Path | None) -> dict:
    env = dict(ENV)
    if src is not None:
        env["PYTHONPATH"] = str(src)  # ahead of the editable install of this checkout
    return env


def _task_run_wall(state: Path) -> float:
    db = sqlite3.connect(state / "ledger.db")
    try:
        rows = db.execute("SELECT started, finished FROM events").fetchall()
    finally:
        db.close()
    ts = [datetime.fromisoformat(s).timestamp() for s, _ in rows] + [datetime.fromisoformat(f).timestamp() for _, f in rows]
    return max(ts) - min(ts)


def _paired(rounds: int, run_one) -> dict:
    """Run ``run_one(version)`` for both versions ``rounds`` times, alternating the order."""
    got: dict[str, list] = {"this": [], "other": []}
    for r in range(rounds):
        for who in (("other", "this") if r % 2 == 0 else ("this", "other")):
            got[who].append(run_one(who))
    return got


def compare(rev: str, quick: bool) -> dict:
    """Both workloads, paired; see the module docstring."""
    rounds, tasks, agents = (3, 10, (2,)) if quick else (6, 30, (2, 8))
    with tempfile.TemporaryDirectory(prefix="bench-compare-") as tmp:
        root = Path(tmp)
        other = root / "other"
        _checkout(rev, other)
        try:
            sources = {"this": None, "other": other}
            out: dict = {"against": rev, "rounds": rounds}

            suite = root / "suite"
            for i in range(tasks):
                trivial_task(suite, f"t{i:04d}")

            def overhead(who: str) -> tuple[float, float | None]:
                shutil.rmtree(root / ".crossreview", ignore_errors=True)
                argv = [sys.executable, "-m", "crossreview", "run", str(suite), "--agent", "oracle", "--agent", "noop",
                        "--jobs", "2"]
                wall, cpu, code = timed_with_cpu(argv, root, _env(sources[who]))
                assert code == 0, f"{who}: crossreview run exited {code}"
                return wall, cpu

            got = _paired(rounds, overhead)
            d_wall = [(t[0] - o[0]) / tasks * 1000 for t, o in zip(got["this"], got["other"])]
            row = {"tasks": tasks, "this_s": round(statistics.median(w for w, _ in got["this"]), 3),
                   "other_s": round(statistics.median(w for w, _ in got["other"]), 3),
                   "ms_per_task_run": round(statistics.median(d_wall), 1), "pairs": [round(x, 1) for x in d_wall]}
            if all(c is not None for _, c in got["this"] + got["other"]):
                d_cpu = [(t[1] - o[1]) / tasks * 1000 for t, o in zip(got["this"], got["other"])]
                row["cpu_ms_per_task_run"] = round(statistics.median(d_cpu), 1)
            out["overhead"] = row

            par = root / "par"
            trivial_task(par / "suite", "t")
            agent = write(par / "agent.py", "import time, pathlib\ntime.sleep(2.0)\n"
                          "pathlib.Path('mod.py').write_text('def ok():\\n    return True\\n')\n")
            reviewer = write(par / "review.py", "import time\ntime.sleep(1.0)\n"
                             "print('{\"verdict\": \"approve\", \"confidence\": 1}')\n")
            out["parallel"] = []
            for n in agents:
                args = [sys.executable, "-m", "crossreview", "run", str(par / "suite"), "--json",
                        "--reviewer", f"command:{{python}} {reviewer}"]
                for _ in range(n):
                    args += ["--agent", f"command:{{python}} {agent}"]

                def parallel(who: str, args=args) -> float:
                    shutil.rmtree(par / ".crossreview", ignore_errors=True)
                    subprocess.run(args, cwd=par, env=_env(sources[who]), capture_output=True, check=False)
                    return _task_run_wall(par / ".crossreview")

                got = _paired(rounds, parallel)
                diffs = [(t - o) * 1000 for t, o in zip(got["this"], got["other"])]
                out["parallel"].append({"agents": n, "this_s": round(statistics.median(got["this"]), 3),
                                        "other_s": round(statistics.median(got["other"]), 3),
                                        "ms": round(statistics.median(diffs), 1), "pairs": [round(x) for x in diffs]})
            return out
        finally:
            subprocess.run(["git", "-C", str(HERE.parent), "worktree", "remove", "--force", str(other)],
                           capture_output=True, check=False)


def print_compare(result: dict) -> None:
    """The comparison as a few lines (negative: this checkout is faster)."""
    o = result["overhead"]
    print(f"== compare: this checkout - {result['against']} (median of {result['rounds']} pairs; negative = faster)")
    cpu = f", {o['cpu_ms_per_task_run']:+.1f} CPU-ms" if "cpu_ms_per_task_run" in o else ""
    print(f"  overhead, {o['tasks']} trivial tasks, --jobs 2: {o['ms_per_task_run']:+.1f} ms per task run{cpu} "
          f"(medians {o['this_s']} s vs {o['other_s']} s)")
    for p in result["parallel"]:
        print(f"  parallel, {p['agents']} agents: {p['ms']:+.0f} ms per task run (medians {p['this_s']} s vs {p['other_s']} s)")

