"""Consensus policies: verdicts and test outcomes in, accept / reject / escalate out.

Pure functions over models, no I/O, so they are easy to reason about and to
test. The rules (the same for every policy, only the quorum differs):

- a candidate is *acceptable* when all its tests pass and enough of its
  reviewers approve it (unanimous: every one; majority: more than half);
  a candidate nobody reviews (a single agent) is judged by its tests alone;
- if any candidate is acceptable, accept the one most reviewers prefer, then
  the smaller diff, then the first agent;
- if no candidate passes its tests and no reviewer approves anything, reject;
- anything else is a disagreement between reviewers, or between reviewers
  and the tests, and goes to a human.

A candidate that may fake its test results (``Candidate.tampering``: it adds
a conftest.py, changes pytest's configuration, edits the tests it was shown,
or the verifier's canary caught it) is never acceptable, whatever its tests
and reviewers say. If no other candidate is acceptable, the decision is an
escalation naming what it changed, never an automatic accept or reject.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .models import Candidate, Decision, Verdict

Quorum = Callable[[int, int], bool]
"""(approvals, reviews) -> enough?"""


def unanimous_quorum(approvals: int, reviews: int) -> bool:
    """Every reviewer approves."""
    return approvals == reviews


def majority_quorum(approvals: int, reviews: int) -> bool:
    """More than half of the reviewers approve (no reviewers: tests decide)."""
    return reviews == 0 or approvals * 2 > reviews


def tampering_line(c: Candidate) -> str:
    """One line naming what a tampering candidate changed."""
    reasons = c.tampering[:3] + ([f"and {len(c.tampering) - 3} more"] if len(c.tampering) > 3 else [])
    return f"{c.agent} may fake its test results: " + "; ".join(reasons)


DISAGREE = "the reviewers disagree"
"""How an escalation's cause is worded when it is a disagreement (Decision.cause leaves it empty then)."""


def tampering_alone(policy, candidates: list[Candidate], verdicts: list[Verdict], decision: Decision) -> list[str]:
    """The flagged candidates, when being flagged is the only reason ``decision`` is an escalation; else [].

    A flagged candidate (``Candidate.tampering``) goes to a human whatever its reviewers say, and
    its tests do not count, so a reviewer "disagreeing" with its tests is no disagreement. The
    reviewers disagree only if they split on a flagged candidate (one approves, another rejects),
    or if the policy, asked again about the clean candidates alone, would still escalate. Otherwise
    the human should be told that a candidate may fake its test results, not that the reviewers
    disagree. ``policy`` is anything with ``decide(candidates, verdicts)``; policies are pure (see
    the module docstring), so asking again changes nothing.
    """
    return explain_flagged(policy, candidates, verdicts, decision).tampering_alone


def explain_flagged(policy, candidates: list[Candidate], verdicts: list[Verdict], decision: Decision) -> Decision:
    """``decision`` with ``tampering_alone`` and ``cause`` saying what really sends it to a human.

    An escalation with a flagged candidate has the flag for a reason; the policy's own reason and
    its cause speak of the flag only. What else is wrong comes from the flagged candidates' verdicts
    (a split on one is a disagreement) and from the policy asked again about the clean candidates
    alone: if it would still escalate, its cause (a score below the threshold) is a cause here too,
    with the lines that explain it; if it escalates without one, the reviewers disagree. The causes
    beside the flag also go in front of ``reason`` (the score one in the policy's own words, with its
    numbers), which otherwise names the flag only. Without a cause beside the flag,
    ``tampering_alone`` names the flagged candidates (see tampering_alone).
    A decision that is no escalation, or has nothing flagged, comes back as it was.
    """
    flagged = [c.agent for c in candidates if c.tampering]
    if decision.kind != "escalated" or not flagged:
        return decision.model_copy(update={"tampering_alone": []})
    causes = []
    if any({"approve", "reject"} <= {v.verdict for v in verdicts if v.candidate == name} for name in flagged):
        causes.append(DISAGREE)
    said: dict[str, str] = {DISAGREE: DISAGREE}  # each cause as the reason text words it
    lines: list[str] = []
    clean = [c for c in candidates if not c.tampering]
    if clean:
        names = {c.agent for c in clean}
        try:
            again = policy.decide(clean, [v for v in verdicts if v.candidate in names])
        except Exception:  # noqa: BLE001 - a plugin policy that trips on this loses only the finer wording
            return decision.model_copy(update={"tampering_alone": []})
        if getattr(again, "kind", "escalated") == "escalated":
            why = str(getattr(again, "cause", "") or "") or DISAGREE
            if why not in causes:
                causes.append(why)
            if why != DISAGREE:
                # The policy's own reason has the numbers ("agreement score 0.750 (best: b) is below the
                # calibrated threshold 0.81"); the cause alone is the short form the headline uses.
                said[why] = str(getattr(again, "reason", "") or "") or why
            if why != DISAGREE:
                # The flag's own lines do not show the scores that keep the clean candidates from
                # being accepted; without them the human would not see that they are below it.
                lines = [d for d in getattr(again, "disagreements", None) or [] if d not in decision.disagreements]
    if not causes:
        return decision.model_copy(update={"tampering_alone": flagged})
    # A cause the policy gave itself stays first; "the reviewers disagree" alone is the empty cause.
    own = [decision.cause] if decision.cause else []
    cause = "; ".join(own + [c for c in causes if c not in own])
    # The reason (the panel of `crossreview show`, the inbox, `run`'s output) spoke of the flag only:
    # put the other causes in front of it, so a human reading one line does not think that removing
    # the flagged candidate would settle it. A cause the policy's own reason already gives stays out.
    extra = [said.get(c, c) for c in causes if c not in own and said.get(c, c) not in decision.reason]
    return decision.model_copy(update={
        "tampering_alone": [],
        "cause": "" if cause == DISAGREE else cause,
        "disagreements": [*decision.disagreements, *lines],
        "reason": "; ".join([*extra, decision.reason]),
    })


def _tests_line(c: Candidate) -> str:
    if c.status != "ok":
        return f"{c.agent} failed to produce a candidate ({c.status}: {c.error})"
    if c.tests is None:
        return f"{c.agent} was not tested"
    line = f"{c.agent} passes {c.tests.passed}/{c.tests.total} tests"
    if c.tests.tampering:
        # "approves pr, but pr passes 2/2 tests" reads as a contradiction: say why they do not count.
        line += ", as reported by a test run caught faking its results"
    elif c.tests.passed == c.tests.total and not c.tests.all_passed:
        line += (" but its test run failed" if not c.tests.timed_out else " but its test run timed out")
    return line


@dataclass(frozen=True)
class ConsensusPolicy:
    """A policy defined by its quorum; see the module docstring for the rules."""

    name: str
    quorum: Quorum

    def decide(self, candidates: list[Candidate], verdicts: list[Verdict]) -> Decision:
        """Turn this round's candidates and verdicts into a decision."""
        by_candidate: dict[str, list[Verdict]] = {c.agent: [] for c in candidates}
        for v in verdicts:
            by_candidate.setdefault(v.candidate, []).append(v)

        acceptable = []
        disagreements = [tampering_line(c) for c in candidates if c.tampering]
        for c in candidates:
            vs = by_candidate[c.agent]
            approvals = sum(1 for v in vs if v.verdict == "approve")
            if c.tests_pass and self.quorum(approvals, len(vs)) and not c.tampering:
                acceptable.append(c)
            for v in vs:
                if v.verdict == "approve" and not c.tests_pass:
                    disagreements.append(f"{v.reviewer} approves {c.agent}, but {_tests_line(c)}")
                elif v.verdict == "reject" and c.tests_pass:
                    why = "; ".join(v.concerns[:3]) or "no reason given"
                    disagreements.append(f"{v.reviewer} rejects {c.agent}, which passes its tests: {why}")
                elif v.verdict == "abstain":
                    disagreements.append(f"{v.reviewer} could not review {c.agent}: {v.error or 'abstained'}")

        if acceptable:
            order = {c.agent: i for i, c in enumerate(candidates)}
            prefs = {c.agent: sum(1 for v in verdicts if v.prefers == c.agent) for c in acceptable}
            winner = min(acceptable, key=lambda c: (-prefs[c.agent], c.diff_size, order[c.agent]))
            n = len(by_candidate[winner.agent])
            yes = sum(1 for v in by_candidate[winner.agent] if v.verdict == "approve")
            # Under a majority some reviewers may reject or abstain (a cap stopped them): say how many approve.
            who = ("no peer reviewed it" if not n else "its reviewer approves" if n == 1
                   else f"its {n} reviewers approve" if yes == n else f"{yes} of its {n} reviewers approve")
            return Decision(
                kind="accepted",
                winner=winner.agent,
                reason=f"{_tests_line(winner)} and {who}",
                disagreements=disagreements,
                policy=self.name,
            )

        tampered = [c for c in candidates if c.tampering]
        if tampered:
            return Decision(
                kind="escalated",
                reason="; ".join(tampering_line(c) for c in tampered)
                + " — never accepted automatically; a human must look",
                disagreements=disagreements,
                policy=self.name,
            )

        any_pass = any(c.tests_pass for c in candidates)
        any_approve = any(v.verdict == "approve" for v in verdicts)
        if not any_pass and not any_approve:
            return Decision(
                kind="rejected",
                reason="no candidate passes its tests and no reviewer approves any: "
                + "; ".join(_tests_line(c) for c in candidates),
                disagreements=disagreements,
                policy=self.name,
            )
        if not disagreements:
            # Passing candidates whose reviewers split without a clear quorum.
            disagreements = [
                f"{c.agent}: {sum(v.verdict == 'approve' for v in by_candidate[c.agent])}"
                f"/{len(by_candidate[c.agent])} reviewers approve, {_tests_line(c)}"
                for c in candidates
            ]
        return Decision(
            kind="escalated",
            reason=f"reviewers and tests disagree ({self.name} consensus not reached)",
            disagreements=disagreements,
            policy=self.name,
        )


UNANIMOUS = ConsensusPolicy("unanimous", unanimous_quorum)
MAJORITY = ConsensusPolicy("majority", majority_quorum)


# --- calibrated and cascade: accept by a certified agreement-score threshold ---------


def _clear_reject(candidates: list[Candidate], verdicts: list[Verdict]) -> bool:
    """No candidate passes its tests and no reviewer approves any: every policy rejects this."""
    return not any(c.tests_pass for c in candidates) and not any(v.verdict == "approve" for v in verdicts)


@dataclass(frozen=True)
class CalibratedPolicy:
    """Accept the candidate the agreement score picks when the task run's score reaches the
    threshold `crossreview calibrate` certified; reject what every policy rejects; escalate the rest.

    Candidates flagged for tampering take no part in the pick or the task run's score (see
    score.agreement's ``exclude``): the best clean candidate is accepted beside a flagged one when
    it reaches the threshold, as under unanimous and majority; otherwise the flag escalates.

    ``calibration`` is a crossreview.calibrate.Calibration, bound per run by
    :meth:`with_calibration` (the runner reads the file; a policy does no I/O).
    ``initial_agents`` makes it a cascade: the graph starts that many agents,
    and one more each time this policy escalates, until all have run.
    """

    name: str
    calibration: object | None = None
    initial_agents: int | None = None

    needs_calibration = True
    """The runner binds a calibration file to this policy before a run (see with_calibration)."""

    def with_calibration(self, calibration) -> "CalibratedPolicy":
        """This policy with its threshold and certificate."""
        return CalibratedPolicy(self.name, calibration, self.initial_agents)

    @property
    def threshold(self) -> float | None:
        return getattr(self.calibration, "threshold", None)

    def decide(self, candidates: list[Candidate], verdicts: list[Verdict]) -> Decision:
        """Accept iff the agreement score reaches the threshold (the candidate it picks); see the class docstring."""
        if self.calibration is None:
            raise RuntimeError(f"the {self.name} policy has no calibration bound: run it through crossreview's runner")
        # Imported here, not at module level: the ledger package opens databases, and
        # policies must not import I/O. score.py itself is pure.
        from .calibrate import at_or_above
        from .ledger import score

        tampered = [c for c in candidates if c.tampering]
        # A flagged candidate is never accepted, and its score comes from test counts it may have
        # faked: it must not be the pick, nor hold the score that keeps a clean candidate at or above
        # the threshold from being accepted (unanimous and majority accept a clean one beside it too).
        agreement = score.from_models(candidates, verdicts, exclude=[c.agent for c in tampered])
        th = self.threshold
        by_name = {c.agent: c for c in candidates}
        pick = by_name.get(agreement.pick) if agreement.pick else None
        disagreements = [tampering_line(c) for c in tampered]
        summary = getattr(self.calibration, "summary", lambda: "")()
        s = agreement.task_run
        if pick is not None and pick.status == "ok" and at_or_above(s, th) and not pick.tampering:
            return Decision(
                kind="accepted", winner=pick.agent,
                reason=f"agreement score {s:.3f} of {pick.agent} ≥ calibrated threshold {th:.2f} ({summary}); "
                       f"{_tests_line(pick)}",
                disagreements=disagreements, policy=self.name,
            )
        if tampered:
            return Decision(kind="escalated",
                            reason="; ".join(tampering_line(c) for c in tampered)
                            + " — never accepted automatically; a human must look",
                            disagreements=disagreements, policy=self.name)
        if _clear_reject(candidates, verdicts):
            return Decision(kind="rejected",
                            reason="no candidate passes its tests and no reviewer approves any: "
                            + "; ".join(_tests_line(c) for c in candidates),
                            disagreements=disagreements, policy=self.name)
        # The reviewers may all agree here: what sends it to a human is the score, and the faces say so.
        if th is None:
            why = f"no auto-accept threshold is certified yet ({summary})"
            cause = "no auto-accept threshold is certified yet"
        else:
            who = f" (best: {agreement.pick})" if agreement.pick else ""
            why = f"agreement score {s if s is not None else 0:.3f}{who} is below the calibrated threshold {th:.2f}"
            cause = "agreement score below the calibrated threshold"
        lines = [f"{c.agent}: score {agreement.candidates.get((c.round, c.agent), 0.0):.3f}, {_tests_line(c)}"
                 for c in candidates]
        return Decision(kind="escalated", reason=why, disagreements=disagreements + lines, policy=self.name,
                        cause=cause)


CALIBRATED = CalibratedPolicy("calibrated")
CASCADE = CalibratedPolicy("cascade", initial_agents=2)
"""``calibrated``: accept by the certified threshold. ``cascade``: the same, starting two agents and
adding the next only when the decision is not clear (see crossreview/graph.py)."""
