"""`crossreview calibrate` on real SQLite ledgers, and `run --policy calibrated` on real tasks.

The planted history (two agents; a passes its tests and b reviews it, b fails its tests):

    40 task runs  b approves a at 0.70 -> score 0.85, a passes holdout
    20 task runs  b approves a at 0.60 -> score 0.80, 10 of them: a fails holdout
     3 task runs  no holdout/ (not labeled), 1 parked (not labeled)

Target 10% at 90% (at least 22 labeled, from ln 0.1 / ln 0.9 = 21.9): thresholds 1.00 .. 0.86
accept nothing (passed over); 0.85 .. 0.81 accept the 40 (no error: bound 1 − 0.1^(1/40) =
5.59%, passed); 0.80 accepts 60 with 10 errors (bound > 10%): the scan stops. Certified: 0.81.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from conftest import make_task, write

from crossreview.calibrate import Calibration
from crossreview.ledger import Ledger
from crossreview.ledger.calibration import calibrate_ledger, load_calibration, save_calibration, CalibrationError
from crossreview.models import Candidate, Decision, Escalation, TaskResult, TestOutcome, TestReport, Verdict

UTC = timezone.utc
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _report(passed: int, total: int) -> TestReport:
    return TestReport(outcomes=[TestOutcome(name=f"t{i}", outcome="passed" if i < passed else "failed")
                                for i in range(total)], exit_code=0 if passed == total else 1)


def plant(led: Ledger, run: str, rows: list[tuple[float, bool | None]], start: datetime, parked: int = 0) -> None:
    """One task run per (confidence of b's approval of a, a fails holdout — None: no holdout)."""
    led.start_run(run, {"suite_dir": "/suites/planted", "agents": [{"name": "a"}, {"name": "b"}]})
    for i, (conf, wrong) in enumerate(rows):
        tr = f"{run}/t{i:03d}"
        led.start_task_run(tr, run, f"t{i:03d}", "/suites/planted", [], {})
        hold_a = None if wrong is None else _report(0 if wrong else 1, 1)
        cands = [
            Candidate(agent="a", spec="x", tests=_report(2, 2), holdout=hold_a, lines_added=1),
            Candidate(agent="b", spec="x", tests=_report(0, 2), holdout=None if wrong is None else _report(0, 1)),
        ]
        verdicts = [Verdict(reviewer="b", candidate="a", verdict="approve", confidence=conf),
                    Verdict(reviewer="a", candidate="b", verdict="reject", confidence=0.9)]
        decision = Decision(kind="escalated", reason="planted", policy="unanimous")
        when = start + timedelta(minutes=i)
        if i >= len(rows) - parked:
            led.open_escalation(Escalation(id=f"e-{run}-{i}", run=run, task_run=tr, task=f"t{i:03d}", reason="planted",
                                           packet={"candidates": [{"agent": "a", "tests_passed": 2, "tests_total": 2}],
                                                   "verdicts": []}))
        else:
            result = TaskResult(task=f"t{i:03d}", task_run=tr, run=run, decision="rejected", reason="planted")
            led.record_task_run(result, cands, verdicts, [(0, decision)], [], rounds=1)
        with led.connect() as db:
            db.execute("UPDATE task_runs SET started=? WHERE id=?", (when.isoformat(), tr))


def planted(path: Path) -> Ledger:
    led = Ledger(path)
    rows = [(0.7, False)] * 40 + [(0.6, i < 10) for i in range(20)] + [(0.9, None)] * 3 + [(0.9, False)]
    plant(led, "r-hist", rows, T0, parked=1)
    return led


def test_planted_history_gives_the_expected_threshold_and_certificate(tmp_path):
    led = planted(tmp_path / "ledger.db")
    cal = calibrate_ledger(led, 0.1, 0.9, now=T0 + timedelta(days=1))
    assert cal.threshold == 0.81
    c = cal.certificate
    assert (c.n, c.errors, c.labeled, c.min_labeled, c.needed_more) == (40, 0, 60, 22, 0)
    assert c.bound == pytest.approx(1 - 0.1 ** (1 / 40))  # 5.59%
    assert (c.max_escaped, c.confidence) == (0.1, 0.9)
    assert c.waiting == 1  # the parked task run: not labeled, and counted so calibrate can warn
    # the ledger range it was computed on: the first and last scored task runs
    assert c.window.first == T0 and c.window.last == T0 + timedelta(minutes=63)
    assert c.window.ledger == str(tmp_path / "ledger.db")
    # 64 scored task runs (the parked one scored from its packet); 40 + 3 + 1 of them score >= 0.81
    assert c.window.task_runs == 64
    assert c.window.share_at_or_above == pytest.approx(44 / 64)
    by = {s.threshold: s for s in cal.steps}
    assert by[0.86].outcome == "passed over"
    assert (by[0.8].outcome, by[0.8].accepted, by[0.8].errors) == ("failed", 60, 10)
    # a stricter target certifies nothing: 40 labeled at the best thresholds, 60 at 0.50 < 114.
    # 114 − 60 = 54 more right ones would leave 0.80 with 114 and its 10 errors (bound ≫ 2%);
    # the fewest that can pass: 74, making 0.85 accept 114 with none wrong.
    strict = calibrate_ledger(led, 0.02, 0.9)
    assert strict.threshold is None and strict.certificate.needed_more == 114 - 40


def test_policy_file_round_trips_through_disk_and_bad_files_say_how_to_fix(tmp_path):
    cal = calibrate_ledger(planted(tmp_path / "ledger.db"), 0.1, 0.9)
    path = save_calibration(cal, tmp_path / "sub" / "calibration.json")
    assert load_calibration(path) == cal
    assert json.loads(path.read_text())["certificate"]["n"] == 40
    with pytest.raises(CalibrationError, match=r"no calibration file at .*nothing\.json: run `crossreview calibrate`"):
        load_calibration(tmp_path / "nothing.json")
    write(tmp_path / "bad.json", '{"threshold": "high"}')
    with pytest.raises(CalibrationError, match=r"bad\.json is malformed .*crossreview calibrate"):
        load_calibration(tmp_path / "bad.json")
    write(tmp_path / "junk.json", "not json at all")
    with pytest.raises(CalibrationError, match="junk.json is malformed"):
        load_calibration(tmp_path / "junk.json")


def test_a_hand_edited_policy_file_does_not_claim_a_guarantee_it_lacks(tmp_path):
    cal = calibrate_ledger(planted(tmp_path / "ledger.db"), 0.1, 0.9)  # certified 0.81: n=40, bound 5.59%
    path = save_calibration(cal, tmp_path / "calibration.json")
    doc = json.loads(path.read_text())

    def edited(change) -> str:
        d = json.loads(json.dumps(doc))
        change(d)
        write(tmp_path / "edited.json", json.dumps(d))
        with pytest.raises(CalibrationError) as err:
            load_calibration(tmp_path / "edited.json")
        assert "edited.json" in str(err.value) and "crossreview calibrate" in str(err.value)
        return str(err.value)

    # the threshold loosened by hand: the certificate (n=40 at 0.81) says nothing about 0.30
    assert "threshold 0.3" in edited(lambda d: d.update(threshold=0.3)) and "certificate.bound to null" in \
        edited(lambda d: d.update(threshold=0.3))
    assert "between 0 and 1" in edited(lambda d: d.update(threshold=7))
    assert "certificate.bound" in edited(lambda d: d["certificate"].update(bound=0.001))
    assert "certificate.min_labeled" in edited(lambda d: d["certificate"].update(max_escaped=0.5))
    assert "certificate.max_escaped" in edited(lambda d: d["certificate"].update(max_escaped=1.5))
    assert "steps" in edited(lambda d: [st.update(threshold=0.3) for st in d["steps"] if st["threshold"] == 0.81]
                             and d.update(threshold=0.3))
    assert "has version 0; this crossreview reads version 1" in edited(lambda d: d.update(version=0))
    # a threshold of one's own, declared as such, is allowed and says so
    own = json.loads(json.dumps(doc))
    own["threshold"], own["certificate"]["bound"] = 0.3, None
    write(tmp_path / "own.json", json.dumps(own))
    assert load_calibration(tmp_path / "own.json").summary() == "threshold 0.30: set by hand, not certified"


def test_a_policy_file_from_another_ledger_is_named_as_such(tmp_path, monkeypatch):
    from crossreview.ledger.calibration import drift_for

    planted(tmp_path / "a" / "ledger.db")
    other = planted(tmp_path / "b" / "ledger.db")
    # the ledger is named by its absolute path, even when given relative (it was "a/ledger.db")
    monkeypatch.chdir(tmp_path)
    cal = calibrate_ledger(Ledger(Path("a") / "ledger.db"), 0.1, 0.9)
    assert cal.certificate.window.ledger == str((tmp_path / "a" / "ledger.db").resolve())
    same = drift_for(Ledger(tmp_path / "a" / "ledger.db"), cal)
    assert same.other_ledger is None and same.warning is None
    moved = drift_for(other, cal)
    assert moved.other_ledger == cal.certificate.window.ledger
    assert "computed on another ledger" in moved.warning and str(tmp_path / "b" / "ledger.db") in moved.warning
    assert "crossreview calibrate" in moved.warning


def test_calibrate_command_writes_the_file_and_stats_shows_certificate_and_drift(cli, tmp_path):
    led = planted(tmp_path / "ledger.db")
    out = tmp_path / "cal.json"
    res = cli("calibrate", "--ledger", str(led.path), "--max-escaped", "0.1", "--confidence", "0.9", "-o", str(out))
    assert res.returncode == 0, res.stderr
    assert "threshold 0.81" in res.stdout and "n=40" in res.stdout and "0.80" in res.stdout
    assert load_calibration(out).threshold == 0.81
    doc = cli("calibrate", "--ledger", str(led.path), "--max-escaped", "0.1", "-o", str(out), "--json").json()
    assert doc["threshold"] == 0.81 and doc["certificate"]["errors"] == 0

    stats = cli("stats", "--ledger", str(led.path), "--calibration", str(out))
    assert stats.returncode == 0, stats.stderr
    assert "Calibration" in stats.stdout and "threshold 0.81" in stats.stdout and "drift warning" not in stats.stdout
    # 30 newer task runs that mostly score low: the auto-accept share collapsed, stats says so
    plant(led, "r-new", [(0.2, False)] * 30, T0 + timedelta(days=2))
    stats = cli("stats", "--ledger", str(led.path), "--calibration", str(out), "--json")
    drift = stats.json()["calibration"]["drift"]
    assert drift["recent"] == 30 and drift["share_at_or_above"] == 0.0
    assert "crossreview calibrate" in drift["warning"]
    assert "drift warning" in cli("stats", "--ledger", str(led.path), "--calibration", str(out)).stdout
    # The HTML report carries the same certificate and warning.
    rep = cli("report", "--ledger", str(led.path), "--calibration", str(out), "-o", str(tmp_path / "r.html"))
    assert rep.returncode == 0, rep.stderr
    html = (tmp_path / "r.html").read_text()
    assert "id='calibration'" in html and "threshold 0.81" in html and "Drift warning" in html


def test_stats_and_the_report_show_the_calibrations_times_as_every_other_time(cli, tmp_path):
    """The window and the moment it was computed read "2026-03-02 09:00:00 UTC", converted from any offset
    the policy file holds, not the ISO text cut at 19 characters (another zone's clock, no zone said)."""
    led = planted(tmp_path / "ledger.db")
    cal = calibrate_ledger(led, 0.1, 0.9, now=datetime(2026, 3, 3, 11, 30, tzinfo=timezone(timedelta(hours=2))))
    out = save_calibration(cal, tmp_path / "cal.json")
    doc = json.loads(out.read_text())
    doc["certificate"]["window"]["first"] = "2026-03-02T11:00:00+02:00"  # T0, as a machine two hours east writes it
    out.write_text(json.dumps(doc))
    window = "2026-03-02 09:00:00 UTC → 2026-03-02 10:03:00 UTC"
    stats = cli("stats", "--ledger", str(led.path), "--calibration", str(out))
    assert stats.returncode == 0, stats.stderr
    assert window in stats.stdout and "2026-03-03 09:30:00 UTC" in stats.stdout, stats.stdout
    assert "T09:00" not in stats.stdout and "11:00:00" not in stats.stdout and "11:30" not in stats.stdout
    # --json keeps ISO with its offset, for machines
    doc = cli("stats", "--ledger", str(led.path), "--calibration", str(out), "--json").json()
    assert doc["calibration"]["certificate"]["computed"] == "2026-03-03T11:30:00+02:00"
    rep = cli("report", "--ledger", str(led.path), "--calibration", str(out), "-o", str(tmp_path / "r.html"))
    assert rep.returncode == 0, rep.stderr
    html = (tmp_path / "r.html").read_text()
    section = html[html.index("id='calibration'"):html.index("id='escalations'")]  # the raw JSON below keeps ISO
    assert window in section and "T09:00" not in section and "11:00:00" not in section, section


def test_calibrate_with_too_little_history_says_how_many_more(cli, tmp_path):
    led = Ledger(tmp_path / "ledger.db")
    plant(led, "r-few", [(0.9, False)] * 10, T0)
    res = cli("calibrate", "--ledger", str(led.path))
    assert res.returncode == 1, res.stdout + res.stderr
    text = " ".join(res.stdout.split())  # rich wraps long lines
    assert "no threshold passes" in text
    assert "114" in text and "104 more labeled task runs" in text
    written = load_calibration(tmp_path / ".crossreview" / "calibration.json")
    assert written.threshold is None and written.certificate.needed_more == 104
    bad = cli("calibrate", "--ledger", str(led.path), "--confidence", "90")
    assert bad.returncode == 2 and "strictly between 0 and 1" in bad.stderr


# --- a real run with --policy calibrated -------------------------------------------------------

REVIEWER = """
import json, os
conf = {"t60": 0.6, "t62": 0.62, "t70": 0.7, "t90": 0.9}[os.environ["CROSSREVIEW_TASK_ID"]]
tests = json.load(open(os.environ["CROSSREVIEW_TESTS_FILE"]))
ok = bool(tests and tests["all_passed"])
print(json.dumps({"verdict": "approve" if ok else "reject", "confidence": conf if ok else 0.9}))
"""


def test_run_with_calibrated_policy_accepts_exactly_the_tasks_at_or_above_the_threshold(cli, suite, tmp_path):
    cal = calibrate_ledger(planted(tmp_path / "hist.db"), 0.1, 0.9)
    assert cal.threshold == 0.81
    save_calibration(cal, tmp_path / ".crossreview" / "calibration.json")
    for name in ("t60", "t62", "t70", "t90"):
        make_task(suite, name)
    reviewer = write(tmp_path / "reviewer.py", REVIEWER)
    args = ["run", str(suite), "--agent", "oracle", "--agent", "noop", "--reviewer", f"command:{{python}} {reviewer}",
            "--json", "--jobs", "2"]
    res = cli(*args, "--policy", "calibrated")
    assert res.returncode == 3, res.stderr
    got = {t["task"]: (t["decision"], t["winner"]) for t in res.json()["tasks"]}
    # score = (1 + confidence) / 2: 0.80 < 0.81 <= 0.81, 0.85, 0.95
    assert got == {"t60": ("escalated", None), "t62": ("accepted", "a"), "t70": ("accepted", "a"),
                   "t90": ("accepted", "a")}
    from conftest import ledger_rows

    rows = ledger_rows(tmp_path / ".crossreview", "SELECT task, agreement, decision FROM task_runs ORDER BY task")
    assert [(r["task"], round(r["agreement"], 3)) for r in rows] == [
        ("t60", 0.8), ("t62", 0.81), ("t70", 0.85), ("t90", 0.95)]
    [run] = ledger_rows(tmp_path / ".crossreview", "SELECT config FROM runs")
    assert json.loads(run["config"])["calibration"]["threshold"] == 0.81  # resume decides with the same file

    # no policy file where it is looked for: a usage error naming it and the fix, nothing runs
    missing = cli(*args, "--agent", "oracle", "--policy", "cascade", "--calibration", str(tmp_path / "none.json"))
    assert missing.returncode == 2
    assert "none.json" in missing.stderr and "crossreview calibrate" in missing.stderr
    write(tmp_path / "broken.json", "{}")
    broken = cli(*args, "--policy", "calibrated", "--calibration", str(tmp_path / "broken.json"))
    assert broken.returncode == 2 and "broken.json is malformed" in broken.stderr


def test_a_parked_task_run_with_holdout_results_is_labeled(tmp_path, cli):
    """Parked task runs are written as far as they got (holdout included), so they label the score too."""
    import shutil

    from crossreview.ledger.calibration import labeled
    from crossreview.ledger.figures import load

    root = Path(__file__).resolve().parent.parent
    shutil.copytree(root / "tasks", tmp_path / "tasks")
    r = cli("run", "tasks/roman_numerals", "--json")
    assert r.returncode == 3, r.stdout + r.stderr  # the example suite's split task
    d = load(Ledger(tmp_path / ".crossreview" / "ledger.db"))
    [t] = d.task_runs
    assert t.status == "parked"
    [(tr, sample)] = labeled(d)
    assert tr.id == t.id and sample.score == t.row["agreement"]
    assert cli("calibrate", "--json").returncode in (0, 1)


def test_pytest_plugin_takes_the_policy_file(tmp_path, suite):
    """`pytest --crossreview --crossreview-policy calibrated --crossreview-calibration FILE` decides by it."""
    import subprocess
    import sys

    from conftest import cli_env

    cal = calibrate_ledger(planted(tmp_path / "hist.db"), 0.1, 0.9)
    save_calibration(cal, tmp_path / "strict.json")  # not the default location
    for name in ("t60", "t90"):
        make_task(suite, name)
    reviewer = write(tmp_path / "reviewer.py", REVIEWER)
    args = [sys.executable, "-m", "pytest", "-p", "no:langsmith_plugin", "-p", "no:cacheprovider", "--crossreview",
            str(suite), "--crossreview-reviewer", f"command:{{python}} {reviewer}", "--crossreview-policy",
            "calibrated", "-rA"]
    env = cli_env()
    env.pop("PYTEST_ADDOPTS", None)
    res = subprocess.run([*args, "--crossreview-calibration", "strict.json"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL)
    assert res.returncode == 3, res.stdout + res.stderr  # t90 passes, t60 (0.80 < 0.81) waits for a human
    assert "1 passed" in res.stdout and "1 escalated" in res.stdout
    missing = subprocess.run([*args, "--crossreview-calibration", "none.json"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL)
    assert missing.returncode == 4 and "none.json" in missing.stdout + missing.stderr


def test_a_flagged_candidate_never_counts_as_an_auto_accept_in_the_history(tmp_path):
    """40 task runs where f may fake its tests, scores 1.0 (approved at 1.0) and passes holdout, beside a
    clean c scoring 0.85 (approved at 0.7) that fails it. The ledger's recorded pick is f; but the
    calibrated policy never accepts f — it accepts c at any threshold up to 0.85, and c is always wrong.
    Counting f's score and label certified 0.50 for ≤10% escaped defects while every acceptance escaped;
    labeled by c, the scan certifies nothing. A task run whose candidates are all flagged is not labeled,
    and is not counted as waiting for holdout results either (the parked one read from its packet)."""
    from crossreview.ledger.calibration import labeled
    from crossreview.ledger.figures import load

    led = Ledger(tmp_path / "ledger.db")
    run = "r-flag"
    led.start_run(run, {"suite_dir": "/suites/planted", "agents": [{"name": "f"}, {"name": "c"}]})
    flag = ["conftest.py: adds or changes a conftest.py, which pytest runs before the tests"]
    for i in range(42):
        tr = f"{run}/t{i:03d}"
        led.start_task_run(tr, run, f"t{i:03d}", "/suites/planted", [], {})
        every = i >= 40  # the last two: both candidates flagged
        cands = [Candidate(agent="f", spec="x", tests=_report(2, 2), holdout=_report(1, 1), tampering=flag),
                 Candidate(agent="c", spec="x", tests=_report(2, 2), holdout=_report(0, 1),
                           tampering=flag if every else [])]
        verdicts = [Verdict(reviewer="c", candidate="f", verdict="approve", confidence=1.0),
                    Verdict(reviewer="f", candidate="c", verdict="approve", confidence=0.7)]
        decision = Decision(kind="escalated", reason="flagged", policy="calibrated")
        result = TaskResult(task=f"t{i:03d}", task_run=tr, run=run, decision="escalated", reason="flagged")
        if i == 41:  # parked, as older ledgers wrote it: the packet alone, no candidate rows
            led.open_escalation(Escalation(id="e-flag", run=run, task_run=tr, task=f"t{i:03d}", reason="flagged",
                                           packet={"candidates": [{"agent": a, "tests_passed": 2, "tests_total": 2,
                                                                   "tampering": flag} for a in ("f", "c")],
                                                   "verdicts": []}))
        else:
            led.record_task_run(result, cands, verdicts, [(0, decision)], [], rounds=1)
        with led.connect() as db:
            db.execute("UPDATE task_runs SET started=? WHERE id=?", ((T0 + timedelta(minutes=i)).isoformat(), tr))

    d = load(led)
    assert {t.row["agreement_pick"] for t in d.task_runs if t.status == "done"} == {"f"}  # the recorded score
    pairs = labeled(d)
    assert len(pairs) == 40, [t.id for t, _ in pairs]
    assert {(round(s.score, 6), s.wrong) for _, s in pairs} == {(0.85, True)}
    cal = calibrate_ledger(led, 0.1, 0.9)
    assert cal.threshold is None, cal.summary()
    assert (cal.certificate.labeled, cal.certificate.waiting) == (40, 0)
