"""crossreview.calibrate: the Clopper-Pearson bound and the fixed-sequence scan, against values
computed independently (closed forms, and a table of published exact intervals), and the policy
file round trip. Pure: no ledger, no git."""

from __future__ import annotations

import math
from datetime import datetime, timezone

import pytest

from crossreview.calibrate import (
    GRID,
    Calibration,
    Sample,
    Window,
    at_or_above,
    binom_cdf,
    build,
    clopper_pearson_upper,
    drift,
    min_labeled,
    scan,
    zero_error_upper,
)

# Upper ends of exact two-sided 95% Clopper-Pearson intervals (= one-sided 97.5% upper bounds),
# copied by hand from standard tables of exact binomial confidence limits, 4 decimals
# (the 0/n rows also follow from the closed form below).
PUBLISHED_UPPER_975 = [
    (0, 10, 0.3085),
    (1, 10, 0.4450),
    (5, 10, 0.8129),
    (2, 20, 0.3170),
    (0, 20, 0.1684),
]


@pytest.mark.parametrize("k,n,upper", PUBLISHED_UPPER_975)
def test_bound_matches_published_exact_intervals(k, n, upper):
    assert clopper_pearson_upper(k, n, 0.975) == pytest.approx(upper, abs=1e-4)


@pytest.mark.parametrize("n", [1, 2, 5, 22, 45, 113, 114, 500, 5000])
@pytest.mark.parametrize("c", [0.8, 0.9, 0.95, 0.99])
def test_no_errors_bound_is_the_closed_form(n, c):
    # P(X <= 0) = (1-p)^n = 1-c  =>  p = 1 - (1-c)^(1/n): derived by hand, not by the bisection.
    assert clopper_pearson_upper(0, n, c) == pytest.approx(1 - (1 - c) ** (1 / n), rel=1e-9)
    assert zero_error_upper(n, c) == pytest.approx(1 - (1 - c) ** (1 / n), rel=1e-12)


@pytest.mark.parametrize("n", [1, 3, 10, 60])
def test_all_but_one_wrong_is_the_other_closed_form(n):
    # k = n-1: P(X <= n-1) = 1 - p^n = 1-c  =>  p = c^(1/n).
    assert clopper_pearson_upper(n - 1, n, 0.9) == pytest.approx(0.9 ** (1 / n), rel=1e-9)


def test_bound_edges_and_errors():
    assert clopper_pearson_upper(0, 0, 0.9) == 1.0  # no history: nothing is known
    assert clopper_pearson_upper(7, 7, 0.9) == 1.0
    for bad in [(1, 0, 0.9), (-1, 5, 0.9), (6, 5, 0.9), (0, 5, 1.0), (0, 5, 0.0)]:
        with pytest.raises(ValueError):
            clopper_pearson_upper(*bad)


def test_bound_solves_the_binomial_cdf_exactly():
    # Independent of the bisection: the CDF summed with exact integer binomial coefficients.
    for k, n, c in [(3, 50, 0.9), (1, 114, 0.9), (10, 200, 0.95)]:
        p = clopper_pearson_upper(k, n, c)
        cdf = sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k + 1))
        assert cdf == pytest.approx(1 - c, abs=1e-9)
        assert binom_cdf(k, n, p) == pytest.approx(cdf, abs=1e-12)


def test_114_labeled_tasks_certify_two_percent_at_ninety():
    assert min_labeled(0.02, 0.9) == 114
    assert zero_error_upper(114, 0.9) <= 0.02 < zero_error_upper(113, 0.9)
    assert min_labeled(0.1, 0.9) == 22  # ln(0.1)/ln(0.9) = 21.85
    assert min_labeled(0.05, 0.95) == 59  # ln(0.05)/ln(0.95) = 58.4


def test_grid_is_fixed_strictest_first():
    assert GRID[0] == 1.0 and GRID[-1] == 0.5 and len(GRID) == 51
    assert list(GRID) == sorted(GRID, reverse=True)
    assert 0.81 in GRID and 0.95 in GRID


def test_at_or_above_tolerates_float_products():
    assert at_or_above((1 + 0.62) / 2, 0.81)
    assert at_or_above(0.95, 0.95)
    assert not at_or_above(0.8099, 0.81)
    assert not at_or_above(None, 0.5) and not at_or_above(0.9, None)


# --- the scan ---------------------------------------------------------------------------


def samples(score: float, n: int, wrong: int = 0) -> list[Sample]:
    return [Sample(score, i < wrong) for i in range(n)]


def test_scan_no_errors_enough_history_certifies_the_loosest_threshold_with_data():
    # 120 task runs at 0.95, none wrong; nothing else: every threshold down to 0.50 accepts
    # the same 120, and they pass (bound 1-0.1^(1/120) = 1.90% <= 2%).
    res = scan(samples(0.95, 120), 0.02, 0.9)
    assert res.threshold == 0.5
    assert (res.accepted, res.errors) == (120, 0)
    assert res.bound == pytest.approx(1 - 0.1 ** (1 / 120))
    assert res.needed_more == 0
    assert [s.outcome for s in res.steps[:5]] == ["passed over"] * 5  # 1.00 .. 0.96 accept nothing


def test_scan_too_little_history_certifies_nothing_and_says_how_many_more():
    res = scan(samples(0.95, 100), 0.02, 0.9)
    assert res.threshold is None and res.bound is None
    assert res.min_labeled == 114
    assert res.needed_more == 14
    assert all(s.outcome == "passed over" for s in res.steps)
    # No history at all
    empty = scan([], 0.02, 0.9)
    assert empty.threshold is None and empty.needed_more == 114 and empty.labeled == 0
    # History below the grid's loosest threshold does not count towards what is needed
    low = scan(samples(0.3, 500), 0.02, 0.9)
    assert low.threshold is None and low.needed_more == 114


def test_needed_more_counts_the_errors_already_in_the_history():
    # 50 right at 0.95, 20 at 0.55 of which 2 wrong: every threshold is passed over (70 < 114).
    # 114 − 70 = 44 more right ones would make 0.55 accept 114 with 2 wrong (bound 4.6% > 2%):
    # nothing passes. The fewest that can certify: 64 more, all right and scoring at the top,
    # make 0.95 .. 0.56 accept 114 with none wrong (bound 1.998%).
    data = samples(0.95, 50) + samples(0.55, 20, wrong=2)
    res = scan(data, 0.02, 0.9)
    assert res.threshold is None and all(s.outcome == "passed over" for s in res.steps)
    assert clopper_pearson_upper(2, 114, 0.9) > 0.02
    assert res.needed_more == 64
    assert scan(data + samples(1.0, 64), 0.02, 0.9).threshold == 0.56  # the loosest with those 114 alone
    assert scan(data + samples(1.0, 63), 0.02, 0.9).threshold is None


def test_scan_stops_at_the_first_failure_even_if_a_looser_threshold_would_pass():
    # 40 right at 0.85, then 20 at 0.80 of which 10 wrong, then 400 right at 0.60.
    # Target 10% at 90% (min 22 labeled). 0.85 .. 0.81: n=40, k=0, bound 5.6%: pass.
    # 0.80: n=60, k=10: bound > 10%: fail, stop. 0.60 would pass again (n=460, k=10) but is
    # never tried: fixed-sequence testing.
    data = samples(0.85, 40) + samples(0.80, 20, wrong=10) + samples(0.60, 400)
    res = scan(data, 0.1, 0.9)
    assert res.threshold == 0.81
    assert (res.accepted, res.errors) == (40, 0)
    assert res.bound == pytest.approx(1 - 0.1 ** (1 / 40))
    by = {s.threshold: s for s in res.steps}
    assert by[0.86].outcome == "passed over" and by[0.86].accepted == 0
    assert by[0.85].outcome == "passed" and by[0.81].outcome == "passed"
    assert by[0.8].outcome == "failed" and (by[0.8].accepted, by[0.8].errors) == (60, 10)
    assert by[0.8].bound > 0.1
    assert by[0.6].outcome == "not tried"
    assert clopper_pearson_upper(10, 460, 0.9) < 0.1  # ... which is why stopping matters


def test_scan_with_errors_uses_the_exact_bound():
    # 300 at 0.9 with 2 wrong: bound at 90% computed by the bisection, checked by the CDF.
    res = scan(samples(0.9, 300, wrong=2), 0.02, 0.9)
    b = clopper_pearson_upper(2, 300, 0.9)
    assert res.threshold == 0.5 and res.errors == 2 and res.bound == pytest.approx(b)
    assert sum(math.comb(300, i) * b**i * (1 - b) ** (300 - i) for i in range(3)) == pytest.approx(0.1, abs=1e-9)
    # Enough history, too many errors: nothing certified, and nothing "more" would fix it alone.
    bad = scan(samples(0.9, 200, wrong=20), 0.02, 0.9)
    assert bad.threshold is None and bad.needed_more == 0
    assert [s.outcome for s in bad.steps if s.outcome != "passed over"][0] == "failed"


# --- the policy file ------------------------------------------------------------------------


def test_policy_file_round_trips_and_says_what_it_guarantees():
    res = scan(samples(0.95, 120), 0.02, 0.9)
    when = datetime(2026, 3, 1, 12, tzinfo=timezone.utc)
    window = Window(ledger="/x/ledger.db", first=when, last=when, task_runs=150, share_at_or_above=0.8, mean_score=0.9)
    cal = build(res, 0.02, 0.9, window, when)
    again = Calibration.model_validate_json(cal.model_dump_json())
    assert again == cal
    assert again.threshold == 0.5 and again.certificate.n == 120 and again.certificate.window.task_runs == 150
    assert "threshold 0.50" in cal.summary() and "≤2.0%" in cal.summary() and "n=120" in cal.summary()
    none = build(scan([], 0.02, 0.9), 0.02, 0.9, window, when)
    assert none.threshold is None and "114 more" in none.summary()


def test_drift_warns_when_recent_scores_move_away():
    when = datetime(2026, 3, 1, tzinfo=timezone.utc)
    cal = build(scan(samples(0.95, 120), 0.02, 0.9), 0.02, 0.9,
                Window(ledger="l", last=when, task_runs=200, share_at_or_above=0.9, mean_score=0.9), when)
    same = drift(cal, [0.95] * 27 + [0.2] * 3, [])
    assert same.warning is None and same.share_at_or_above == pytest.approx(0.9)
    moved = drift(cal, [0.95] * 10 + [0.2] * 20, [])
    assert moved.warning and "crossreview calibrate" in moved.warning and moved.z < -3
    few = drift(cal, [0.2] * 5, [])
    assert few.warning is None  # too few recent task runs to say
    failing = drift(cal, [0.95] * 30, samples(0.95, 30, wrong=6))
    assert failing.warning and "fail holdout" in failing.warning


# --- the calibrated policy (pure: hand-built candidates and verdicts) ---------------------------

from crossreview.models import Candidate, TestOutcome, TestReport, Verdict  # noqa: E402
from crossreview.policy import CALIBRATED, CASCADE  # noqa: E402


def _cand(agent: str, passing: bool = True, **kw) -> Candidate:
    outcomes = [TestOutcome(name="t::x", outcome="passed" if passing else "failed")]
    return Candidate(agent=agent, spec="x", tests=TestReport(outcomes=outcomes, exit_code=0 if passing else 1), **kw)


def _bound(threshold):
    when = datetime(2026, 3, 1, tzinfo=timezone.utc)
    cal = build(scan(samples(0.95, 120), 0.02, 0.9), 0.02, 0.9, Window(ledger="l"), when)
    return CALIBRATED.with_calibration(cal.model_copy(update={"threshold": threshold}))


def test_calibrated_policy_accepts_the_scores_pick_at_or_above_the_threshold():
    pol = _bound(0.85)
    cands = [_cand("a"), _cand("b")]
    # a: approved at 0.7 -> 0.85 (at the threshold); b: approved at 0.6 -> 0.80
    verdicts = [Verdict(reviewer="b", candidate="a", verdict="approve", confidence=0.7),
                Verdict(reviewer="a", candidate="b", verdict="approve", confidence=0.6)]
    d = pol.decide(cands, verdicts)
    assert (d.kind, d.winner, d.policy) == ("accepted", "a", "calibrated")
    assert "0.850" in d.reason and "0.85" in d.reason
    verdicts[0] = Verdict(reviewer="b", candidate="a", verdict="approve", confidence=0.68)  # 0.84
    d = pol.decide(cands, verdicts)
    assert (d.kind, d.winner) == ("escalated", None) and "below the calibrated threshold 0.85" in d.reason


def test_calibrated_policy_never_accepts_tampering_and_still_rejects_the_clear_cases():
    pol = _bound(0.5)
    faker = _cand("a", tampering=["adds conftest.py"])
    d = pol.decide([faker, _cand("b", passing=False)],
                   [Verdict(reviewer="b", candidate="a", verdict="approve", confidence=1.0),
                    Verdict(reviewer="a", candidate="b", verdict="reject", confidence=1.0)])
    assert d.kind == "escalated" and "may fake its test results" in d.reason
    d = pol.decide([_cand("a", passing=False), _cand("b", passing=False)],
                   [Verdict(reviewer="b", candidate="a", verdict="reject", confidence=0.9),
                    Verdict(reviewer="a", candidate="b", verdict="reject", confidence=0.9)])
    assert d.kind == "rejected"


def test_without_a_certified_threshold_nothing_is_accepted():
    pol = _bound(None)
    d = pol.decide([_cand("a")], [])
    assert d.kind == "escalated" and "no auto-accept threshold is certified" in d.reason
    with pytest.raises(RuntimeError, match="no calibration bound"):
        CALIBRATED.decide([_cand("a")], [])
    assert CASCADE.initial_agents == 2 and CASCADE.needs_calibration


def test_an_escalation_for_a_flag_and_a_score_names_both_and_a_split_only_when_there_is_one():
    from crossreview.packet import escalation_headline, reasons_heading
    from crossreview.policy import explain_flagged

    pol = _bound(0.85)
    faker, clean = _cand("a", tampering=["adds conftest.py"]), _cand("b")

    def headline(verdicts):
        d = explain_flagged(pol, [faker, clean], verdicts, pol.decide([faker, clean], verdicts))
        return d, escalation_headline(d.tampering_alone, ["a"], d.cause), reasons_heading(d.tampering_alone, d.cause)

    # Everyone approves (b at 0.6 -> 0.80, below 0.85): the flag and the score, no disagreement.
    approve = [Verdict(reviewer="b", candidate="a", verdict="approve", confidence=0.6),
               Verdict(reviewer="a", candidate="b", verdict="approve", confidence=0.6),
               Verdict(reviewer="c", candidate="a", verdict="approve", confidence=0.6)]
    d, line, heading = headline(approve)
    assert line == ("agreement score below the calibrated threshold, and a may fake its test results: "
                    "a human decides"), line
    # The reason (show's panel, the inbox) names the score, with its numbers, before the flag.
    assert d.reason.startswith("agreement score 0.800 (best: b) is below the calibrated threshold 0.85; "
                               "a may fake its test results: adds conftest.py"), d.reason
    assert heading == "Why a human must look" and "b: score 0.800, b passes 1/1 tests" in d.disagreements
    # c rejects a where b approves it: now they do disagree, and the score is still a cause.
    split = approve[:2] + [Verdict(reviewer="c", candidate="a", verdict="reject", confidence=0.6)]
    d, line, _ = headline(split)
    assert line.startswith("the reviewers disagree; agreement score below the calibrated threshold, and a may"), line
    assert d.reason.startswith("the reviewers disagree; agreement score 0.800 (best: b) is below the calibrated "
                               "threshold 0.85; a may fake"), d.reason
    # b alone would be accepted (approved at 0.9 -> 0.95; a scores 1.0 but is flagged): b is accepted beside
    # the flag, as under unanimous and majority, and the flag is listed.
    sure = [Verdict(reviewer=r, candidate="a", verdict="approve", confidence=1.0) for r in "bc"]
    alone = [*sure, Verdict(reviewer="a", candidate="b", verdict="approve", confidence=0.9)]
    d, _, _ = headline(alone)
    assert (d.kind, d.winner, d.tampering_alone) == ("accepted", "b", []), d
    assert any(x.startswith("a may fake its test results") for x in d.disagreements), d.disagreements
    # Every candidate flagged: the flag alone sends it to a human, whatever the scores.
    d = explain_flagged(pol, [faker], sure, pol.decide([faker], sure))
    assert d.kind == "escalated" and d.tampering_alone == ["a"] and d.cause == ""
    assert d.reason.startswith("a may fake its test results"), d.reason  # the flag alone: nothing in front
    assert escalation_headline(d.tampering_alone, ["a"], d.cause) == "a may fake its test results: a human must look"


FLAG = ["conftest.py: adds or changes a conftest.py, which pytest runs before the tests"]


@pytest.mark.parametrize("policy", [CALIBRATED, CASCADE], ids=["calibrated", "cascade"])
@pytest.mark.parametrize("order", ["flagged first", "flagged last"])
def test_a_flagged_top_score_neither_wins_nor_blocks_a_clean_candidate_at_the_threshold(policy, order):
    """a may fake its tests and scores 1.0 (approved at 1.0); b, clean, scores 0.85 (approved at 0.7), at
    the threshold: b is accepted, as unanimous and majority accept a clean candidate beside a flagged
    one. The score in the reason is b's own, not the flagged one's."""
    from crossreview.policy import MAJORITY, UNANIMOUS

    when = datetime(2026, 3, 1, tzinfo=timezone.utc)
    cal = build(scan(samples(0.95, 120), 0.02, 0.9), 0.02, 0.9, Window(ledger="l"), when)
    pol = policy.with_calibration(cal.model_copy(update={"threshold": 0.85}))
    faker, clean = _cand("a", tampering=FLAG), _cand("b")
    cands = [faker, clean] if order == "flagged first" else [clean, faker]
    verdicts = [Verdict(reviewer="b", candidate="a", verdict="approve", confidence=1.0),
                Verdict(reviewer="a", candidate="b", verdict="approve", confidence=0.7)]
    d = pol.decide(cands, verdicts)
    assert (d.kind, d.winner, d.policy) == ("accepted", "b", policy.name), d
    assert "agreement score 0.850 of b" in d.reason, d.reason
    assert any(x.startswith("a may fake its test results") for x in d.disagreements), d.disagreements
    for other in (UNANIMOUS, MAJORITY):  # the behaviour matched
        assert (other.decide(cands, verdicts).kind, other.decide(cands, verdicts).winner) == ("accepted", "b")
    # The clean candidate just below the threshold (0.84): the flag and the score escalate, with the clean
    # candidate's score as the best, never the flagged one's.
    low = [verdicts[0], Verdict(reviewer="a", candidate="b", verdict="approve", confidence=0.68)]
    d = pol.decide(cands, low)
    assert (d.kind, d.winner) == ("escalated", None) and "a may fake its test results" in d.reason, d
    again = pol.decide([clean], [low[1]])
    assert again.cause == "agreement score below the calibrated threshold" and "(best: b)" in again.reason


def test_a_flagged_candidate_never_holds_the_task_runs_score():
    """score.agreement with ``exclude``: the flagged agent keeps its own score but not the run's."""
    from crossreview.ledger.score import from_models

    verdicts = [Verdict(reviewer="b", candidate="a", verdict="approve", confidence=1.0),
                Verdict(reviewer="a", candidate="b", verdict="approve", confidence=0.7)]
    cands = [_cand("a", tampering=FLAG), _cand("b")]
    every = from_models(cands, verdicts)
    assert (every.pick, every.task_run) == ("a", 1.0)
    clean = from_models(cands, verdicts, exclude=["a"])
    assert clean.pick == "b" and clean.task_run == pytest.approx(0.85)
    assert clean.candidates[(0, "a")] == 1.0
    assert from_models(cands, verdicts, exclude=["a", "b"]).pick is None
