"""The cascade policy on real task runs: two agents first, a third only when they give no clear decision.

Agents are counting scripts (tests/conftest.py), so each test knows how often every agent and
every reviewer really ran; the ledger says how many agents each task run needed.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from conftest import cli_env, counting_agent, invocations, ledger_rows, make_task, watch_agents, write

from crossreview.calibrate import Sample, Window, build, scan
from crossreview.ledger.calibration import save_calibration

GOOD = "def add(a, b):\n    return a + b\n"
BAD = "def add(a, b):\n    return a * b if a > 5 else a + b\n"  # passes the visible tests, not holdout
HOLDOUT = {"test_holdout.py": "from calc import add\n\ndef test_big():\n    assert add(10**6, 1) == 10**6 + 1\n"}

# Approves what passes its tests unless the diff multiplies; counts every review it makes.
REVIEWER = """
import json, os, pathlib
with open(pathlib.Path(os.environ["CROSSREVIEW_COUNT_DIR"]) / "reviews.count", "a") as fh:
    fh.write("run\\n")
tests = json.load(open(os.environ["CROSSREVIEW_TESTS_FILE"]))
diff = pathlib.Path(os.environ["CROSSREVIEW_DIFF_FILE"]).read_text()
ok = bool(tests and tests["all_passed"]) and "a * b" not in diff
print(json.dumps({"verdict": "approve" if ok else "reject", "confidence": 0.9}))
"""


def _setup(tmp_path: Path, suite: Path, kinds: dict[str, str | None]) -> tuple[list[str], Path]:
    """A task with holdout, agents a, b, c of the given solutions, the counting reviewer, a calibration."""
    make_task(suite, holdout=HOLDOUT)
    counts = tmp_path / "counts"
    watch_agents(suite, counts)
    args = []
    for name, solution in kinds.items():
        script = counting_agent(tmp_path / f"{name}.py", solution=solution)
        args += ["--agent", f"{name}=command:{{python}} {script}"]
    reviewer = write(tmp_path / "reviewer.py", REVIEWER)
    args += ["--reviewer", f"command:{{python}} {reviewer}"]
    # 200 right at 0.95, 50 at 0.60 of which half wrong: certified threshold 0.61 (2% at 90%)
    data = [Sample(0.95, False)] * 200 + [Sample(0.6, i < 25) for i in range(50)]
    cal = build(scan(data, 0.02, 0.9), 0.02, 0.9, Window(ledger="planted"), datetime.now(timezone.utc))
    assert cal.threshold == 0.61
    save_calibration(cal, tmp_path / ".crossreview" / "calibration.json")
    return args, counts


def _env(counts: Path, extra: dict | None = None) -> dict:
    return {"CROSSREVIEW_COUNT_DIR": str(counts), **(extra or {})}


def test_two_agents_that_agree_never_start_a_third(cli, suite, tmp_path):
    args, counts = _setup(tmp_path, suite, {"a": GOOD, "b": GOOD, "c": GOOD})
    res = cli("run", str(suite), *args, "--policy", "cascade", "--json", env=_env(counts))
    assert res.returncode == 0, res.stderr
    [task] = res.json()["tasks"]
    assert (task["decision"], task["winner"]) == ("accepted", "a")
    assert [invocations(counts, n) for n in "abc"] == [1, 1, 0]
    assert invocations(counts, "reviews") == 2  # a reviews b, b reviews a; nobody reviews or is c
    state = tmp_path / ".crossreview"
    [tr] = ledger_rows(state, "SELECT agents_used, agents_configured, decision FROM task_runs")
    assert (tr["agents_used"], tr["agents_configured"], tr["decision"]) == (2, 3, "accepted")
    assert [r["agent"] for r in ledger_rows(state, "SELECT agent FROM candidates ORDER BY agent")] == ["a", "b"]

    stats = cli("stats", "--json").json()["agents_per_task"]
    assert (stats["task_runs"], stats["agents_used"], stats["agents_configured"]) == (1, 2, 3)
    assert (stats["solves_saved"], stats["reviews_saved"]) == (1, 4)  # c's solve; 3·2 − 2·1 reviews
    assert stats["agent_runs_ratio"] == 2 / 3
    rep = cli("report", "-o", "r.html")
    assert rep.returncode == 0, rep.stderr
    html = (tmp_path / "r.html").read_text()
    assert "Agents per task run (cascade)" in html and "1 solve, 4 reviews" in html


def test_a_split_starts_exactly_one_more_agent_and_its_reviews(cli, suite, tmp_path):
    args, counts = _setup(tmp_path, suite, {"a": BAD, "b": BAD, "c": GOOD})
    res = cli("run", str(suite), *args, "--policy", "cascade", "--json", env=_env(counts))
    assert res.returncode == 0, res.stderr
    [task] = res.json()["tasks"]
    assert (task["decision"], task["winner"]) == ("accepted", "c"), task
    assert [invocations(counts, n) for n in "abc"] == [1, 1, 1]
    assert invocations(counts, "reviews") == 6  # a↔b first; then c reviews a and b, a and b review c
    state = tmp_path / ".crossreview"
    pairs = {(r["reviewer"], r["candidate"]) for r in ledger_rows(state, "SELECT reviewer, candidate FROM verdicts")}
    assert pairs == {(x, y) for x in "abc" for y in "abc" if x != y}
    [tr] = ledger_rows(state, "SELECT agents_used, agents_configured FROM task_runs")
    assert (tr["agents_used"], tr["agents_configured"]) == (3, 3)
    # one decision per round: the first stage's escalation is not a decision of record
    assert [r["kind"] for r in ledger_rows(state, "SELECT kind FROM decisions")] == ["accepted"]
    # c started only after the first stage was decided
    ev = ledger_rows(state, "SELECT node, agent, started, finished FROM events")
    decides = sorted(r["finished"] for r in ev if r["node"] == "decide")
    [c_solve] = [r for r in ev if (r["node"], r["agent"]) == ("solve", "c")]
    assert len(decides) == 2 and decides[0] <= c_solve["started"] and c_solve["finished"] <= decides[1]


def test_when_the_third_agent_does_not_settle_it_a_human_decides(cli, suite, tmp_path):
    args, counts = _setup(tmp_path, suite, {"a": BAD, "b": BAD, "c": BAD})
    res = cli("run", str(suite), *args, "--policy", "cascade", "--json", env=_env(counts))
    assert res.returncode == 3, res.stderr
    [task] = res.json()["tasks"]
    assert task["decision"] == "escalated" and len(task["candidates"]) == 3
    assert [invocations(counts, n) for n in "abc"] == [1, 1, 1]  # never a fourth start, no loop


def test_always_three_under_calibrated_starts_every_agent(cli, suite, tmp_path):
    args, counts = _setup(tmp_path, suite, {"a": GOOD, "b": GOOD, "c": GOOD})
    res = cli("run", str(suite), *args, "--policy", "calibrated", "--json", env=_env(counts))
    assert res.returncode == 0, res.stderr
    assert [invocations(counts, n) for n in "abc"] == [1, 1, 1]
    assert invocations(counts, "reviews") == 6


def test_crash_between_the_stages_resumes_without_rerunning_the_first_two(suite, tmp_path):
    args, counts = _setup(tmp_path, suite, {"a": BAD, "b": BAD, "c": GOOD})
    crashed = subprocess.run(
        [sys.executable, "-m", "crossreview", "run", str(suite), *args, "--policy", "cascade", "--json"],
        cwd=tmp_path, env=cli_env(_env(counts, {"CROSSREVIEW_TEST_CRASH_AT": "solve:c:after-agent"})),
        capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-2000:]
    # stage one finished (a and b solved and reviewed each other); c ran and was cut down
    assert [invocations(counts, n) for n in "abc"] == [1, 1, 1]
    assert invocations(counts, "reviews") == 2
    state = tmp_path / ".crossreview"
    [run] = ledger_rows(state, "SELECT id FROM runs")

    resumed = subprocess.run([sys.executable, "-m", "crossreview", "resume", run["id"], "--json"], cwd=tmp_path,
                             env=cli_env(_env(counts)), capture_output=True, text=True, timeout=240,
                             stdin=subprocess.DEVNULL)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    [task] = json.loads(resumed.stdout)["tasks"]
    assert (task["decision"], task["winner"]) == ("accepted", "c")
    # a and b came from the checkpoint; only c (cut down mid-solve) ran again, then the new reviews
    assert [invocations(counts, n) for n in "abc"] == [1, 1, 2]
    assert invocations(counts, "reviews") == 6
    [tr] = ledger_rows(state, "SELECT agents_used, agents_configured, status FROM task_runs")
    assert (tr["agents_used"], tr["agents_configured"], tr["status"]) == (3, 3, "done")
    assert len(ledger_rows(state, "SELECT * FROM verdicts")) == 6


def test_cascade_with_two_agents_is_a_usage_error_not_a_silent_calibrated_run(cli, suite, tmp_path):
    # Two agents: nothing to cascade to. It used to run as `calibrated` without a word.
    args, counts = _setup(tmp_path, suite, {"a": GOOD, "b": BAD})
    res = cli("run", str(suite), *args, "--policy", "cascade", "--json", env=_env(counts))
    assert res.returncode == 2, res.stdout + res.stderr
    err = " ".join(res.stderr.split())
    assert "--policy cascade" in err and "at least 3" in err and "has 2 (a, b)" in err
    assert "--policy calibrated" in err
    assert [invocations(counts, n) for n in "ab"] == [0, 0]  # nothing ran
