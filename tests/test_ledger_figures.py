"""Known-answer tests: a ledger built by hand, whose figures were worked out on paper.

Two suite runs of three agents (a, b, c; every agent reviews the other two):

    run r-alpha (suite alpha), Mon 2026-03-02 10:00 UTC (ISO week 2026-W10)
      T1 easy          accepted by consensus, winner a
      T2 easy, parse   escalated; a human picked b, 5 minutes after first seeing it
      T3 parse         rejected by consensus
    run r-beta (suite beta), Tue 2026-03-10 10:00 UTC (ISO week 2026-W11)
      T4 easy          escalated (c crashed); a human rejected all, 15 minutes
      T5 (no tag)      accepted by consensus, winner c; c's abstaining review has unknown cost
      T6 (no tag)      escalated, still waiting (parked: only its packet is in the ledger)

Verdicts (A approve, R reject, confidence), tests and holdout per candidate:

         candidate a               candidate b               candidate c
    T1   3/3 h2/2  b:A.9 c:A.8     3/3 h2/2  a:A.6 c:R.7     1/3 h0/2  a:R1  b:R1
    T2   2/3 h0/2  b:A.5 c:R.5     3/3 h2/2  a:A1  c:R.6     3/3 h1/2  a:R.8 b:A.7
    T3   0/3 h0/2  b:R1  c:R1      0/3 h0/2  a:R1  c:R.9     1/3 h2/2  a:R.8 b:R1
    T4   2/3 h2/2  b:A.9 c:A.9     3/3 h0/2  a:R.4 c:A.6     error (no review)
    T5   3/3 h2/2  b:A1  c:abstain 2/3 h0/2  a:R1  c:R1      3/3 h1/2  a:A.8 b:A.8
    T6   3/3       b:A.5 c:R.5     3/3       a:R.5 c:R.5     3/3       a:A.5 b:R.5

Usage: a solve = 800+200 tokens, $0.010, 2 calls, 10 s; b = 1500+500, $0.030, 3 calls,
20 s; c = 400+100, $0.005, 1 call, 5 s; every review 100+50 tokens, $0.001, 1 call, 2 s
(but T5's abstention: cost unknown). Node timeline of each recorded task run, in
seconds from its start: prepare 0-1, solve a 1-11 / b 1-21 / c 1-6, verify after
each solve (1 s), all reviews 22-24, decide 24-25, record at 25 (for an escalated
one: 1 s after the human decided). Escalations are created 25 s after the start.

The worked answers are the literal numbers in the assertions below.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from crossreview.ledger import Ledger
from crossreview.ledger.figures import cohen_kappa, compute, fleiss_kappa, percentile
from crossreview.models import (
    Candidate,
    Decision,
    Escalation,
    HumanDecision,
    Task,
    TaskResult,
    TestOutcome,
    TestReport,
    Usage,
    Verdict,
)
from crossreview.packet import build_packet

UTC = timezone.utc
R1 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
R2 = datetime(2026, 3, 10, 10, 0, tzinfo=UTC)
AGENTS = ("a", "b", "c")
SOLVE = {"a": (800, 200, 0.010, 2, 10), "b": (1500, 500, 0.030, 3, 20), "c": (400, 100, 0.005, 1, 5)}

#            tests      holdout     verdicts on it: (reviewer, verdict, confidence)
TASKS = {
    "T1": dict(run="r-alpha", start=R1, tags=["easy"], cands={
        "a": ((3, 3), (2, 2), [("b", "approve", .9), ("c", "approve", .8)]),
        "b": ((3, 3), (2, 2), [("a", "approve", .6), ("c", "reject", .7)]),
        "c": ((1, 3), (0, 2), [("a", "reject", 1.0), ("b", "reject", 1.0)])},
        decision=("accepted", "a")),
    "T2": dict(run="r-alpha", start=R1 + timedelta(minutes=1), tags=["easy", "parse"], cands={
        "a": ((2, 3), (0, 2), [("b", "approve", .5), ("c", "reject", .5)]),
        "b": ((3, 3), (2, 2), [("a", "approve", 1.0), ("c", "reject", .6)]),
        "c": ((3, 3), (1, 2), [("a", "reject", .8), ("b", "approve", .7)])},
        decision=("escalated", None),
        human=dict(action="pick", pick="b", shown=R1 + timedelta(hours=1), minutes=5)),
    "T3": dict(run="r-alpha", start=R1 + timedelta(minutes=2), tags=["parse"], cands={
        "a": ((0, 3), (0, 2), [("b", "reject", 1.0), ("c", "reject", 1.0)]),
        "b": ((0, 3), (0, 2), [("a", "reject", 1.0), ("c", "reject", .9)]),
        "c": ((1, 3), (2, 2), [("a", "reject", .8), ("b", "reject", 1.0)])},
        decision=("rejected", None)),
    "T4": dict(run="r-beta", start=R2, tags=["easy"], cands={
        "a": ((2, 3), (2, 2), [("b", "approve", .9), ("c", "approve", .9)]),
        "b": ((3, 3), (0, 2), [("a", "reject", .4), ("c", "approve", .6)]),
        "c": (None, None, [])},
        decision=("escalated", None),
        human=dict(action="reject", pick=None, shown=R2 + timedelta(minutes=30), minutes=15)),
    "T5": dict(run="r-beta", start=R2 + timedelta(minutes=1), tags=[], cands={
        "a": ((3, 3), (2, 2), [("b", "approve", 1.0), ("c", "abstain", 0.0)]),
        "b": ((2, 3), (0, 2), [("a", "reject", 1.0), ("c", "reject", 1.0)]),
        "c": ((3, 3), (1, 2), [("a", "approve", .8), ("b", "approve", .8)])},
        decision=("accepted", "c")),
    "T6": dict(run="r-beta", start=R2 + timedelta(minutes=2), tags=[], cands={
        "a": ((3, 3), None, [("b", "approve", .5), ("c", "reject", .5)]),
        "b": ((3, 3), None, [("a", "reject", .5), ("c", "reject", .5)]),
        "c": ((3, 3), None, [("a", "approve", .5), ("b", "reject", .5)])},
        decision=("escalated", None), parked=True),
}


def _report(passed: int, total: int) -> TestReport:
    return TestReport(
        outcomes=[TestOutcome(name=f"test_{i}", outcome="passed" if i < passed else "failed") for i in range(total)],
        exit_code=0 if passed == total else 1,
    )


def _iso(t: datetime) -> str:
    return t.isoformat()


def _event(node: str, t0: datetime, a: float, b: float, agent: str | None = None) -> dict:
    return {"node": node, "agent": agent, "round": 0, "started": _iso(t0 + timedelta(seconds=a)),
            "finished": _iso(t0 + timedelta(seconds=b))}


def _build_one(led: Ledger, name: str, spec: dict) -> None:
    t0 = spec["start"]
    run = spec["run"]
    tr = f"{run}/{name}"
    led.start_task_run(tr, run, name, f"/suites/{name}", spec["tags"], {"paper": True})
    cands, verdicts = [], []
    events = [_event("prepare", t0, 0, 1)]
    for agent, (tests, holdout, on_it) in spec["cands"].items():
        tin, tout, cost, calls, secs = SOLVE[agent]
        ok = tests is not None
        cands.append(Candidate(
            agent=agent, spec="oracle", status="ok" if ok else "error", error=None if ok else "agent crashed",
            diff=f"diff --git a/x.py b/x.py\n+# by {agent}\n", files_changed=["x.py"], lines_added=1,
            started=t0 + timedelta(seconds=1), finished=t0 + timedelta(seconds=1 + secs),
            usage=Usage(tokens_in=tin, tokens_out=tout, cost=cost, calls=calls),
            tests=_report(*tests) if tests else None, holdout=_report(*holdout) if holdout else None,
        ))
        events.append(_event("solve", t0, 1, 1 + secs, agent))
        events.append(_event("verify", t0, 1 + secs, 2 + secs, agent))
        for reviewer, verdict, conf in on_it:
            abstain = verdict == "abstain"
            verdicts.append(Verdict(
                reviewer=reviewer, candidate=agent, verdict=verdict, confidence=conf,
                concerns=[] if verdict == "approve" else [f"{reviewer} has doubts"],
                usage=Usage(tokens_in=100, tokens_out=50, cost=None if abstain else 0.001, calls=1),
                seconds=2.0, error="reviewer crashed" if abstain else None,
            ))
            events.append(_event("review", t0, 22, 24, reviewer))
    events.append(_event("decide", t0, 24, 25))
    kind, winner = spec["decision"]
    decision = Decision(kind=kind, winner=winner, reason=f"{name}: {kind}", policy="unanimous")
    task = Task(id=name, path=Path(f"/suites/{name}"), instruction=f"Solve {name}.", repo_path=Path("/repo"))
    end = t0 + timedelta(seconds=25)
    if kind == "escalated":
        esc = Escalation(id=f"e-{name.lower()}", run=run, task_run=tr, task=name, reason="reviewers disagree",
                         created=end, packet=build_packet(task, cands, verdicts, decision))
        led.open_escalation(esc)
        if spec.get("parked"):
            with led.connect() as db:
                db.execute("UPDATE task_runs SET started=? WHERE id=?", (_iso(t0), tr))
            return
        h = spec["human"]
        decided = h["shown"] + timedelta(minutes=h["minutes"])
        led.decide_escalation(esc.id, HumanDecision(action=h["action"], pick=h["pick"], by="paper",
                                                    shown_at=h["shown"], decided_at=decided))
        end = decided + timedelta(seconds=1)
        kind, winner = ("accepted", h["pick"]) if h["action"] == "pick" else ("rejected", None)
    events.append(_event("record", end, 0, 0))
    result = TaskResult(task=name, task_run=tr, run=run, decision=kind, winner=winner,
                        escalation=f"e-{name.lower()}" if spec["decision"][0] == "escalated" else None,
                        reason=f"{name}: {kind}", seconds=(end - t0).total_seconds())
    calls = [{"phase": "solve", "agent": c.agent, "round": 0, "seq": i, "model": f"fake/{c.agent}",
              "tokens_in": c.usage.tokens_in // c.usage.calls + (c.usage.tokens_in % c.usage.calls if i == 0 else 0),
              "tokens_out": c.usage.tokens_out // c.usage.calls + (c.usage.tokens_out % c.usage.calls if i == 0 else 0),
              "cost": c.usage.cost / c.usage.calls, "started": c.started, "seconds": 1.0, "error": None}
             for c in cands for i in range(c.usage.calls)]
    calls += [{"phase": "review", "agent": v.reviewer, "candidate": v.candidate, "seq": 0, "model": "fake/review",
               "tokens_in": 100, "tokens_out": 50, "cost": v.usage.cost, "started": _iso(t0), "seconds": 2.0,
               "error": v.error} for v in verdicts]
    led.record_task_run(result, cands, verdicts, [(0, decision)], events, rounds=1, calls=calls)
    with led.connect() as db:
        db.execute("UPDATE task_runs SET started=?, finished=? WHERE id=?", (_iso(t0), _iso(end), tr))


def build_known(location) -> Ledger:
    """The hand-built ledger at ``location`` (a file path or a PostgreSQL URL)."""
    led = Ledger(location)
    for run, suite, start in (("r-alpha", "alpha", R1), ("r-beta", "beta", R2)):
        led.start_run(run, {"suite_dir": f"/suites/{suite}", "agents": [{"name": a, "spec": "oracle"} for a in AGENTS]})
        with led.connect() as db:
            db.execute("UPDATE runs SET started=? WHERE id=?", (_iso(start), run))
        led.set_run_status(run, "finished")
    for name, spec in TASKS.items():
        _build_one(led, name, spec)
    return led


@pytest.fixture
def known(tmp_path) -> Ledger:
    return build_known(tmp_path / "ledger.db")


def approx(x):
    return pytest.approx(x, rel=1e-9, abs=1e-12)


def check_known_figures(f: dict) -> None:
    """Every figure of the hand-built ledger, as worked out on paper."""
    c = f["counts"]
    assert (c["runs"], c["task_runs"], c["accepted"], c["rejected"], c["waiting"], c["errors"]) == (2, 6, 3, 2, 1, 0)
    assert c["by_consensus"] == {"accepted": 2, "rejected": 1}
    assert c["by_human"] == {"accepted": 1, "rejected": 1}
    assert (c["escalations"], c["escalations_decided"], c["guided"]) == (3, 2, 0)

    iv = f["interventions"]
    assert (iv["escalated"], iv["task_runs"], iv["rate"]) == (3, 6, 0.5)
    rates = lambda rows: {r["key"]: (r["escalated"], r["task_runs"]) for r in rows}  # noqa: E731
    assert rates(iv["by_suite"]) == {"alpha": (1, 3), "beta": (2, 3)}
    assert rates(iv["by_tag"]) == {"easy": (2, 3), "parse": (1, 2), "(no tag)": (1, 2)}
    assert rates(iv["by_week"]) == {"2026-W10": (1, 3), "2026-W11": (2, 3)}

    ht = f["human_time"]
    assert (ht["decided"], ht["waiting"]) == (2, 1)
    assert ht["median_minutes"] == approx(10.0)  # of 5 and 15
    assert ht["p90_minutes"] == approx(14.0)  # 5 + 0.9 x (15 - 5)
    assert ht["total_minutes"] == approx(20.0)
    assert ht["minutes_per_100_task_runs"] == approx(2000 / 6)
    assert ht["escalations_per_100_task_runs"] == approx(50.0)
    # created -> decided: 63 min 35 s (T2) and 44 min 35 s (T4)
    assert ht["turnaround_median_minutes"] == approx((63 + 35 / 60 + 44 + 35 / 60) / 2)

    au = f["autonomy"]
    assert (au["interventions"], au["task_runs_per_intervention"]) == (3, 2.0)
    assert au["mean_task_runs_between"] == approx(1.0)  # T3 between T2 and T4, T5 between T4 and T6
    # T2's escalation 03-02 10:01:25 -> T4's 03-10 10:00:25 = 11519 min; -> T6's 10:02:25 = 2 min
    assert au["mean_minutes_between"] == approx(5760.5)
    assert au["median_minutes_between"] == approx(5760.5)

    ra = f["reviewer_agreement"]
    fl = ra["fleiss"]
    # 16 candidates with two ratings (T5's a has one: the abstention is no rating); 9 agree;
    # 13 of 32 ratings approve: P = 9/16, Pe = (13/32)^2 + (19/32)^2 = 530/1024.
    assert (fl["subjects"], fl["ratings"]) == (16, 32)
    assert fl["observed"] == approx(9 / 16)
    assert fl["expected"] == approx(530 / 1024)
    assert fl["kappa"] == approx(23 / 247)
    pairs = {(p["a"], p["b"]): p for p in ra["pairs"]}
    # a & b judged c's candidates: 5 shared, 3 agree, both approve 2 of 5: Pe = 13/25
    assert (pairs[("a", "b")]["items"], pairs[("a", "b")]["kappa"]) == (5, approx(1 / 6))
    # a & c judged b's: 6 shared, 3 agree, a approves 2/6, c 1/6: Pe = 11/18
    assert (pairs[("a", "c")]["items"], pairs[("a", "c")]["kappa"]) == (6, approx(-2 / 7))
    # b & c judged a's: 5 shared (T5's abstention drops one), 3 agree, b 4/5, c 2/5: Pe = 11/25
    assert (pairs[("b", "c")]["items"], pairs[("b", "c")]["kappa"]) == (5, approx(2 / 7))

    who = {(x["reviewer"], x["author"]): (x["approvals"], x["verdicts"]) for x in ra["approvals"]}
    assert who == {("a", "b"): (2, 6), ("a", "c"): (2, 5), ("b", "a"): (5, 6), ("b", "c"): (2, 5),
                   ("c", "a"): (2, 5), ("c", "b"): (1, 6)}

    ag = {a["agent"]: a for a in f["agents"]}
    assert [(ag[x]["approvals"], ag[x]["rejections"], ag[x]["abstentions"]) for x in AGENTS] == [
        (4, 7, 0), (7, 4, 0), (3, 8, 1)]
    assert [ag[x]["approval_rate"] for x in AGENTS] == [approx(4 / 11), approx(7 / 11), approx(3 / 11)]
    assert [(ag[x]["approvals_received"], ag[x]["reviews_received"]) for x in AGENTS] == [(7, 11), (3, 12), (4, 10)]
    assert [(ag[x]["matched_final"], ag[x]["scored"]) for x in AGENTS] == [(5, 5), (4, 5), (3, 6)]
    assert [ag[x]["agrees_with_tests"] for x in AGENTS] == [approx(8 / 11), approx(8 / 11), approx(6 / 11)]
    assert [(ag[x]["candidates_passing"], ag[x]["candidates"], ag[x]["wins"]) for x in AGENTS] == [
        (3, 6, 1), (4, 6, 1), (3, 6, 1)]

    co = f["cost"]
    assert (co["task_runs"], co["task_runs_costed"]) == (6, 5)
    assert (co["tokens"], co["tokens_in"], co["tokens_out"], co["calls"]) == (21700, 16300, 5400, 58)
    assert co["cost"] == {"total": None, "known": approx(0.252), "unknown": 1, "items": 43}
    assert co["tokens_per_call"] == approx(21700 / 58)
    assert co["cost_per_call"] is None
    assert co["agent_seconds"] == approx(231.0)
    solve, review = co["by_phase"]["solve"], co["by_phase"]["review"]
    assert (solve["tokens"], solve["calls"], solve["cost"]["total"]) == (17500, 30, approx(0.225))
    assert solve["cost_per_call"] == approx(0.0075)
    assert (review["tokens"], review["calls"], review["cost"]["total"], review["cost"]["known"]) == (
        4200, 28, None, approx(0.027))
    by = {a["agent"]: a for a in co["by_agent"]}
    assert [(by[x]["solve"]["tokens"], by[x]["review"]["tokens"]) for x in AGENTS] == [
        (5000, 1350), (10000, 1350), (2500, 1500)]
    assert by["a"]["review"]["cost"]["total"] == approx(0.009) and by["c"]["review"]["cost"]["total"] is None
    # Per suite run, the cheapest agent that solved every costed task run: r-alpha c (1500 tokens,
    # $0.015, 15 s); in r-beta c crashed on T4 (an error candidate is no solve), so a (2000, $0.020,
    # 20 s). (13200 + 8500) / (1500 + 2000); agent-seconds (141 + 90) / (15 + 20)
    assert co["multiplier"]["tokens"] == approx(6.2)
    assert co["multiplier"]["agent_seconds"] == approx(6.6)
    assert co["multiplier"]["cost"] is None and "unknown" in co["multiplier"]["note"]
    assert co["review_share"]["tokens"] == approx(4200 / 21700)
    assert co["review_share"]["cost"] is None
    assert co["review_share"]["agent_seconds"] == approx(56 / 231)

    par = f["parallel"]
    assert par["task_runs"] == 5
    assert par["busy_seconds"] == approx(231.0)  # 4 x (35 + 12) + (35 + 8)
    assert par["wall_seconds"] == approx(125.0)  # the human's wait is not wall-clock of the task run
    assert par["efficiency"] == approx(231 / 375)
    assert par["mean_agents_running"] == approx(2.1)  # 231 busy over 5 x 22 s with an agent running
    assert par["peak_agents_running"] == 6

    q = f["quality"]
    assert q["task_runs_with_holdout"] == 5
    assert (q["escaped_defects"]["count"], q["escaped_defects"]["of"]) == (1, 2)
    assert q["escaped_defects"]["task_runs"] == ["r-beta/T5"]
    assert (q["wrong_rejections"]["count"], q["wrong_rejections"]["of"]) == (1, 1)
    assert (q["needless_escalations"]["count"], q["needless_escalations"]["of"]) == (1, 2)
    assert q["needless_escalations"]["task_runs"] == ["r-beta/T4"]
    assert (q["human_errors"]["count"], q["human_errors"]["of"], q["human_errors"]["escalations"]) == (1, 2, ["e-t4"])

    s = f["agreement_score"]
    assert s["task_runs"] == 6
    # T1 .925 (a), T2 .6 (b), T3 1/60 (c), T4 .6333 (a), T5 .9 (c), T6 .5 (a)
    assert s["mean"] == approx((0.925 + 0.6 + 1 / 60 + 0.95 * 2 / 3 + 0.9 + 0.5) / 6)
    assert s["by_outcome"]["accepted by consensus"]["mean"] == approx(0.9125)
    assert s["by_outcome"]["rejected by consensus"]["mean"] == approx(1 / 60)
    assert s["by_outcome"]["escalated"]["mean"] == approx((0.6 + 0.95 * 2 / 3 + 0.5) / 3)
    th = {t["threshold"]: t for t in s["thresholds"]}
    assert (th[0.5]["would_accept"], th[0.5]["escalations_avoided"], th[0.5]["holdout_known"],
            th[0.5]["holdout_fails"]) == (5, 3, 4, 1)
    assert (th[0.8]["would_accept"], th[0.8]["escalations_avoided"], th[0.8]["holdout_fails"]) == (2, 0, 1)

    runs = {r["run"]: r for r in f["runs"]}
    assert [r["run"] for r in f["runs"]] == ["r-alpha", "r-beta"]
    assert (runs["r-alpha"]["escalated"], runs["r-alpha"]["tokens"], runs["r-alpha"]["human_minutes"]) == (
        1, 13200, approx(5.0))
    assert runs["r-alpha"]["cost"]["total"] == approx(0.153)
    assert runs["r-alpha"]["multiplier_tokens"] == approx(8.8)
    assert runs["r-beta"]["cost"] == {"total": None, "known": approx(0.099), "unknown": 1, "items": 16}
    assert runs["r-beta"]["multiplier_tokens"] == approx(4.25)
    assert (runs["r-alpha"]["baseline_agent"], runs["r-beta"]["baseline_agent"]) == ("c", "a")
    assert [(e["id"], e["minutes"]) for e in f["escalations"]] == [
        ("e-t2", approx(5.0)), ("e-t4", approx(15.0)), ("e-t6", None)]


def test_figures_of_the_hand_built_ledger(known):
    check_known_figures(compute(known))


def test_agreement_scores_are_recorded_per_task_run_and_candidate(known):
    with known.connect(write=False) as db:
        trs = {r["task"]: (r["agreement"], r["agreement_pick"]) for r in db.execute("SELECT * FROM task_runs")}
        cands = {(r["task_run"], r["agent"]): r["agreement"] for r in db.execute("SELECT * FROM candidates")}
    assert trs["T1"] == (approx(0.925), "a")
    assert trs["T2"] == (approx(0.6), "b")
    assert trs["T3"] == (approx(1 / 60), "c")
    assert trs["T4"] == (approx(0.95 * 2 / 3), "a")
    assert trs["T5"] == (approx(0.9), "c")
    assert trs["T6"] == (approx(0.5), "a")  # parked: scored from its packet; tie with c, first agent wins
    assert cands[("r-alpha/T1", "b")] == approx(0.475)  # (0.8 + 0.15) / 2
    assert cands[("r-beta/T4", "c")] == 0.0  # crashed
    assert cands[("r-beta/T5", "a")] == approx(0.75)  # an abstention is 0.5


def test_model_calls_are_itemized_and_replaced_on_rewrite(known):
    with known.connect(write=False) as db:
        rows = db.execute("SELECT * FROM calls WHERE task_run='r-alpha/T1' ORDER BY phase, agent, seq").fetchall()
        total = db.execute("SELECT COUNT(*) AS n, SUM(tokens_in + tokens_out) AS t FROM calls").fetchone()
        unknown = db.execute("SELECT COUNT(*) AS n FROM calls WHERE cost IS NULL").fetchone()["n"]
    assert [(r["phase"], r["agent"]) for r in rows[:6]] == [("review", "a")] * 2 + [("review", "b")] * 2 + [
        ("review", "c")] * 2
    assert [(r["agent"], r["seq"]) for r in rows if r["phase"] == "solve"] == [
        ("a", 0), ("a", 1), ("b", 0), ("b", 1), ("b", 2), ("c", 0)]
    # One row per call, and their sum is the per-agent totals the figures use.
    assert (total["n"], total["t"]) == (58, 21700) and unknown == 1
    # Writing the task run again replaces its calls instead of adding to them.
    from crossreview.models import TaskResult as TR

    known.record_task_run(TR(task="T1", task_run="r-alpha/T1", run="r-alpha", decision="rejected"), [], [], [], [],
                          rounds=1, calls=[{"phase": "solve", "agent": "a", "tokens_in": 1, "tokens_out": 1}])
    with known.connect(write=False) as db:
        assert db.execute("SELECT COUNT(*) AS n FROM calls WHERE task_run='r-alpha/T1'").fetchone()["n"] == 1
    with pytest.raises(ValueError, match="phase"):
        known.record_calls("r-alpha/T1", [{"phase": "thinking", "agent": "a"}])


def test_filters_since_and_suite(known):
    f = compute(known, since=datetime(2026, 3, 5, tzinfo=UTC))
    assert (f["interventions"]["escalated"], f["interventions"]["task_runs"]) == (2, 3)
    assert [r["run"] for r in f["runs"]] == ["r-beta"]
    f = compute(known, suite="alpha")
    assert (f["interventions"]["escalated"], f["interventions"]["task_runs"]) == (1, 3)
    assert f["cost"]["cost"]["total"] == approx(0.153)  # every cost of alpha is known
    assert f["cost"]["multiplier"]["cost"] == approx(0.153 / 0.015)
    f = compute(known, suite="/suites/beta")
    assert f["counts"]["task_runs"] == 3
    f = compute(known, suite="nope")
    assert f["counts"]["task_runs"] == 0 and f["interventions"]["rate"] is None


def test_suite_filter_takes_the_folder_as_typed_for_run(known, monkeypatch):
    """`crossreview run tasks/` is how a suite is run: `--suite tasks/` (tab completion's trailing
    slash) or a relative path must select it, not silently give figures of zero task runs."""
    assert compute(known, suite="alpha/")["counts"]["task_runs"] == 3
    monkeypatch.chdir("/")
    assert compute(known, suite="suites/beta")["counts"]["task_runs"] == 3
    assert compute(known, suite="./suites/beta/")["counts"]["task_runs"] == 3
    assert compute(known, suite="suites/gamma")["counts"]["task_runs"] == 0


def test_kappa_and_percentile_definitions():
    # Fleiss' textbook example shape: 3 subjects x 2 raters.
    assert fleiss_kappa([["approve", "approve"], ["reject", "reject"], ["approve", "reject"]])["kappa"] == approx(1 / 3)
    assert fleiss_kappa([["approve", "approve"], ["approve", "approve"]])["kappa"] is None
    assert fleiss_kappa([["approve"]])["kappa"] is None
    assert cohen_kappa([("approve", "approve"), ("reject", "reject")])["kappa"] == approx(1.0)
    assert cohen_kappa([("approve", "reject"), ("reject", "approve")])["kappa"] == approx(-1.0)
    assert percentile([1, 2, 3, 4], 50) == 2.5 and percentile([7], 90) == 7 and percentile([], 50) is None


STATS_LINES = [
    "task runs               6: 3 accepted, 2 rejected, 1 waiting for a human",
    "decided by consensus    2 accepted, 1 rejected",
    "decided by a human      1 accepted, 1 rejected",
    "intervention rate                                 50.0% (3/6)",
    "escalations per 100 task runs                     50.0",
    "human minutes per escalation (shown → decided)    median 10.0 min, p90 14.0 min (2 decided, 1 waiting)",
    "human minutes per 100 task runs                   333.3 min (5.6 h)",
    "task runs per intervention                        2.0",
    "task runs between interventions                   mean 1.0, median 1.0",
    "wall-clock between interventions                  mean 5,760.5 min (96.0 h), median 5,760.5 min (96.0 h)",
    "Fleiss' kappa    0.093 over 16 candidates, 32 verdicts",
    "│ a · b │                 5 │        60.0% │ 0.167 │",
    "│ a · c │                 6 │        50.0% │ -0.286 │",
    "│ b · c │                 5 │        60.0% │ 0.286 │",
    "│ a     │ oracle │           36.4% (4/11) │          63.6% (7/11) │           100.0% (5/5) │             72.7% │        3/6 │    1 │",
    "│ c     │ oracle │ 27.3% (3/11) +1 abstained │          40.0% (4/10) │            50.0% (3/6) │             54.5% │        3/6 │    1 │",
    "│ whole run │ 21,700 │ ≥ $0.2520 (1 of 43 unknown) │    58 │       374.1 │        n/a │       231.0 s │",
    "│ solve     │ 17,500 │                     $0.2250 │    30 │       583.3 │  $0.007500 │       175.0 s │",
    "cost multiplier (whole run / cheapest single agent's solve) tokens 6.20×, money n/a, agent-seconds 6.60×",
    "review share of the total tokens 19.4%, money n/a, agent-seconds 24.2%",
    "parallel efficiency (busy / (wall-clock × agents))             61.6%",
    "mean agents running at once (while any runs)                   2.10 (peak 6)",
    "│ escaped defects (accepted by consensus, holdout fails) │ 1/2 │ 50.0% │",
    "│ wrong rejections (rejected by consensus, a candidate passes holdout) │ 1/1 │ 100.0% │",
    "│ needless escalations (majority's pick passes holdout)       │   1/2 │  50.0% │",
    "│ human errors (pick fails holdout / reject while one passes) │   1/2 │  50.0% │",
    "mean agreement score       0.596 over 6 task runs",
]


@pytest.mark.slow
def test_stats_prints_exactly_the_paper_figures(cli, tmp_path):
    build_known(tmp_path / "paper.db")
    res = cli("stats", "--ledger", "paper.db")
    assert res.returncode == 0, res.stderr
    squeeze = lambda text: " ".join(text.split())  # noqa: E731 - table column widths are not the point
    lines = [squeeze(line) for line in res.stdout.splitlines()]
    for expected in STATS_LINES:
        assert squeeze(expected) in lines, f"missing line: {expected}\n{res.stdout}"
    # The score's heading sends a user to the README section that explains it, not to a source file.
    assert 'Agreement score (README: "The agreement score")' in res.stdout and "score.py" not in res.stdout
    res = cli("stats", "--ledger", "paper.db", "--json")
    assert res.returncode == 0, res.stderr
    check_known_figures(res.json())
    res = cli("stats", "--ledger", "paper.db", "--json", "--suite", "beta", "--since", "2026-03-10")
    assert res.json()["interventions"]["rate"] == approx(2 / 3)
    res = cli("stats", "--ledger", "paper.db", "--since", "yesterday-ish")
    assert res.returncode == 2 and "7d" in res.stderr
    # The heading says the --since a person gave in words they read, not raw ISO with an offset.
    heading = cli("stats", "--ledger", "paper.db", "--since", "2026-03-10").stdout.splitlines()[0]
    assert "since 2026-03-10 00:00:00 UTC" in heading and "+00:00" not in heading, heading


@pytest.mark.slow
def test_export_rows_match_the_figures(cli, tmp_path):
    build_known(tmp_path / "paper.db")
    res = cli("export", "--ledger", "paper.db")
    assert res.returncode == 0, res.stderr
    rows = {r["task"]: r for r in map(json.loads, res.stdout.splitlines())}
    assert list(rows) == ["T1", "T2", "T3", "T4", "T5", "T6"]
    assert rows["T2"]["outcome"] == "accepted" and rows["T2"]["decided_by"] == "human"
    assert rows["T2"]["escalated"] and rows["T2"]["human_minutes"] == approx(5.0)
    assert rows["T5"]["cost"] is None and rows["T5"]["cost_known"] == approx(0.050) and rows["T5"]["cost_unknown_items"] == 1
    assert rows["T1"]["tokens"] == 3500 + 6 * 150 and rows["T1"]["cost"] == approx(0.051)
    assert [rows[t]["escaped_defect"] for t in ("T1", "T5", "T2")] == [False, True, None]
    assert rows["T3"]["wrong_rejection"] is True and rows["T4"]["needless_escalation"] is True
    assert rows["T4"]["human_error"] is True and rows["T2"]["human_error"] is False
    assert rows["T6"]["outcome"] == "escalated" and rows["T6"]["tokens"] is None
    assert sum(r["escalated"] for r in rows.values()) == 3
    assert rows["T1"]["tags"] == ["easy"] and rows["T1"]["wall_seconds"] == approx(25.0)
    assert rows["T1"]["agents_used"] == rows["T1"]["agents_configured"] == rows["T1"]["agents"]
    assert rows["T6"]["agents_used"] is None  # parked before its rows were written (an older ledger's way)

    out = tmp_path / "runs.csv"
    res = cli("export", "--ledger", "paper.db", "--format", "csv", "-o", str(out))
    assert res.returncode == 0, res.stderr
    import csv

    with open(out, newline="") as fh:
        table = list(csv.DictReader(fh))
    assert [r["task"] for r in table] == ["T1", "T2", "T3", "T4", "T5", "T6"]
    assert table[1]["tags"] == '["easy", "parse"]' and table[4]["cost"] == "" and table[0]["escalated"] == "false"


def test_a_guided_round_counts_as_an_intervention_decided_by_consensus(tmp_path):
    """Round 0 splits, the human sends the agents back with guidance, round 1 agrees."""
    led = Ledger(tmp_path / "guided.db")
    t0 = R1
    led.start_run("r-g", {"suite_dir": "/suites/g"})
    led.start_task_run("r-g/t", "r-g", "t", "/t", [], {})

    def cand(agent, rnd, tests, holdout):
        return Candidate(agent=agent, spec="oracle", round=rnd, tests=_report(*tests), holdout=_report(*holdout),
                         started=t0, finished=t0 + timedelta(seconds=1))

    def verdict(rev, c, rnd, v):
        return Verdict(reviewer=rev, candidate=c, round=rnd, verdict=v, confidence=1.0)

    r0 = [cand("a", 0, (1, 2), (2, 2)), cand("b", 0, (2, 2), (0, 2))]
    v0 = [verdict("a", "b", 0, "reject"), verdict("b", "a", 0, "approve")]
    esc = Escalation(id="e-g", run="r-g", task_run="r-g/t", task="t", reason="split", round=0, created=t0,
                     packet=build_packet(Task(id="t", path=Path("/t"), instruction="i", repo_path=Path("/r")), r0, v0,
                                         Decision(kind="escalated", reason="split")))
    led.open_escalation(esc)
    led.decide_escalation("e-g", HumanDecision(action="guide", guide="try harder", by="me",
                                               shown_at=t0 + timedelta(minutes=1), decided_at=t0 + timedelta(minutes=3)))
    r1 = [cand("a", 1, (2, 2), (2, 2)), cand("b", 1, (2, 2), (0, 2))]
    v1 = [verdict("a", "b", 1, "reject"), verdict("b", "a", 1, "approve")]
    led.record_task_run(
        TaskResult(task="t", task_run="r-g/t", run="r-g", decision="accepted", winner="a"), r0 + r1, v0 + v1,
        [(0, Decision(kind="escalated", reason="split")), (1, Decision(kind="accepted", winner="a", reason="ok"))],
        [], rounds=2)
    f = compute(led)
    assert f["counts"]["by_consensus"] == {"accepted": 1, "rejected": 0} and f["counts"]["guided"] == 1
    assert f["interventions"]["escalated"] == 1
    assert f["human_time"]["median_minutes"] == approx(2.0)
    q = f["quality"]
    # Round 1's winner a passes holdout: no escaped defect. Round 0's majority pick (a, approved
    # by its only reviewer) passes holdout: the escalation was needless. Guidance is not scored.
    assert (q["escaped_defects"]["count"], q["escaped_defects"]["of"]) == (0, 1)
    assert (q["needless_escalations"]["count"], q["needless_escalations"]["of"]) == (1, 1)
    assert q["human_errors"]["of"] == 0
    # Only the last round's verdicts are held against the final decision.
    ag = {a["agent"]: a for a in f["agents"]}
    assert (ag["b"]["matched_final"], ag["b"]["scored"]) == (1, 1) and ag["a"]["scored"] == 0
    assert led.get_task_run("r-g/t")["agreement"] == approx(1.0)  # round 1: a passes 2/2, approved at 1.0


def test_cost_multiplier_baseline_is_an_agent_that_solved_every_task_run(tmp_path):
    """Under --policy cascade the third agent solves only the task runs the first two did not
    settle. Its solve over those few is no single-agent baseline: the cheapest agent that solved
    every task run of the suite run is (here a, not c, which solved only X2)."""
    led = Ledger(tmp_path / "cascade.db")
    led.start_run("r-cas", {"suite_dir": "/suites/cas"})
    ab = {"a": ((3, 3), (2, 2), [("b", "approve", .9)]), "b": ((3, 3), (2, 2), [("a", "approve", .9)])}
    abc = {"a": ((3, 3), (2, 2), [("b", "approve", .9), ("c", "approve", .9)]),
           "b": ((0, 3), (0, 2), [("a", "reject", .9), ("c", "reject", .9)]),
           "c": ((3, 3), (2, 2), [("a", "approve", .9), ("b", "approve", .9)])}
    _build_one(led, "X1", dict(run="r-cas", start=R1, tags=[], cands=ab, decision=("accepted", "a")))
    _build_one(led, "X2", dict(run="r-cas", start=R1 + timedelta(minutes=1), tags=[], cands=abc,
                               decision=("accepted", "a")))
    f = compute(led)
    # whole run: X1 = a 1000 + b 2000 + 2 reviews x 150; X2 = a 1000 + b 2000 + c 500 + 6 x 150 -> 7,700
    # tokens, $0.093, 81 agent-seconds; a's solve on both: 2,000 tokens, $0.020, 20 s (c's: 500, $0.005, 5 s).
    m = f["cost"]["multiplier"]
    assert f["cost"]["tokens"] == 7700
    assert m["tokens"] == approx(7700 / 2000)
    assert m["cost"] == approx(0.093 / 0.020)
    assert m["agent_seconds"] == approx(81 / 20)
    assert f["runs"][0]["multiplier_tokens"] == approx(7700 / 2000)
    assert f["runs"][0]["multiplier_agent_seconds"] == approx(81 / 20)


def _costed_run(led: Ledger, run: str, solves: dict[str, list[tuple[str, int, float | None, float]]]) -> None:
    """A recorded suite run with no reviews: per task, each agent's (status, tokens, cost, seconds)."""
    led.start_run(run, {"suite_dir": f"/suites/{run}"})
    for task, by_agent in solves.items():
        tr = f"{run}/{task}"
        led.start_task_run(tr, run, task, f"/{task}", [], {})
        cands = [Candidate(agent=agent, spec=f"llm:fake/{agent}", status=status,
                           error=None if status == "ok" else "HTTP 500 on every attempt",
                           started=R1, finished=R1 + timedelta(seconds=secs), tests=_report(1, 1) if status == "ok" else None,
                           usage=Usage(tokens_in=tokens, tokens_out=0, cost=cost, calls=1))
                 for agent, (status, tokens, cost, secs) in by_agent.items()]
        led.record_task_run(TaskResult(task=task, task_run=tr, run=run, decision="rejected"), cands, [],
                            [(0, Decision(kind="rejected", reason="planted"))], [], rounds=1)


def test_an_agent_whose_solve_errored_is_no_baseline(tmp_path):
    """`down` got HTTP 500 on every call: it produced no candidate, spent next to nothing, and did
    not solve the task runs, so it is not the cheap single agent the run is compared with. The
    baseline is one agent for tokens, money and agent-seconds: the cheapest by money (`thrifty`:
    more tokens than `pricey`, but a cheaper model)."""
    led = Ledger(tmp_path / "down.db")
    solves = {"pricey": ("ok", 1000, 0.010, 10.0), "thrifty": ("ok", 3000, 0.003, 30.0),
              "down": ("error", 10, 0.0001, 1.0)}
    _costed_run(led, "r-1", {"T1": solves, "T2": solves})
    f = compute(led)
    # whole run: 2 x (1000 + 3000 + 10) tokens, 2 x $0.0131, 2 x 41 s; thrifty alone: 6000, $0.006, 60 s
    m = f["cost"]["multiplier"]
    assert m["tokens"] == approx(8020 / 6000)
    assert m["cost"] == approx(0.0262 / 0.006)
    assert m["agent_seconds"] == approx(82 / 60)
    assert "note" not in m
    assert f["runs"][0]["baseline_agent"] == "thrifty"

    # Money unknown for one of them: the cheapest by tokens gives all three (and the money is n/a).
    led = Ledger(tmp_path / "unpriced.db")
    unpriced = {**solves, "thrifty": ("ok", 3000, None, 30.0)}
    _costed_run(led, "r-2", {"T1": unpriced, "T2": unpriced})
    f = compute(led)
    assert f["runs"][0]["baseline_agent"] == "pricey"
    m = f["cost"]["multiplier"]
    assert (m["tokens"], m["agent_seconds"], m["cost"]) == (approx(8020 / 2000), approx(82 / 20), None)


def test_when_no_agent_solved_every_task_run_the_one_that_solved_most_is_the_baseline(tmp_path):
    led = Ledger(tmp_path / "partial.db")
    ok, err = ("ok", 1000, 0.01, 10.0), ("error", 0, 0.0, 0.5)
    _costed_run(led, "r-1", {"T1": {"a": ok, "b": err, "down": err}, "T2": {"a": ok, "b": ok, "down": err},
                             "T3": {"a": err, "b": ok, "down": err}})
    _costed_run(led, "r-2", {"T1": {"a": err, "b": err}})
    f = compute(led)
    # r-1: a and b solved 2 of 3 (tie: a's 2000 tokens, $0.02, 20.5 s); down none. r-2: nobody solved
    # anything, so no baseline. Whole run r-1: 4 solves of 1000 tokens, $0.04, 41.5 + 1.5 s.
    runs = {r["run"]: r for r in f["runs"]}
    assert (runs["r-1"]["baseline_agent"], runs["r-2"]["baseline_agent"]) == ("a", None)
    m = f["cost"]["multiplier"]
    assert m["tokens"] == approx(4000 / 2000) and m["cost"] == approx(0.04 / 0.02)
    assert "in 1 suite run no single agent solved every task run" in m["note"]
    assert "1 suite run left out: no agent solved any of its task runs" in m["note"]


def test_an_abstention_is_no_majority_for_needless_escalations(tmp_path):
    """The majority's pick needs more than half of its reviewers, abstaining ones included (as the
    majority policy's quorum): a's one approval beside c's abstention is no majority, so an escalation
    caused by a crashing reviewer is not needless even though a passes holdout."""
    led = Ledger(tmp_path / "abstain.db")
    led.start_run("r-ab", {"suite_dir": "/suites/ab"})
    cands = {"a": ((3, 3), (2, 2), [("b", "approve", .9), ("c", "abstain", 0.0)]),
             "b": ((0, 3), (0, 2), [("a", "reject", .9), ("c", "abstain", 0.0)]),
             "c": ((0, 3), (0, 2), [("a", "reject", .9), ("b", "reject", .9)])}
    _build_one(led, "Y1", dict(run="r-ab", start=R1, tags=[], cands=cands, decision=("escalated", None),
                               human=dict(action="pick", pick="a", shown=R1 + timedelta(minutes=1), minutes=2)))
    q = compute(led)["quality"]["needless_escalations"]
    assert (q["count"], q["of"]) == (0, 1)


def test_minutes_between_interventions_are_never_negative_with_overlapping_task_runs(tmp_path):
    """With --jobs 2, Z2 starts a second after Z1 but escalates 10 minutes before it: the wall-clock
    between the two interventions is 10 minutes, not -10."""
    led = Ledger(tmp_path / "jobs.db")
    led.start_run("r-j", {"suite_dir": "/suites/j"})
    split = {"a": ((3, 3), None, [("b", "reject", .9)]), "b": ((3, 3), None, [("a", "reject", .9)])}
    for name, start in (("Z1", R1), ("Z2", R1 + timedelta(seconds=1))):
        _build_one(led, name, dict(run="r-j", start=start, tags=[], cands=split, decision=("escalated", None),
                                   parked=True))
    with led.connect() as db:
        db.execute("UPDATE escalations SET created=? WHERE id='e-z1'", (_iso(R1 + timedelta(minutes=30)),))
        db.execute("UPDATE escalations SET created=? WHERE id='e-z2'", (_iso(R1 + timedelta(minutes=20)),))
    au = compute(led)["autonomy"]
    assert au["interventions"] == 2 and au["mean_task_runs_between"] == 0
    assert au["mean_minutes_between"] == approx(10.0)
    assert au["median_minutes_between"] == approx(10.0)


def test_a_ledger_without_runs_has_empty_figures(tmp_path):
    f = compute(Ledger(tmp_path / "empty.db"))
    assert f["counts"]["task_runs"] == 0
    assert f["interventions"]["rate"] is None and f["cost"]["multiplier"]["tokens"] is None
    assert f["reviewer_agreement"]["fleiss"]["kappa"] is None


def test_sqlite_file_is_wal(known, tmp_path):
    db = sqlite3.connect(tmp_path / "ledger.db")
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        db.close()


def test_agents_per_task_counts_task_runs_parked_after_the_cascade_started_every_agent(tmp_path):
    """Under the cascade a task run parks at an escalation only after every agent ran, and it is
    written to the ledger as far as it got. Leaving it out (it used to count only recorded task
    runs) showed 2 agents per task run and a 2/3 agent-run ratio where the run started 5 of 6."""
    led = Ledger(tmp_path / "cascade-parked.db")
    led.start_run("r-cp", {"suite_dir": "/suites/cp"})

    def cands(names):
        return [Candidate(agent=n, spec="x", tests=TestReport(outcomes=[TestOutcome(name="t", outcome="passed")],
                                                                exit_code=0), lines_added=1) for n in names]

    def verdicts(names, verdict):
        return [Verdict(reviewer=r, candidate=c, verdict=verdict, confidence=0.9, seconds=2.0)
                for r in names for c in names if r != c]

    led.start_task_run("r-cp/agree", "r-cp", "agree", "/suites/cp/agree", [], {})
    led.record_task_run(TaskResult(task="agree", task_run="r-cp/agree", run="r-cp", decision="accepted", winner="a",
                                   reason="x"), cands("ab"), verdicts("ab", "approve"),
                        [(0, Decision(kind="accepted", winner="a", reason="x", policy="cascade"))], [], rounds=1,
                        agents_used=2, agents_configured=3)
    led.start_task_run("r-cp/split", "r-cp", "split", "/suites/cp/split", [], {})
    led.open_escalation(Escalation(id="e-cp", run="r-cp", task_run="r-cp/split", task="split", reason="x",
                                   packet={"candidates": [], "verdicts": []}))
    led.record_parked("r-cp/split", cands("abc"), verdicts("abc", "reject"),
                      [(0, Decision(kind="escalated", reason="x", policy="cascade"))], [], rounds=1,
                      agents_used=3, agents_configured=3)
    ap = compute(led)["agents_per_task"]
    assert (ap["task_runs"], ap["agents_used"], ap["agents_configured"]) == (2, 5, 6)
    assert ap["agent_runs_ratio"] == approx(5 / 6) and ap["mean_agents_used"] == approx(2.5)
    assert (ap["stopped_early"], ap["solves_saved"], ap["reviews_saved"]) == (1, 1, 4)
    # agent-seconds: 2 + 6 reviews of 2 s actually run; 4 more not started, at the mean review (2 s)
    assert 8.0 <= ap["agent_seconds"]["saved"] < 8.01  # + 1 solve of ~0 s


def test_per_run_figures_count_the_task_runs_a_budget_cap_stopped(tmp_path):
    """A run a cap cut short is stored as "finished" (resume, gc and merge read that status): its
    per-run figures say how many of its task runs the cap stopped, and the report's point shows it."""
    from crossreview.ledger.report import plots

    led = Ledger(tmp_path / "cap.db")
    _costed_run(led, "r-cap", {"T1": {"a": ("ok", 100, 0.001, 1.0)}})
    _costed_run(led, "r-free", {"T1": {"a": ("ok", 100, 0.001, 1.0)}})
    # T2's second agent was stopped by the suite run's cap: an error candidate naming it.
    tr = "r-cap/T2"
    led.start_task_run(tr, "r-cap", "T2", "/T2", [], {})
    cands = [Candidate(agent="a", spec="llm:fake/a", status="ok", started=R1, finished=R1 + timedelta(seconds=1),
                       tests=_report(1, 1), usage=Usage(tokens_in=100, tokens_out=0, cost=0.001, calls=1)),
             Candidate(agent="b", spec="llm:fake/b", status="error", started=R1, finished=R1,
                       error="budget exhausted: --max-cost $0.001 for the suite run reached")]
    led.record_task_run(TaskResult(task="T2", task_run=tr, run="r-cap", decision="rejected"), cands, [],
                        [(0, Decision(kind="rejected", reason="planted"))], [], rounds=1)
    for run in ("r-cap", "r-free"):
        led.set_run_status(run, "finished")
    f = compute(led)
    by_run = {r["run"]: r for r in f["runs"]}
    assert (by_run["r-cap"]["stopped_by_cap"], by_run["r-free"]["stopped_by_cap"]) == (1, 0)
    svg = plots(f)["cost_vs_interventions"]
    assert "run r-cap: 0 escalated of 2" in svg and "1 task run stopped by a budget cap" in svg
    assert svg.count("stopped by a budget cap") == 1  # not on r-free's point
