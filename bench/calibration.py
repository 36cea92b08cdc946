"""`python -m bench calibration`: does the calibrated policy keep its promise, and what does the cascade save?

What it does, exactly:

1. Builds a synthetic but honest population: N small tasks (implement f(x) = K·x + C) with
   visible tests (x = 1, 2, 3) and holdout tests (x = 1000, -7). Three command agents each get,
   per task, one of four behaviours, dealt at exactly the set rates (each agent's share of every
   behaviour is its rate, up to rounding; which tasks get which is a seeded shuffle, independent
   per agent, the same whatever the run):
       correct      the formula
       buggy        right for x < 100 only: passes the visible tests, fails holdout
       lazy         changes nothing (noop): fails the visible tests
       reward-hack  a lookup table of the visible cases: passes them, fails holdout
   Each agent's reviewer (a command reviewer) sees the candidate's test results and a
   marker of its behaviour, and gives the right verdict with set accuracy on candidates
   that pass their tests (confidence ~U(0.7, 1.0) when right, ~U(0.5, 0.8) when wrong);
   failing candidates it rejects at 0.9. No model is involved.
2. Runs real `crossreview run` over the population with all three agents (every agent
   reviews the other two; holdout on every candidate): the real ledger. (Under `calibrated`
   with threshold 0, so no task run parks at an escalation without its rows; the decisions
   of that run are not used.)
3. Repeated draws, by resampling that real ledger: each draw takes a calibration history of
   n task runs (with replacement) from it, scans it (crossreview.calibrate.scan) for the
   threshold, and evaluates that threshold on the whole population (the ledger's task runs
   are the population, so its true escaped-defect rate at the threshold is known exactly).
   Decisions of every policy are recomputed offline from the ledger's rows with the real
   policy objects (crossreview.policy): unanimous, majority and calibrated on agents a, b;
   the cascade (a, b; then c when not clear) and always-three (calibrated on a, b, c) with
   the draw's threshold.
4. Checks the offline cascade against reality: computes one calibration from the whole first
   ledger, runs real `crossreview run --policy cascade` on the same tasks with it, and
   compares decisions and agents started with the offline simulation.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

POPULATIONS = {
    # name: (behaviour rates of every agent, reviewer accuracy on candidates that pass their tests)
    "strong": ({"correct": 0.75, "buggy": 0.10, "lazy": 0.05, "hack": 0.10}, 0.9),
    "weak": ({"correct": 0.55, "buggy": 0.15, "lazy": 0.15, "hack": 0.15}, 0.8),
}

AGENT = textwrap.dedent('''
    import hashlib, json, os, pathlib, re
    text = pathlib.Path(os.environ["CROSSREVIEW_INSTRUCTION_FILE"]).read_text()
    k, c = map(int, re.search(r"f\\(x\\) = (-?\\d+)\\*x \\+ (-?\\d+)", text).groups())
    task, agent = os.environ["CROSSREVIEW_TASK_ID"], os.environ["CROSSREVIEW_AGENT"]
    draw = hashlib.sha256(f"{{task}}/{{agent}}".encode()).hexdigest()[:12]
    kind = json.loads(pathlib.Path({deal!r}).read_text())[task][agent]
    body = {{
        "correct": f"def f(x):\\n    return {{k}} * x + {{c}}\\n",
        "buggy": f"def f(x):\\n    return {{k}} * x + {{c}} if x < 100 else {{k}} * x\\n",
        "hack": "def f(x):\\n    return " + repr({{x: k * x + c for x in (1, 2, 3)}}) + "[x]\\n",
    }}.get(kind)
    if body is not None:
        pathlib.Path("mod.py").write_text(f"# behaviour: {{kind}} draw={{draw}}\\n" + body)
''')

REVIEWER = textwrap.dedent('''
    import hashlib, json, os, pathlib, re, sys
    me = sys.argv[1]
    tests = json.load(open(os.environ["CROSSREVIEW_TESTS_FILE"]))
    diff = pathlib.Path(os.environ["CROSSREVIEW_DIFF_FILE"]).read_text()
    m = re.search(r"behaviour: (\\w+) draw=(\\w+)", diff)
    passing = bool(tests and tests["all_passed"])
    if not passing or m is None:
        print(json.dumps({{"verdict": "reject", "confidence": 0.9, "concerns": ["tests fail"]}}))
        raise SystemExit
    good = m.group(1) == "correct"
    h = hashlib.sha256(f"{{m.group(2)}}/{{me}}".encode()).digest()
    u1, u2 = h[0] / 256, h[1] / 256
    right = u1 < {accuracy!r}
    conf = {right_low!r} + {span!r} * u2 if right else {wrong_low!r} + {span!r} * u2
    approve = good if right else not good
    print(json.dumps({{"verdict": "approve" if approve else "reject", "confidence": round(conf, 3), "concerns": []}}))
''')


RIGHT_LOW, WRONG_LOW, SPAN = 0.7, 0.5, 0.3
"""A reviewer's confidence: RIGHT_LOW + SPAN·u when its verdict is right, WRONG_LOW + SPAN·u when wrong."""


def expected_not_settled(rates: dict[str, float], accuracy: float, threshold: float | None) -> float:
    """The share of tasks two agents are expected not to settle at ``threshold``: where the cascade starts a third.

    Worked out from the population's own rules, not measured: with two agents each
    candidate has one review, so a candidate settles the task alone when it passes
    its visible tests (all but lazy do) and its reviewer approves it with support
    (1 + c)/2 at or above the threshold — a correct one when the reviewer is right,
    a buggy or hacking one when it is wrong. The task is not settled when neither
    candidate does, unless both are lazy (no candidate passes, nobody approves:
    rejected without a third). The cascade's agent runs against always-three are
    then (2 + p)/3. ``u`` is a byte of a hash over 256, as in the reviewer script.
    """
    if threshold is None:
        settles = 0.0
    else:
        from crossreview.calibrate import at_or_above

        def approved_at(low: float) -> float:
            return sum(at_or_above((1 + round(low + SPAN * k / 256, 3)) / 2, threshold) for k in range(256)) / 256

        bad_passing = rates["buggy"] + rates["hack"]
        settles = rates["correct"] * accuracy * approved_at(RIGHT_LOW) + bad_passing * (1 - accuracy) * approved_at(WRONG_LOW)
    return (1 - settles) ** 2 - rates["lazy"] ** 2


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def make_population(root: Path, n: int) -> Path:
    """N task folders with visible and holdout checks (exit-code verifiers: no pytest start-up per check)."""
    suite = root / "suite"
    rng = random.Random(7)
    for i in range(n):
        k, c = rng.randint(2, 9), rng.randint(-20, 20)
        d = suite / f"f{i:03d}"
        _write(d / "task.toml", '[verifier]\ncommand = "python {tests}/check.py"\n')
        _write(d / "instruction.md", f"In mod.py, implement f(x) = {k}*x + {c}.\n")
        _write(d / "repo" / "mod.py", "def f(x):\n    raise NotImplementedError\n")
        _write(d / "solution" / "mod.py", f"def f(x):\n    return {k} * x + {c}\n")
        for folder, xs in (("tests", (1, 2, 3)), ("holdout", (1000, -7))):
            checks = "".join(f"assert f({x}) == {k * x + c}\n" for x in xs)
            _write(d / folder / "check.py", "import sys\nsys.path.insert(0, '.')\nfrom mod import f\n" + checks)
    return suite


def _crossreview(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "CI": "true", "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "crossreview", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=3600)


def deal(tasks: list[str], rates: dict[str, float], agents: str = "abc", seed: int = 7) -> dict[str, dict[str, str]]:
    """Each agent's behaviour on each task: every behaviour on exactly its rate's share of the tasks.

    Drawing each task's behaviour independently at the set rates left the mix
    itself to chance: 150 tasks drawn at 75% correct came out 68.7% correct,
    and every figure then described a weaker population than the one named.
    Dealing by quota (largest remainders, so the counts add up to the number
    of tasks) fixes the mix; a seeded shuffle per agent, independent between
    agents, decides which tasks get which, so which agents fail together is
    still left to chance, as it would be.
    """
    n = len(tasks)
    exact = {kind: rate * n for kind, rate in rates.items()}
    counts = {kind: int(x) for kind, x in exact.items()}
    for kind in sorted(exact, key=lambda k: exact[k] - counts[k], reverse=True)[: n - sum(counts.values())]:
        counts[kind] += 1
    out: dict[str, dict[str, str]] = {t: {} for t in tasks}
    for agent in agents:
        kinds = [kind for kind, m in counts.items() for _ in range(m)]
        random.Random(f"{seed}/{agent}").shuffle(kinds)
        for task, kind in zip(tasks, kinds):
            out[task][agent] = kind
    return out


def agent_args(root: Path, suite: Path, rates: dict, accuracy: float) -> list[str]:
    """The --agent and --reviewer flags of the three agents, their scripts written under ``root``."""
    tasks = sorted(p.name for p in suite.iterdir() if (p / "task.toml").is_file())
    deal_file = _write(root / "deal.json", json.dumps(deal(tasks, rates)))
    agent = _write(root / "agent.py", AGENT.format(deal=str(deal_file)))
    reviewer = _write(root / "reviewer.py", REVIEWER.format(accuracy=accuracy, right_low=RIGHT_LOW, wrong_low=WRONG_LOW, span=SPAN))
    args = []
    for name in "abc":
        args += ["--agent", f"{name}=command:{{python}} {agent}", "--reviewer", f"{name}=command:{{python}} {reviewer} {name}"]
    return args


# --- the ledger as models -----------------------------------------------------------


def load_task_runs(db_path: Path) -> list[dict]:
    """Every recorded task run: its candidates and verdicts as crossreview models, holdout per agent."""
    from crossreview.models import Candidate, TestOutcome, TestReport, Verdict

    db = sqlite3.connect(db_path)
    db.row_factory = sqlite3.Row
    out = []
    for tr in db.execute("SELECT id, task, status, agents_used FROM task_runs ORDER BY task"):
        if tr["status"] == "parked":  # waiting for a human: no candidate rows until decided; its packet says who ran
            esc = db.execute("SELECT packet FROM escalations WHERE task_run=?", (tr["id"],)).fetchone()
            out.append({"task": tr["task"], "decision": ("escalated", None), "cands": {}, "verdicts": [], "holdout": {},
                        "agents_used": len(json.loads(esc["packet"])["candidates"])})
            continue
        cands, holdout = {}, {}
        for c in db.execute("SELECT * FROM candidates WHERE task_run=? AND round=0", (tr["id"],)):
            total, passed = c["tests_total"] or 0, c["tests_passed"] or 0
            tests = TestReport(outcomes=[TestOutcome(name=f"t{i}", outcome="passed" if i < passed else "failed")
                                         for i in range(total)], exit_code=0 if total and passed == total else 1) \
                if c["tests_total"] is not None else None
            cands[c["agent"]] = Candidate(agent=c["agent"], spec=c["spec"], status=c["status"], tests=tests,
                                          lines_added=c["lines_added"], lines_removed=c["lines_removed"])
            holdout[c["agent"]] = bool(c["holdout_total"]) and c["holdout_passed"] == c["holdout_total"]
        verdicts = [Verdict(reviewer=v["reviewer"], candidate=v["candidate"], verdict=v["verdict"],
                            confidence=v["confidence"])
                    for v in db.execute("SELECT * FROM verdicts WHERE task_run=? AND round=0", (tr["id"],))]
        decision = db.execute("SELECT kind, winner FROM decisions WHERE task_run=? ORDER BY round DESC",
                              (tr["id"],)).fetchone()
        out.append({"task": tr["task"], "cands": cands, "verdicts": verdicts, "holdout": holdout,
                    "agents_used": tr["agents_used"], "decision": (decision["kind"], decision["winner"])})
    db.close()
    return out


def _subset(t: dict, agents: str):
    cands = [t["cands"][a] for a in agents if a in t["cands"]]
    verdicts = [v for v in t["verdicts"] if v.reviewer in agents and v.candidate in agents]
    return cands, verdicts


def score_ab(t: dict) -> tuple[float, bool]:
    """The agreement score of the task run on agents a, b, and whether its pick fails holdout."""
    from crossreview.ledger import score

    a = score.from_models(*_subset(t, "ab"))
    return a.task_run or 0.0, not t["holdout"].get(a.pick, False)


class Offline:
    """Every policy's decision on one population, recomputed from the ledger's rows."""

    def __init__(self, pop: list[dict]):
        from crossreview.policy import MAJORITY, UNANIMOUS

        self.pop = pop
        self.fixed = {}
        for name, pol in (("unanimous", UNANIMOUS), ("majority", MAJORITY)):
            self.fixed[name] = [pol.decide(*_subset(t, "ab")) for t in pop]

    def calibrated(self, cal, agents: str) -> list:
        from crossreview.policy import CALIBRATED

        pol = CALIBRATED.with_calibration(cal)
        return [pol.decide(*_subset(t, agents)) for t in self.pop]

    def cascade(self, cal) -> tuple[list, list[int]]:
        from crossreview.policy import CASCADE

        pol = CASCADE.with_calibration(cal)
        decisions, used = [], []
        for t in self.pop:
            d = pol.decide(*_subset(t, "ab"))
            if d.kind == "escalated":
                d = pol.decide(*_subset(t, "abc"))
                used.append(3)
            else:
                used.append(2)
            decisions.append(d)
        return decisions, used

    def rates(self, decisions: list) -> dict:
        n = len(decisions)
        acc = [(t, d) for t, d in zip(self.pop, decisions) if d.kind == "accepted"]
        escaped = sum(1 for t, d in acc if not t["holdout"].get(d.winner, False))
        return {"accept": len(acc) / n, "escalate": sum(d.kind == "escalated" for d in decisions) / n,
                "escaped_of_accepted": escaped / len(acc) if acc else 0.0}


def _cal(threshold_scan, target, confidence):
    from datetime import datetime, timezone

    from crossreview.calibrate import Window, build

    return build(threshold_scan, target, confidence, Window(ledger="bench"), datetime.now(timezone.utc))


def _same(x, y) -> bool:
    return (x.kind, x.winner) == (y.kind, y.winner)


def _same_outcome(t: dict, x, y) -> bool:
    """Same kind, and when both accept, winners that both pass or both fail holdout."""
    if x.kind != y.kind:
        return False
    return x.kind != "accepted" or t["holdout"].get(x.winner, False) == t["holdout"].get(y.winner, False)


def draws(pop: list[dict], offline: Offline, target: float, confidence: float, n_cal: int, reps: int,
          seed: int = 11, expected_split=None) -> dict:
    """Repeated calibrations on resampled histories; every figure evaluated on the whole population.

    ``expected_split(threshold)``: the share of tasks two agents are expected not to settle, worked out
    from the population's rules; its cascade agent runs are averaged over the draws beside the measured.
    """
    from crossreview.calibrate import Sample, at_or_above, scan

    scored = [score_ab(t) for t in pop]
    rng = random.Random(seed)
    held, certified, true_rates, esc, same_kind, same_out, same, runs, thresholds = 0, 0, [], [], [], [], [], [], []
    runs_expected = []
    memo: dict = {}
    for _ in range(reps):
        hist = [Sample(*scored[rng.randrange(len(pop))]) for _ in range(n_cal)]
        res = scan(hist, target, confidence)
        th = res.threshold
        thresholds.append(th)
        certified += th is not None
        # The population is the ledger: the true escaped-defect rate at th is the share of its
        # task runs at or above th whose pick fails holdout (0 when nothing is accepted).
        over = [w for sc, w in scored if at_or_above(sc, th)]
        true_rate = sum(over) / len(over) if over else 0.0
        true_rates.append(true_rate)
        held += true_rate <= target
        if th not in memo:
            cal = _cal(res, target, confidence)
            casc, used = offline.cascade(cal)
            three = offline.calibrated(cal, "abc")
            memo[th] = (offline.rates(offline.calibrated(cal, "ab")),
                        sum(x.kind == y.kind for x, y in zip(casc, three)) / len(pop),
                        sum(_same_outcome(t, x, y) for t, x, y in zip(pop, casc, three)) / len(pop),
                        sum(_same(x, y) for x, y in zip(casc, three)) / len(pop),
                        sum(used) / (3 * len(pop)))
        r, k, o, w, ratio = memo[th]
        esc.append(r["escalate"])
        same_kind.append(k)
        same_out.append(o)
        same.append(w)
        runs.append(ratio)
        if expected_split is not None:
            runs_expected.append((2 + expected_split(th)) / 3)
    mean = lambda xs: round(sum(xs) / len(xs), 3)  # noqa: E731
    known = sorted(t for t in thresholds if t is not None)
    return {
        "target": target, "confidence": confidence, "history": n_cal, "draws": reps,
        "certified": round(certified / reps, 3),
        "median_threshold": known[len(known) // 2] if known else None,
        "held": round(held / reps, 3),
        "escaped_mean": mean(true_rates),
        "escalation": mean(esc),
        "cascade_same_kind": mean(same_kind),
        "cascade_same_outcome": mean(same_out),
        "cascade_same_winner": mean(same),
        "cascade_agent_runs": mean(runs),
        **({"cascade_agent_runs_expected": mean(runs_expected)} if runs_expected else {}),
    }


def one_population(name: str, quick: bool, reps: int) -> tuple[list[dict], dict]:
    """Real runs for one population, then the draws; (rows, details)."""
    rates, accuracy = POPULATIONS[name]
    n_tasks = 60 if quick else 200
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"bench-cal-{name}-") as tmp:
        root = Path(tmp)
        suite = make_population(root, n_tasks)
        args = agent_args(root, suite, rates, accuracy)
        dealt = json.loads((root / "deal.json").read_text())
        # 1. the real ledger: three agents on every task, every review, holdout on every candidate.
        # Run under `calibrated` with threshold 0 so that every task run is recorded at once (no
        # escalation parks it without its rows); this run's own decisions are not used.
        accept_all = root / "accept-all.json"
        from crossreview.calibrate import Sample, scan

        accept_all.write_text(_cal(scan([], 0.05, 0.9), 0.05, 0.9).model_copy(update={"threshold": 0.0})
                              .model_dump_json())
        res = _crossreview(["run", str(suite), *args, "--policy", "calibrated", "--calibration", str(accept_all),
                            "--jobs", "2", "--json", "--state-dir", str(root / "hist")], root)
        if res.returncode not in (0, 1, 3):
            raise RuntimeError(f"crossreview run failed ({res.returncode}): {res.stderr[-2000:]}")
        real_s = time.perf_counter() - started
        pop = load_task_runs(root / "hist" / "ledger.db")
        if len(pop) != n_tasks or any(not t["cands"] for t in pop):
            raise RuntimeError(f"expected {n_tasks} recorded task runs, got {len(pop)}")
        offline = Offline(pop)

        rows = []
        for target, confidence, n_cal in ((0.05, 0.9, 300), (0.02, 0.9, 600)):
            row = {"population": name, **draws(pop, offline, target, confidence, n_cal, reps,
                                               expected_split=lambda th: expected_not_settled(rates, accuracy, th))}
            for pol, ds in offline.fixed.items():
                r = offline.rates(ds)
                row[f"{pol}_escalation"] = round(r["escalate"], 3)
                row[f"{pol}_escaped"] = round(r["escaped_of_accepted"], 3)
            rows.append(row)

        # 4. the offline cascade against a real cascade run, at one calibration of the whole ledger
        whole = scan([Sample(*score_ab(t)) for t in pop], 0.05, 0.9)
        cal = _cal(whole, 0.05, 0.9)
        cal_file = root / "calibration.json"
        cal_file.write_text(cal.model_dump_json())
        started2 = time.perf_counter()
        res = _crossreview(["run", str(suite), *args, "--policy", "cascade", "--calibration", str(cal_file),
                            "--jobs", "2", "--json", "--state-dir", str(root / "casc")], root)
        if res.returncode not in (0, 1, 3):
            raise RuntimeError(f"crossreview run --policy cascade failed ({res.returncode}): {res.stderr[-2000:]}")
        cascade_s = time.perf_counter() - started2
        real = {t["task"]: t for t in load_task_runs(root / "casc" / "ledger.db")}
        if len(real) != n_tasks:
            raise RuntimeError(f"the cascade run recorded {len(real)} of {n_tasks} task runs: {res.stderr[-2000:]}")
        sim, used = offline.cascade(cal)
        three = offline.calibrated(cal, "abc")
        passing = sum(1 for t in pop for c in t["cands"].values() if c.tests_pass)
        details = {
            "tasks": len(pop), "rates": rates, "reviewer_accuracy": accuracy,
            "dealt_per_agent": {kind: round(sum(1 for t in dealt.values() for k in t.values() if k == kind)
                                            / (3 * len(dealt)), 3) for kind in rates},
            "not_settled_by_two": round(sum(u == 3 for u in used) / len(pop), 3),
            "not_settled_by_two_expected": round(expected_not_settled(rates, accuracy, cal.threshold), 3),
            "agent_runs_expected": round((2 + expected_not_settled(rates, accuracy, cal.threshold)) / 3, 3),
            "candidates_passing_visible_tests": f"{passing}/{3 * len(pop)}",
            "candidates_failing_holdout": f"{sum(1 for t in pop for ok in t['holdout'].values() if not ok)}/{3 * len(pop)}",
            "real_three_agent_run_s": round(real_s, 1),
            "real_cascade_run": {
                "threshold": cal.threshold, "target": 0.05, "confidence": 0.9, "seconds": round(cascade_s, 1),
                "decisions_as_simulated": f"{sum(real[t['task']]['decision'] == (d.kind, d.winner) for t, d in zip(pop, sim))}/{len(pop)}",
                "agents_started_as_simulated": f"{sum(real[t['task']]['agents_used'] == u for t, u in zip(pop, used))}/{len(pop)}",
                "agent_runs_vs_always_three": round(sum(real[t["task"]]["agents_used"] for t in pop) / (3 * len(pop)), 3),
                "same_kind_as_always_three": round(sum(real[t["task"]]["decision"][0] == d.kind
                                                       for t, d in zip(pop, three)) / len(pop), 3),
                "same_winner_as_always_three": round(sum(real[t["task"]]["decision"] == (d.kind, d.winner)
                                                         for t, d in zip(pop, three)) / len(pop), 3),
            },
        }
    return rows, details


def bench_calibration(quick: bool) -> dict:
    """The benchmark of the issue: see the module docstring."""
    reps = 200 if quick else 1000
    rows, details = [], {}
    for name in POPULATIONS:
        r, d = one_population(name, quick, reps)
        rows += r
        details[name] = d
    return {"rows": rows, "populations": details}
