"""crossreview's benchmarks, each a ratio against a baseline measured in the same run.

    python -m bench            # everything (about 32 minutes on 2 cores)
    python -m bench --quick    # smaller sizes (about 2 minutes)
    python -m bench startup    # one benchmark: parallel, overhead, scaling, environments, startup, costs, calibration
                               # (calibration alone: about 10 minutes, 3 with --quick)
    python -m bench compare --against REV   # this checkout against another revision, run by run

Prints a table and writes bench/results/<date>.json with the machine's description.
Absolute times on shared machines drift; the ratios are what to compare.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

from .calibration import bench_calibration  # noqa: E402 - its own module, so this file's benchmarks stay as they are

HERE = Path(__file__).resolve().parent
ENV = {**os.environ, "CI": "true", "NO_COLOR": "1", "COLUMNS": "200"}
VERIFIER_ENV = {**ENV, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", "PYTHONDONTWRITEBYTECODE": "1"}


# --- helpers ------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def trivial_task(root: Path, name: str, verifier: str = "python -m pytest -q {tests}") -> Path:
    """A task whose oracle passes and noop fails, with one tiny test."""
    d = root / name
    write(d / "task.toml", f'[verifier]\ncommand = "{verifier}"\n')
    write(d / "instruction.md", "Make ok() return True.\n")
    write(d / "repo" / "mod.py", "def ok():\n    return False\n")
    write(d / "solution" / "mod.py", "def ok():\n    return True\n")
    write(d / "tests" / "test_mod.py", "from mod import ok\n\ndef test_ok():\n    assert ok()\n")
    return d


def run_cli(args: list[str], cwd: Path) -> tuple[float, int, int]:
    """(wall seconds, peak RSS in KiB, exit code) of one crossreview process."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "crossreview", *args], cwd=cwd, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    return wall, usage.ru_maxrss, os.waitstatus_to_exitcode(status)


def timed(argv: list[str], cwd: Path | None = None, env: dict | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(argv, cwd=cwd, env=env or ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - start


def best_of(n: int, fn) -> float:
    return min(fn() for _ in range(n))


# --- 1. parallel efficiency -------------------------------------------------


def _cpu_of(argv: list[str], cwd: Path | None = None, env: dict | None = None) -> tuple[float, float]:
    """(wall seconds, CPU seconds: user + system) of one process run to its end."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, env=env or ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL)
    _, _, usage = os.wait4(proc.pid, 0)
    return time.perf_counter() - start, usage.ru_utime + usage.ru_stime


def _pytest_once(task: Path) -> tuple[float, float]:
    """(wall, CPU) seconds of the task's tests on the solution, run the way the verifier runs them (best of 3)."""
    with tempfile.TemporaryDirectory(prefix="bench-test-") as tmp:
        tree = Path(tmp) / "tree"
        shutil.copytree(task / "repo", tree)
        shutil.copytree(task / "solution", tree, dirs_exist_ok=True)
        shutil.copytree(task / "tests", tree / ".crossreview-tests")
        env = {**VERIFIER_ENV, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
        runs = [_cpu_of(["python", "-m", "pytest", "-q", ".crossreview-tests", "-p", "no:cacheprovider"], tree, env)
                for _ in range(3)]
        return min(w for w, _ in runs), min(c for _, c in runs)


PARALLEL_LATENCIES = {
    # (agent s, review s): "stress" keeps the test runs' and reviewers' CPU a
    # large share of the task run, so a 2-core machine's limit shows; "agent-like"
    # is closer to real agents (minutes) and model reviews (seconds to tens).
    "stress": (2.0, 1.0),
    "agent-like": (30.0, 10.0),
}


def bench_parallel(quick: bool) -> list[dict]:
    """N sleeping agents and reviewers: wall-clock of the graph against its critical path.

    ``efficiency`` is the issue's figure: critical path (slowest agent + one
    test run + slowest review, each timed alone, start-up included) / the
    median wall-clock of three task runs. It assumes a free core for every
    process. ``cpu_bound_s`` is what no scheduler can beat on this machine:
    after the last agent, the N test runs and the N×(N-1) review processes
    need ``work_cpu_s`` CPU-seconds (each measured alone, outside crossreview),
    which take at least work / cores; then the last review still sleeps its
    latency. ``efficiency_vs_cpu_bound`` = that bound / wall-clock.

    It runs at two latencies (``PARALLEL_LATENCIES``): with 2 s agents the
    N test runs' CPU, which no scheduler can overlap beyond the cores, is a
    large share of the task run; with 30 s agents and 10 s reviews it is the
    small share it is with real agents (one run each, not three).
    ``--quick``: 1 s and 0.5 s agents and reviews, one run.
    """
    settings = {"quick": (1.0, 0.5)} if quick else PARALLEL_LATENCIES
    rows = []
    for label, (latency, review_latency) in settings.items():
        # One run at agent-like latencies: 40 s task runs drift little, in proportion.
        rows += _parallel_at(label, latency, review_latency, rounds=3 if label == "stress" else 1)
    return rows


def _parallel_at(label: str, latency: float, review_latency: float, rounds: int) -> list[dict]:
    """bench_parallel's rows for one agent and review latency."""
    cores = os.cpu_count() or 1
    rows = []
    for n in (2, 3, 5, 8):
        with tempfile.TemporaryDirectory(prefix="bench-par-") as tmp:
            root = Path(tmp)
            suite = root / "suite"
            trivial_task(suite, "t")
            agent = write(root / "agent.py", f"import time, pathlib\ntime.sleep({latency})\n"
                          "pathlib.Path('mod.py').write_text('def ok():\\n    return True\\n')\n")
            reviewer = write(root / "review.py", f"import time\ntime.sleep({review_latency})\n"
                             "print('{\"verdict\": \"approve\", \"confidence\": 1}')\n")
            args = ["run", str(suite), "--json", "--reviewer", f"command:{{python}} {reviewer}"]
            for _ in range(n):
                args += ["--agent", f"command:{{python}} {agent}"]
            test_s, test_cpu = _pytest_once(suite / "t")
            # Each alone: the script without its sleep (best of 3), plus the sleep,
            # so a 30 s agent is not run three more times just to time it.
            review_runs = [_cpu_of([sys.executable, "-c", reviewer.read_text().replace(f"time.sleep({review_latency})",
                                                                                       "pass")], root)
                           for _ in range(3)]
            review_s, review_cpu = review_latency + min(w for w, _ in review_runs), min(c for _, c in review_runs)
            with tempfile.TemporaryDirectory(prefix="bench-agent-") as scratch:
                agent_s = latency + min(
                    _cpu_of([sys.executable, "-c", agent.read_text().replace(f"time.sleep({latency})", "pass")],
                            Path(scratch))[0] for _ in range(3))
            load = os.getloadavg()[0]
            walls = []
            for _ in range(rounds):  # the median task run: one run is at the mercy of the neighbours
                shutil.rmtree(root / ".crossreview", ignore_errors=True)
                run_cli(args, root)
                db = sqlite3.connect(root / ".crossreview" / "ledger.db")
                ev = db.execute("SELECT node, started, finished FROM events").fetchall()
                db.close()
                t = lambda s: datetime.fromisoformat(s).timestamp()  # noqa: E731
                # The whole task run, prepare to record, against what cannot be avoided:
                # the slowest agent, one test run, the slowest review.
                walls.append(max(t(f) for _, s, f in ev) - min(t(s) for _, s, f in ev))
            wall = _median(walls)
            # Each process as it runs alone, interpreter start-up included: the
            # agent's and reviewer's own start-up is theirs, not crossreview's.
            critical = agent_s + test_s + review_s
            work = n * test_cpu + n * (n - 1) * review_cpu
            bound = agent_s + max(test_s, work / cores) + review_s
            rows.append({
                "latency": label, "agents": n, "reviews": n * (n - 1), "agent_s": round(agent_s, 3),
                "review_s": round(review_s, 3),
                "test_s": round(test_s, 3), "critical_path_s": round(critical, 3), "task_run_wall_s": round(wall, 3),
                "task_run_walls_s": [round(w, 3) for w in walls],
                "efficiency": round(critical / wall, 3),
                "test_cpu_s": round(test_cpu, 3), "review_cpu_s": round(review_cpu, 3), "work_cpu_s": round(work, 2),
                "cpu_bound_s": round(bound, 3), "efficiency_vs_cpu_bound": round(bound / wall, 3),
                "best_possible_efficiency": round(critical / bound, 3), "load_before": round(load, 2),
            })
    return rows


# --- 2. overhead per task run -----------------------------------------------


def _baseline(suite: Path, jobs: int) -> float:
    """The essential work only: a tree per candidate, the oracle's files, the same pytest command."""
    tasks = sorted(p for p in suite.iterdir() if (p / "task.toml").exists())
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-base-") as tmp:
        def candidate(task: Path, agent: str) -> bool:
            tree = Path(tmp) / task.name / agent
            shutil.copytree(task / "repo", tree)
            if agent == "oracle":
                shutil.copytree(task / "solution", tree, dirs_exist_ok=True)
            shutil.copytree(task / "tests", tree / ".crossreview-tests")
            junit = tree.parent / f"{agent}.xml"
            rc = subprocess.run(
                f"python -m pytest -q .crossreview-tests --junitxml={junit} -p no:cacheprovider --rootdir=.",
                shell=True, cwd=tree, env={**VERIFIER_ENV, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"},
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
            return rc == 0

        def task_run(task: Path) -> None:
            with ThreadPoolExecutor(2) as pool:  # the agents of one task run together, as in crossreview
                list(pool.map(lambda a: candidate(task, a), ("oracle", "noop")))

        with ThreadPoolExecutor(jobs) as pool:
            list(pool.map(task_run, tasks))
    return time.perf_counter() - start


def timed_with_cpu(argv: list[str], cwd: Path, env: dict | None = None) -> tuple[float, float | None, int]:
    """(wall seconds, CPU-seconds of the whole process tree or None, exit code) of one run.

    CPU comes from `perf stat` (counting only, no sampling: it does not slow
    the run). getrusage misses what runs inside a sandbox (bwrap's init reaps
    it), and wall-clock on a shared machine drifts with the neighbours' load;
    CPU time of the whole process tree does neither. None where perf is
    missing or not allowed.
    """
    with tempfile.NamedTemporaryFile(suffix=".perf", delete=False) as fh:
        out = Path(fh.name)
    wrap = ["perf", "stat", "-x,", "-e", "task-clock", "-o", str(out), "--"] if shutil.which("perf") else []
    start = time.perf_counter()
    proc = subprocess.run([*wrap, *argv], cwd=cwd, env=env or ENV, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    cpu = None
    try:
        for line in out.read_text().splitlines():
            fields = line.split(",")
            if len(fields) > 2 and fields[2].startswith("task-clock"):
                try:
                    cpu = float(fields[0]) / 1000
                except ValueError:
                    cpu = None
    except OSError:
        pass
    finally:
        out.unlink(missing_ok=True)
    return wall, cpu, proc.returncode


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2


def bench_overhead(quick: bool) -> dict:
    """`crossreview run` on trivial tasks (oracle+noop) against the minimal baseline.

    Both run ``rounds`` times, alternating, on a small and a three-times
    larger suite; the medians are compared. Two readings of "per task run":

    - ``ratio`` / ``extra_ms_per_task``: the whole run of the small suite
      (crossreview's start-up, ~1 s of imports, spread over its tasks);
    - ``marginal_*``: what one more task run costs, from the difference
      between the two suite sizes (start-up cancels out; it is measured on
      its own by the startup benchmark).

    Two more contenders split the gap (``bench/floor.py``): ``stack``, the
    required stack alone (LangGraph with its checkpoints, a git base, worktrees
    and diffs, the test command run as the baseline runs it), and ``floor``,
    the stack with the security features (the reset to base + diff, the
    canary, bubblewrap). What crossreview costs beyond ``floor`` is its own
    orchestration (``beyond_floor_*``).

    Wall-clock is the issue's figure; CPU-seconds of each whole process tree
    (perf stat) say the same without the neighbours' load.
    """
    n, jobs, rounds = (10, 2, 3) if quick else (30, 2, 5)
    small, large = n, 3 * n
    load = os.getloadavg()[0]
    who_all = ("base", "stack", "floor", "cr")
    rows: list[dict[str, tuple[float, float | None]]] = []
    with tempfile.TemporaryDirectory(prefix="bench-ovh-") as tmp:
        root = Path(tmp)
        argvs = {}
        boot = f"import sys; sys.path.insert(0, {str(HERE.parent)!r}); from pathlib import Path; "
        for size in (small, large):
            suite = root / f"suite{size}"
            for i in range(size):
                trivial_task(suite, f"t{i:04d}")
            argvs[("base", size)] = [
                sys.executable, "-c", boot + f"from bench.run import _baseline; _baseline(Path({str(suite)!r}), {jobs})"]
            for who, secure in (("stack", False), ("floor", True)):
                argvs[(who, size)] = [
                    sys.executable, "-c",
                    boot + f"from bench.floor import floor_run; floor_run(Path({str(suite)!r}), {jobs}, secure={secure})"]
            argvs[("cr", size)] = [sys.executable, "-m", "crossreview", "run", str(suite), "--agent", "oracle",
                                   "--agent", "noop", "--jobs", str(jobs)]
        # Every round runs all of them back to back, so drift in the neighbours'
        # load (large on shared machines, in CPU-seconds too) hits all alike;
        # each figure is the median of its per-round values.
        for _ in range(rounds):
            row = {}
            for size in (small, large):
                for who in who_all:
                    shutil.rmtree(root / ".crossreview", ignore_errors=True)
                    wall, cpu, code = timed_with_cpu(argvs[(who, size)], root)
                    assert code == 0, f"{who} run of {size} tasks exited {code}"
                    row[f"{who}{size}"] = (wall, cpu)
            rows.append(row)

    def figures(i: int, who: str, against: str = "base") -> dict[str, float] | None:
        per_round = []
        for r in rows:
            b, c, bl, cl = r[f"{against}{small}"][i], r[f"{who}{small}"][i], r[f"{against}{large}"][i], r[f"{who}{large}"][i]
            if None in (b, c, bl, cl):
                return None
            d_b, d_c = bl - b, cl - c
            per_round.append({"base": b, "cr": c, "ratio": c / b, "extra_ms": (c - b) / small * 1000,
                              "marginal_ratio": d_c / d_b, "marginal_ms": (d_c - d_b) / (large - small) * 1000,
                              "fixed_s": (c - d_c / (large - small) * small) - (b - d_b / (large - small) * small)})
        return {k: _median([f[k] for f in per_round]) for k in per_round[0]}

    wall = figures(0, "cr")
    out = {
        "tasks": small, "jobs": jobs, "rounds": rounds, "baseline_s": round(wall["base"], 3),
        "crossreview_s": round(wall["cr"], 3), "ratio": round(wall["ratio"], 3),
        "extra_ms_per_task": round(wall["extra_ms"], 1), "marginal_tasks": f"{small}->{large}",
        "marginal_ratio": round(wall["marginal_ratio"], 3), "marginal_extra_ms_per_task": round(wall["marginal_ms"], 1),
        "fixed_extra_s": round(wall["fixed_s"], 3), "load_before": round(load, 2),
    }
    for who in ("stack", "floor"):
        f = figures(0, who)
        out.update({f"{who}_s": round(f["cr"], 3), f"{who}_ratio": round(f["ratio"], 3),
                    f"{who}_extra_ms_per_task": round(f["extra_ms"], 1),
                    f"{who}_marginal_ratio": round(f["marginal_ratio"], 3),
                    f"{who}_marginal_extra_ms_per_task": round(f["marginal_ms"], 1)})
    beyond = figures(0, "cr", against="floor")
    out.update({"beyond_floor_ms_per_task": round(beyond["extra_ms"], 1),
                "beyond_floor_marginal_ms_per_task": round(beyond["marginal_ms"], 1)})
    cpu = figures(1, "cr")
    if cpu:
        out.update({"baseline_cpu_s": round(cpu["base"], 2), "crossreview_cpu_s": round(cpu["cr"], 2),
                    "cpu_ratio": round(cpu["ratio"], 3), "extra_cpu_ms_per_task": round(cpu["extra_ms"], 1),
                    "marginal_cpu_ratio": round(cpu["marginal_ratio"], 3),
                    "marginal_extra_cpu_ms_per_task": round(cpu["marginal_ms"], 1),
                    "fixed_extra_cpu_s": round(cpu["fixed_s"], 3)})
        for who in ("stack", "floor"):
            f = figures(1, who)
            out.update({f"{who}_cpu_ratio": round(f["ratio"], 3),
                        f"{who}_extra_cpu_ms_per_task": round(f["extra_ms"], 1),
                        f"{who}_marginal_extra_cpu_ms_per_task": round(f["marginal_ms"], 1)})
        beyond = figures(1, "cr", against="floor")
        out.update({"beyond_floor_cpu_ms_per_task": round(beyond["extra_ms"], 1),
                    "beyond_floor_marginal_cpu_ms_per_task": round(beyond["marginal_ms"], 1)})
    return out


# --- 3. scaling -------------------------------------------------------------


def _exponent(sizes: list[int], values: list[float]) -> float:
    """k of the least-squares fit values ~ sizes^k (log-log)."""
    xs = [math.log(n) for n in sizes]
    ys = [math.log(v) for v in values]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def bench_scaling(quick: bool) -> dict:
    """Time per task run and peak RSS at growing suite sizes; the fitted exponent of time ~ n^k.

    Where perf is available each run is counted by `perf stat` too: the
    exponent of CPU-seconds ~ n^k does not move with the neighbours' load the
    way wall-clock does on a shared machine.
    """
    sizes = (30, 100, 300) if quick else (100, 300, 1000)
    rows = []
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
            root = Path(tmp)
            suite = root / "suite"
            for i in range(n):
                # A verifier judged by exit code keeps pytest out: this measures crossreview itself.
                trivial_task(suite, f"t{i:05d}", verifier="python -c 'import mod, sys; sys.exit(0 if mod.ok() else 1)' {tests}")
            load = os.getloadavg()[0]
            args = ["run", str(suite), "--agent", "oracle", "--agent", "noop", "--jobs", "2"]
            cpu_file = root / "perf.csv"
            wrap = ["perf", "stat", "-x,", "-e", "task-clock", "-o", str(cpu_file), "--"] if shutil.which("perf") else []
            start = time.perf_counter()
            proc = subprocess.Popen([*wrap, sys.executable, "-m", "crossreview", *args], cwd=root, env=ENV,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
            _, status, usage = os.wait4(proc.pid, 0)
            wall, code = time.perf_counter() - start, os.waitstatus_to_exitcode(status)
            row = {"tasks": n, "wall_s": round(wall, 2), "ms_per_task": round(wall / n * 1000, 1),
                   "peak_rss_mib": round(usage.ru_maxrss / 1024, 1), "exit": code, "load_before": round(load, 2)}
            cpu = None
            if cpu_file.is_file():
                for line in cpu_file.read_text().splitlines():
                    fields = line.split(",")
                    if len(fields) > 2 and fields[2].startswith("task-clock"):
                        cpu = float(fields[0]) / 1000
            if cpu:
                row.update({"cpu_s": round(cpu, 2), "cpu_ms_per_task": round(cpu / n * 1000, 1)})
            rows.append(row)
    rss = [r["peak_rss_mib"] for r in rows]
    out = {"rows": rows, "time_exponent": round(_exponent(list(sizes), [r["wall_s"] for r in rows]), 3),
           "rss_spread": round((max(rss) - min(rss)) / min(rss), 3)}
    if all("cpu_s" in r for r in rows):
        out["cpu_time_exponent"] = round(_exponent(list(sizes), [r["cpu_s"] for r in rows]), 3)
    return out


# --- 4. environments ----------------------------------------------------------


def _make_repo(path: Path, files: int) -> None:
    path.mkdir(parents=True)
    for i in range(files):
        d = path / f"pkg{i // 500:03d}"
        d.mkdir(exist_ok=True)
        (d / f"m{i:05d}.py").write_text(f"X = {i}\n" * 8)
    git = ["git", "-c", "user.name=b", "-c", "user.email=b@b", "-C", str(path)]
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "init"], check=True)


def _isolated(repo: Path, trees: list[Path]) -> bool:
    """Does an in-place write in one tree leave the other trees and the repository alone?

    Agents edit files in place (open(..., "r+"), mmap, editors that do not
    replace the file): a way that shares file data between trees (hard links)
    is not isolation, however fast it is.
    """
    probe = next((p for p in trees[0].rglob("*.py") if p.is_file()), None)
    if probe is None:
        return False  # the tree holds no files at all (a sparse or lazy checkout of nothing)
    rel = probe.relative_to(trees[0])
    before = (repo / rel).read_bytes()
    with open(probe, "r+b") as fh:
        fh.write(b"# changed in place by one agent\n")
    untouched = [(repo / rel).read_bytes() == before] + [
        (t / rel).read_bytes() == before for t in trees[1:] if (t / rel).exists()]
    return all(untouched)


def _reflink_copy(src: Path, dst: Path) -> None:
    subprocess.run(["cp", "-a", "--reflink=always", str(src), str(dst)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def bench_environments(quick: bool) -> list[dict]:
    """Three candidate trees per way; copytree is the baseline. ``isolated``: checked, not assumed (see _isolated).

    Ways: copytree; git worktree add; clone --local (hard-linked objects);
    clone --shared (borrowed objects); clone --shared --no-checkout plus a
    sparse checkout of one folder (a lazy tree: cheap, but the agent sees one
    folder, not the repository); cp -al (hard links: fast, not isolated);
    cp --reflink=always (copy-on-write: isolated where the filesystem can do it).
    """
    sizes = (5000,) if quick else (5000, 50000)
    out = []
    for files in sizes:
        with tempfile.TemporaryDirectory(prefix="bench-env-") as tmp:
            root = Path(tmp)
            repo = root / "repo"
            _make_repo(repo, files)
            sparse_dir = "pkg000"

            def sparse(dst: Path) -> None:
                subprocess.run(["git", "clone", "-q", "--shared", "--no-checkout", str(repo), str(dst)], check=True)
                subprocess.run(["git", "-C", str(dst), "sparse-checkout", "set", sparse_dir], check=True)
                subprocess.run(["git", "-C", str(dst), "checkout", "-q"], check=True)

            ways = {
                "copytree": lambda dst: shutil.copytree(repo, dst, ignore=shutil.ignore_patterns(".git")),
                "git worktree add": lambda dst: subprocess.run(
                    ["git", "-C", str(repo), "worktree", "add", "-q", "--detach", str(dst)], check=True),
                "git clone --local": lambda dst: subprocess.run(
                    ["git", "clone", "-q", "--local", str(repo), str(dst)], check=True),
                "git clone --shared": lambda dst: subprocess.run(
                    ["git", "clone", "-q", "--shared", str(repo), str(dst)], check=True),
                f"clone --shared --no-checkout + sparse ({sparse_dir}/ only)": sparse,
                "cp -al (hard links)": lambda dst: subprocess.run(["cp", "-al", str(repo), str(dst)], check=True),
                "cp --reflink=always": lambda dst: _reflink_copy(repo, dst),
            }
            times = {}
            for name, make in ways.items():
                dsts = [root / f"way{len(times)}-{i}" for i in range(3)]
                start = time.perf_counter()
                try:
                    for d in dsts:
                        make(d)
                except (subprocess.CalledProcessError, OSError) as exc:
                    times[name] = (None, f"unsupported here: {exc.__class__.__name__}")
                else:
                    took = time.perf_counter() - start
                    times[name] = (took, _isolated(repo, dsts))
                subprocess.run(["git", "-C", str(repo), "checkout", "-q", "--", "."], check=False)  # undo a leak
                subprocess.run(["git", "-C", str(repo), "worktree", "prune"], check=False)
                for d in dsts:
                    shutil.rmtree(d, ignore_errors=True)
            base = times["copytree"][0]
            for name, (t, isolated) in times.items():
                out.append({"files": files, "way": name, "three_trees_s": None if t is None else round(t, 3),
                            "vs_copytree": None if t is None else round(t / base, 3), "isolated": isolated})
    return out


# --- 5. startup ---------------------------------------------------------------


def bench_startup(quick: bool) -> dict:
    """`crossreview --help` and a one-task run against `python -c pass`."""
    n = 3 if quick else 5
    py = best_of(n, lambda: timed([sys.executable, "-c", "pass"]))
    helpt = best_of(n, lambda: timed([sys.executable, "-m", "crossreview", "--help"]))
    with tempfile.TemporaryDirectory(prefix="bench-start-") as tmp:
        root = Path(tmp)
        trivial_task(root / "suite", "one")
        one = best_of(n, lambda: run_cli(["run", str(root / "suite"), "--agent", "oracle"], root)[0])
    probe = textwrap.dedent("""
        import sys
        from crossreview.cli import main
        sys.argv = ["crossreview", "--help"]
        try:
            main()
        except SystemExit:
            pass
        print("HEAVY=" + ",".join(sorted({m.split(".")[0] for m in sys.modules} & {"litellm", "langgraph", "git"})))
    """)
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=ENV).stdout
    heavy = [line[len("HEAVY="):] for line in out.splitlines() if line.startswith("HEAVY=")]
    return {"python_c_pass_s": round(py, 3), "help_s": round(helpt, 3), "help_vs_python": round(helpt / py, 2),
            "one_task_run_s": round(one, 3), "one_task_vs_python": round(one / py, 2),
            "heavy_modules_on_help": heavy[0] if heavy and heavy[0] else "none"}


# --- 6. where one task run's CPU goes ----------------------------------------

_GRAPH_FLOOR = textwrap.dedent("""
    import operator, resource, sqlite3, sys, tempfile, time
    from typing import Annotated, TypedDict
    from langgraph.checkpoint.sqlite import SqliteSaver
    from langgraph.graph import END, START, StateGraph
    from langgraph.types import Command, Send

    class S(TypedDict, total=False):
        task: dict
        candidates: Annotated[list, operator.add]
        verdicts: Annotated[list, operator.add]
        events: Annotated[list, operator.add]

    TASK = {"id": "t", "instruction": "x" * 400, "verifier": {"command": "python -m pytest -q {tests}"}}
    ev = lambda n: {"events": [{"node": n, "started": time.time()}]}
    g = StateGraph(S)
    g.add_node("prepare", lambda s: ev("prepare"))
    g.add_node("solve", lambda p: Command(update=ev("solve"), goto=Send("verify", {**p, "cand": {"agent": p["agent"], "diff": "x" * 300}})),
               destinations=("verify",))
    g.add_node("verify", lambda p: {"candidates": [p["cand"]], **ev("verify")})
    g.add_node("plan", lambda s: {})
    g.add_node("review", lambda p: {"verdicts": [{"reviewer": p["r"]}], **ev("review")})
    g.add_node("decide", lambda s: ev("decide"))
    g.add_node("record", lambda s: ev("record"))
    g.add_edge(START, "prepare")
    g.add_conditional_edges("prepare", lambda s: [Send("solve", {"task": s["task"], "agent": a}) for a in "ab"], ["solve"])
    g.add_edge("verify", "plan")
    g.add_conditional_edges("plan", lambda s: [Send("review", {"task": s["task"], "r": c["agent"], "c": c})
                                               for c in s["candidates"]], ["review"])
    g.add_edge("review", "decide"); g.add_edge("decide", "record"); g.add_edge("record", END)
    saver = None
    if sys.argv[1] == "sqlite":
        conn = sqlite3.connect(tempfile.mktemp(suffix=".db"), check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL"); conn.execute("PRAGMA synchronous=NORMAL")
        saver = SqliteSaver(conn)
    app = g.compile(checkpointer=saver)
    n = int(sys.argv[2])
    app.invoke({"task": TASK}, {"configurable": {"thread_id": "warm"}})
    before = resource.getrusage(resource.RUSAGE_SELF)
    for i in range(n):
        app.invoke({"task": TASK}, {"configurable": {"thread_id": f"t{i}"}, "max_concurrency": 4})
    after = resource.getrusage(resource.RUSAGE_SELF)
    print((after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) / n * 1000)
""")


def _median_cpu_ms(argv: list[str], cwd: Path, env: dict | None = None, n: int = 9) -> float:
    """Median CPU-ms of the whole process tree (perf stat where allowed: rusage misses a sandbox's processes)."""
    cpus = [timed_with_cpu(argv, cwd, env)[1] for _ in range(n)]
    if any(c is None for c in cpus):
        cpus = [_cpu_of(argv, cwd, env)[1] for _ in range(n)]
    return round(_median(cpus) * 1000, 2)


def bench_costs(quick: bool) -> dict:
    """What one trivial task run (oracle + noop) costs beyond the baseline's work, piece by piece, in CPU-ms.

    - ``graph_*``: LangGraph alone running the pipeline's shape (prepare, two
      solves, two verifies, the join, two reviews, decide, record) with nodes
      that do nothing, without and with the SQLite checkpointer;
    - ``git_processes``: git processes one task run starts (a logging ``git``
      first on PATH counts them), and ``git_add_cpu_ms`` what one of them
      costs alone (``git add -A`` in a fresh worktree);
    - ``bwrap_cpu_ms``: one empty bubblewrap sandbox as the verifier's (new
      namespaces, network included); one per test run, review and agent command;
    - ``canary_cpu_ms``: what the canary test file adds to one pytest run.
    """
    n = 30 if quick else 90
    graph = {kind: round(float(subprocess.run([sys.executable, "-c", _GRAPH_FLOOR, kind, str(n)], env=ENV,
                                               capture_output=True, text=True, check=True).stdout), 2)
             for kind in ("memory", "sqlite")}
    out: dict = {"graph_cpu_ms": graph["memory"], "graph_sqlite_cpu_ms": graph["sqlite"]}
    with tempfile.TemporaryDirectory(prefix="bench-costs-") as tmp:
        root = Path(tmp)
        trivial_task(root / "suite", "t")
        shim = root / "shim"
        log = root / "git.log"
        real_git = shutil.which("git")
        write(shim / "git", f'#!/bin/sh\necho "$1" >> {log}\nexec {real_git} "$@"\n').chmod(0o755)
        env = {**ENV, "PATH": f"{shim}{os.pathsep}{os.environ['PATH']}"}
        code = subprocess.run([sys.executable, "-m", "crossreview", "run", str(root / "suite"), "--agent", "oracle",
                               "--agent", "noop"], cwd=root, env=env, capture_output=True).returncode
        assert code == 0, f"the task run exited {code}"
        out["git_processes"] = len(log.read_text().split())
        tree = root / "tree"
        subprocess.run([real_git, "init", "-q", str(tree)], check=True)
        shutil.copytree(root / "suite" / "t" / "repo", tree, dirs_exist_ok=True)
        out["git_add_cpu_ms"] = _median_cpu_ms([real_git, "add", "-A"], tree)
        bwrap = shutil.which("bwrap")
        if bwrap:
            out["bwrap_cpu_ms"] = _median_cpu_ms([bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
                                                  "--unshare-all", "--die-with-parent", "--new-session", "true"], root)
        from crossreview.verify import new_canary

        shutil.copytree(root / "suite" / "t" / "solution", tree, dirs_exist_ok=True)
        shutil.copytree(root / "suite" / "t" / "tests", tree / ".crossreview-tests")
        pytest = ["python", "-m", "pytest", "-q", ".crossreview-tests", "-p", "no:cacheprovider",
                  f"--junitxml={root / 'j.xml'}", "--rootdir=."]
        venv = {**VERIFIER_ENV, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
        bare = _median_cpu_ms(pytest, tree, venv)
        canary = new_canary()
        write(tree / ".crossreview-tests" / f"{canary.module}.py", canary.source())
        out["pytest_cpu_ms"] = bare
        out["canary_cpu_ms"] = round(_median_cpu_ms(pytest, tree, venv) - bare, 2)
    return out


# --- driver -----------------------------------------------------------------

BENCHES = {
    "startup": bench_startup,
    "parallel": bench_parallel,
    "overhead": bench_overhead,
    "scaling": bench_scaling,
    "environments": bench_environments,
    "costs": bench_costs,
    "calibration": bench_calibration,  # bench/calibration.py: calibrated and cascade policies
}


def machine() -> dict:
    git = subprocess.run(["git", "--version"], capture_output=True, text=True).stdout.strip()
    return {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "git": git, "when": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def print_table(name: str, result) -> None:
    rows = result if isinstance(result, list) else result.get("rows", [result])
    print(f"\n== {name}")
    if not rows:
        return
    cols = list(rows[0])
    if len(rows) == 1 and len(cols) > 12:  # one wide result (overhead): a line per figure reads better
        width = max(map(len, cols))
        for c in cols:
            print(f"  {c:<{width}}  {rows[0][c]}")
        return
    print("  " + " | ".join(cols))
    for r in rows:
        print("  " + " | ".join(str(r[c]) for c in cols))
    if isinstance(result, dict) and "rows" in result:
        extra = {k: v for k, v in result.items() if k != "rows"}
        print("  " + ", ".join(f"{k} = {v}" for k, v in extra.items()))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", nargs="*", choices=[*BENCHES, "compare", []],
                        help="benchmarks to run (default: all but compare)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument("--against", metavar="REV",
                        help="compare: the git revision to measure this checkout against, run by run")
    args = parser.parse_args(argv)
    chosen = args.which or list(BENCHES)
    if "compare" in chosen and not args.against:
        parser.error("compare needs --against REV (a commit, branch or tag of this repository)")
    results = {"machine": machine(), "quick": args.quick}
    for name in chosen:
        if name == "compare":
            from .compare import compare, print_compare

            started = time.perf_counter()
            results[name] = compare(args.against, args.quick)
            print_compare(results[name])
            print(f"  ({time.perf_counter() - started:.0f}s)")
            continue
        started = time.perf_counter()
        results[name] = BENCHES[name](args.quick)
        print_table(name, results[name])
        print(f"  ({time.perf_counter() - started:.0f}s)")
    out = HERE / "results" / f"{datetime.now().strftime('%Y-%m-%d-%H%M')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\nwritten: {out.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
