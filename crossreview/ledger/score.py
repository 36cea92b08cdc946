"""The agreement score: one number per candidate and per task run, in [0, 1].

This is the only place it is defined; the ledger records it for every task
run whatever the decision (at ``Ledger.record_task_run``, and provisionally
when a run parks at an escalation), so a later policy can accept by threshold
and ``crossreview stats`` can say how the score separates good from bad.

Definition
----------

A reviewer's verdict on a candidate is turned into *support*, the reviewer's
confidence-weighted belief that the candidate is good::

    approve with confidence c  ->  (1 + c) / 2      (0.5 .. 1)
    reject  with confidence c  ->  (1 - c) / 2      (0 .. 0.5)
    abstain (reviewer failed)  ->  0.5              (no information)

    candidate score = tests share x mean support of the verdicts on it
    tests share     = tests passed / tests run       (0 when no test ran, or
                                                      the agent failed)

A candidate no peer reviewed (a single agent) is scored by its tests share
alone. The task run's score is the highest candidate score of its last round,
and the candidate holding it is recorded beside it (ties: the first agent).

Examples: all tests pass and one reviewer approves at 0.6 -> 0.8; all pass,
approved at 0.9 and rejected at 0.7 -> (0.95 + 0.15) / 2 = 0.55; 11 of 13
tests pass, approved at 0.6 -> 11/13 x 0.8 = 0.677.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable


@dataclass(frozen=True)
class ScoredCandidate:
    """What the score needs to know of a candidate."""

    agent: str
    round: int
    ok: bool
    tests_passed: int | None
    tests_total: int | None


@dataclass(frozen=True)
class ScoredVerdict:
    """What the score needs to know of a verdict."""

    reviewer: str
    candidate: str
    round: int
    verdict: str
    confidence: float


def support(verdict: str, confidence: float) -> float:
    """A verdict as the reviewer's confidence-weighted belief that the candidate is good."""
    c = min(1.0, max(0.0, float(confidence or 0.0)))
    if verdict == "approve":
        return (1.0 + c) / 2.0
    if verdict == "reject":
        return (1.0 - c) / 2.0
    return 0.5


def tests_share(ok: bool, passed: int | None, total: int | None) -> float:
    if not ok or not total:
        return 0.0
    return max(0.0, min(1.0, (passed or 0) / total))


def candidate_score(cand: ScoredCandidate, verdicts: Iterable[ScoredVerdict]) -> float:
    """The score of one candidate from the verdicts on it (in its round)."""
    share = tests_share(cand.ok, cand.tests_passed, cand.tests_total)
    on_it = [support(v.verdict, v.confidence) for v in verdicts
             if v.candidate == cand.agent and v.round == cand.round]
    if not on_it:
        return share
    return share * (sum(on_it) / len(on_it))


@dataclass(frozen=True)
class Agreement:
    """Scores of every candidate, and the task run's score with the candidate holding it."""

    task_run: float | None
    pick: str | None
    candidates: dict[tuple[int, str], float]


def agreement(candidates: list[ScoredCandidate], verdicts: list[ScoredVerdict],
              exclude: Iterable[str] = ()) -> Agreement:
    """Score every candidate (every round); the task run's score comes from the last round.

    ``exclude``: agents that may not hold the task run's score (their own scores are still
    computed). The calibrated policies pass the candidates flagged for tampering: their counts may
    be faked and they are never accepted, so their score must neither be the one compared with the
    threshold nor hide a clean candidate's. With every last-round candidate excluded, the task
    run has no score (None) and no pick.
    """
    scores = {(c.round, c.agent): candidate_score(c, verdicts) for c in candidates}
    if not candidates:
        return Agreement(None, None, scores)
    skip = set(exclude)
    last = max(c.round for c in candidates)
    best, pick = None, None
    for c in candidates:
        if c.round != last or c.agent in skip:
            continue
        s = scores[(c.round, c.agent)]
        if best is None or s > best:
            best, pick = s, c.agent
    return Agreement(best, pick, scores)


# --- adapters: models, ledger rows, escalation packets -----------------------------


def from_models(candidates: list[Any], verdicts: list[Any], exclude: Iterable[str] = ()) -> Agreement:
    """Score crossreview.models Candidate and Verdict objects (``exclude`` as for agreement)."""
    cs = [
        ScoredCandidate(c.agent, c.round, c.status == "ok",
                        c.tests.passed if c.tests else None, c.tests.total if c.tests else None)
        for c in candidates
    ]
    vs = [ScoredVerdict(v.reviewer, v.candidate, v.round, v.verdict, v.confidence) for v in verdicts]
    return agreement(cs, vs, exclude)


def from_rows(candidates: list[dict], verdicts: list[dict], exclude: Iterable[str] = ()) -> Agreement:
    """Score ledger rows (candidates and verdicts tables; ``exclude`` as for agreement)."""
    cs = [ScoredCandidate(c["agent"], c["round"], c["status"] == "ok", c["tests_passed"], c["tests_total"])
          for c in candidates]
    vs = [ScoredVerdict(v["reviewer"], v["candidate"], v["round"], v["verdict"], v["confidence"]) for v in verdicts]
    return agreement(cs, vs, exclude)


def packet_rows(packet: dict, rnd: int) -> tuple[list[dict], list[dict]]:
    """Candidate and verdict rows (the fields scores and figures use) from an escalation packet."""
    cands = [
        {"agent": c.get("agent"), "round": rnd, "status": c.get("status", "ok"),
         "tests_passed": c.get("tests_passed"), "tests_total": c.get("tests_total"),
         # as the candidates table keeps them
         "test_files": json.dumps(c.get("test_files") or []), "tampering": json.dumps(c.get("tampering") or [])}
        for c in packet.get("candidates") or [] if c.get("agent")
    ]
    verdicts = [
        {"reviewer": v.get("reviewer"), "candidate": v.get("candidate"), "round": rnd,
         "verdict": v.get("verdict", "abstain"), "confidence": v.get("confidence") or 0.0}
        for v in packet.get("verdicts") or [] if v.get("reviewer") and v.get("candidate")
    ]
    return cands, verdicts
