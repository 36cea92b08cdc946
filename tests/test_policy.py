"""crossreview.policy: UNANIMOUS and MAJORITY over hand-built candidates and verdicts."""

from __future__ import annotations

import pytest

from crossreview.models import Candidate, TestOutcome, TestReport, Verdict
from crossreview.policy import MAJORITY, UNANIMOUS


def report(passed: int = 1, failed: int = 0, **kw) -> TestReport:
    outcomes = [TestOutcome(name=f"t::p{i}", outcome="passed") for i in range(passed)]
    outcomes += [TestOutcome(name=f"t::f{i}", outcome="failed", message="assert 0") for i in range(failed)]
    kw.setdefault("exit_code", 1 if failed else 0)
    return TestReport(outcomes=outcomes, **kw)


def passing(agent: str, size: int = 2, **kw) -> Candidate:
    return Candidate(agent=agent, spec="x", tests=report(passed=3), lines_added=size, lines_removed=0, **kw)


def failing(agent: str, size: int = 0, **kw) -> Candidate:
    return Candidate(agent=agent, spec="x", tests=report(passed=1, failed=2), lines_added=size, **kw)


def v(reviewer: str, candidate: str, verdict: str = "approve", **kw) -> Verdict:
    return Verdict(reviewer=reviewer, candidate=candidate, verdict=verdict, **kw)


BOTH = pytest.mark.parametrize("policy", [UNANIMOUS, MAJORITY], ids=["unanimous", "majority"])


# --- accept ---------------------------------------------------------------------


@BOTH
def test_oracle_like_passing_candidate_approved_is_accepted(policy):
    # a = oracle (passes), b = noop (fails); each reviews the other with the tests
    cands = [passing("a"), failing("b")]
    d = policy.decide(cands, [v("b", "a", "approve"), v("a", "b", "reject", concerns=["1/3 tests pass"])])
    assert d.kind == "accepted"
    assert d.winner == "a"
    assert d.policy == policy.name
    assert "a passes 3/3 tests" in d.reason
    assert d.disagreements == []


@BOTH
def test_both_pass_winner_by_preferences_first(policy):
    # b has the bigger diff and comes second, but the reviewers prefer it
    cands = [passing("a", size=1), passing("b", size=50)]
    verdicts = [v("b", "a", prefers="b"), v("a", "b", prefers="b")]
    d = policy.decide(cands, verdicts)
    assert (d.kind, d.winner) == ("accepted", "b")


@BOTH
def test_both_pass_no_preference_smaller_diff_wins(policy):
    cands = [passing("a", size=30), passing("b", size=3)]
    d = policy.decide(cands, [v("b", "a"), v("a", "b")])
    assert (d.kind, d.winner) == ("accepted", "b")


@BOTH
def test_both_pass_same_size_first_agent_wins(policy):
    d = policy.decide([passing("a"), passing("b")], [v("b", "a"), v("a", "b")])
    assert (d.kind, d.winner) == ("accepted", "a")
    # the order of the agents, not their names
    d = policy.decide([passing("b"), passing("a")], [v("b", "a"), v("a", "b")])
    assert (d.kind, d.winner) == ("accepted", "b")


@BOTH
def test_split_preferences_fall_back_to_diff_size(policy):
    cands = [passing("a", size=10), passing("b", size=5)]
    d = policy.decide(cands, [v("b", "a", prefers="a"), v("a", "b", prefers="b")])
    assert d.winner == "b"


@BOTH
def test_only_acceptable_candidates_can_win(policy):
    # c is preferred but fails its tests: the winner is one that passes
    cands = [passing("a"), failing("c")]
    verdicts = [v("c", "a", prefers="c"), v("a", "c", "reject", prefers="a")]
    d = policy.decide(cands, verdicts)
    assert (d.kind, d.winner) == ("accepted", "a")


# --- reject ---------------------------------------------------------------------


@BOTH
def test_nothing_passes_nobody_approves_is_rejected(policy):
    cands = [failing("a"), failing("b")]
    d = policy.decide(cands, [v("b", "a", "reject"), v("a", "b", "reject")])
    assert d.kind == "rejected"
    assert d.winner is None
    assert "a passes 1/3 tests" in d.reason and "b passes 1/3 tests" in d.reason


# --- escalate -------------------------------------------------------------------


@BOTH
def test_reviewer_approving_a_failing_candidate_escalates(policy):
    cands = [failing("a"), failing("b")]
    d = policy.decide(cands, [v("b", "a", "approve"), v("a", "b", "reject")])
    assert d.kind == "escalated"
    assert d.winner is None
    assert any(line.startswith("b approves a") and "a passes 1/3 tests" in line for line in d.disagreements), (
        d.disagreements
    )


def test_reviewer_rejecting_a_passing_candidate_escalates_under_unanimous():
    cands = [passing("a"), failing("b"), failing("c")]
    verdicts = [
        v("b", "a", "approve"),
        v("c", "a", "reject", concerns=["hard-codes the answer", "no input check"]),
        v("a", "b", "reject"), v("c", "b", "reject"),
        v("a", "c", "reject"), v("b", "c", "reject"),
    ]
    d = UNANIMOUS.decide(cands, verdicts)
    assert d.kind == "escalated" and d.winner is None
    assert d.disagreements == ["c rejects a, which passes its tests: hard-codes the answer; no input check"]


def test_majority_accepts_two_of_three_approvals():
    cands = [passing("a"), failing("b"), failing("c"), failing("d")]
    verdicts = [v("b", "a"), v("c", "a"), v("d", "a", "reject", concerns=["too clever"])]
    verdicts += [v(r, c, "reject") for c in "bcd" for r in "abcd" if r != c]
    assert UNANIMOUS.decide(cands, verdicts).kind == "escalated"
    d = MAJORITY.decide(cands, verdicts)
    assert (d.kind, d.winner) == ("accepted", "a")
    assert d.policy == "majority"
    # the dissent is still on record
    assert d.disagreements == ["d rejects a, which passes its tests: too clever"]


def test_majority_needs_more_than_half():
    cands = [passing("a"), failing("b"), failing("c")]
    verdicts = [v("b", "a"), v("c", "a", "reject"), v("a", "b", "reject"), v("c", "b", "reject"),
                v("a", "c", "reject"), v("b", "c", "reject")]
    assert MAJORITY.decide(cands, verdicts).kind == "escalated"


def test_abstain_blocks_unanimous():
    cands = [passing("a"), passing("b")]
    verdicts = [v("b", "a", "abstain", error="reviewer printed garbage"), v("a", "b", "abstain")]
    d = UNANIMOUS.decide(cands, verdicts)
    assert d.kind == "escalated"
    assert "b could not review a: reviewer printed garbage" in d.disagreements
    assert "a could not review b: abstained" in d.disagreements


def test_abstain_among_approvals_still_blocks_unanimous():
    cands = [passing("a"), failing("b"), failing("c")]
    verdicts = [v("b", "a"), v("c", "a", "abstain"), v("a", "b", "reject"), v("c", "b", "reject"),
                v("a", "c", "reject"), v("b", "c", "reject")]
    assert UNANIMOUS.decide(cands, verdicts).kind == "escalated"


@BOTH
def test_candidates_nobody_reviewed_are_judged_by_their_tests(policy):
    d = policy.decide([failing("a", size=1), passing("b", size=9)], [])
    assert (d.kind, d.winner) == ("accepted", "b")


# --- errors and single agents -----------------------------------------------------


@BOTH
def test_error_candidate_is_never_accepted(policy):
    broken = Candidate(agent="a", spec="x", status="error", error="exited 3", tests=report(passed=3))
    d = policy.decide([broken], [])
    assert d.kind != "accepted" and d.winner is None
    d = policy.decide([broken, failing("b")], [v("b", "a", "approve"), v("a", "b", "reject")])
    assert d.kind == "escalated" and d.winner is None
    assert any("a failed to produce a candidate (error: exited 3)" in line for line in d.disagreements)


@BOTH
def test_timed_out_candidate_loses_to_a_passing_one(policy):
    slow = Candidate(agent="a", spec="x", status="timeout", error="killed", tests=None)
    d = policy.decide([slow, passing("b")], [v("b", "a", "reject"), v("a", "b", "approve")])
    assert (d.kind, d.winner) == ("accepted", "b")


@BOTH
def test_untested_candidate_is_not_accepted(policy):
    d = policy.decide([Candidate(agent="a", spec="x", tests=None)], [])
    assert d.kind == "rejected"
    assert "a was not tested" in d.reason


@BOTH
def test_single_agent_without_reviews_accepted_iff_tests_pass(policy):
    d = policy.decide([passing("solo")], [])
    assert (d.kind, d.winner) == ("accepted", "solo")
    assert "no peer reviewed it" in d.reason
    d = policy.decide([failing("solo")], [])
    assert (d.kind, d.winner) == ("rejected", None)


# --- TestReport.all_passed ------------------------------------------------------


def test_all_passed_true_case():
    assert report(passed=2).all_passed
    assert TestReport(outcomes=[TestOutcome(name="a", outcome="passed"),
                                TestOutcome(name="b", outcome="skipped")], exit_code=0).all_passed


def test_all_passed_no_tests():
    assert not TestReport(outcomes=[], exit_code=0).all_passed
    assert not TestReport(outcomes=[], exit_code=5).all_passed


def test_all_passed_only_skipped():
    assert not TestReport(outcomes=[TestOutcome(name="a", outcome="skipped")], exit_code=0).all_passed


def test_all_passed_timed_out():
    assert not report(passed=3, timed_out=True, exit_code=None).all_passed


def test_all_passed_nonzero_exit_with_all_passed_outcomes():
    # e.g. pytest's own teardown or a plugin failed after every test passed
    rep = report(passed=3, exit_code=1)
    assert rep.passed == rep.total == 3
    assert not rep.all_passed


def test_all_passed_any_failure_or_error():
    assert not report(passed=3, failed=1, exit_code=0).all_passed
    rep = TestReport(outcomes=[TestOutcome(name="a", outcome="passed"), TestOutcome(name="b", outcome="error")],
                     exit_code=0)
    assert not rep.all_passed


def test_summary_dict_shape():
    s = report(passed=2, failed=1).summary_dict()
    assert s["passed"] == 2 and s["total"] == 3 and s["all_passed"] is False and s["timed_out"] is False
    assert [o["outcome"] for o in s["outcomes"]] == ["passed", "passed", "failed"]


@BOTH
def test_a_test_run_caught_faking_is_named_in_the_disagreement(policy):
    faked = Candidate(agent="pr", spec="x", tests=report(passed=2, tampering=["the canary test passed"]))
    d = policy.decide([faked], [v("tester", "pr", "approve")])
    assert d.kind == "escalated"
    assert any("tester approves pr, but pr passes 2/2 tests, as reported by a test run caught faking its results" in x
               for x in d.disagreements), d.disagreements


def test_a_majority_accept_says_how_many_reviewers_approve_not_all_of_them():
    # "its 3 reviewers approve" was said of a candidate one of whose three reviewers abstained (a budget
    # cap stopped it) or rejected: the reason misstated the very split the majority policy tolerates.
    for dissent in (v("c", "a", "abstain", error="not started: budget exhausted"), v("c", "a", "reject")):
        d = MAJORITY.decide([passing("a")], [v("b", "a"), v("x", "a"), dissent])
        assert (d.kind, d.winner) == ("accepted", "a")
        assert "a passes 3/3 tests and 2 of its 3 reviewers approve" in d.reason, d.reason
    d = MAJORITY.decide([passing("a")], [v("b", "a"), v("x", "a")])
    assert d.reason.endswith("and its 2 reviewers approve"), d.reason
