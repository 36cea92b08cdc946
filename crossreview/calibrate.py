"""Risk-controlled auto-accept: the threshold on the agreement score, and its certificate.

Pure functions and pydantic models, no I/O (the ledger side is
crossreview/ledger/calibration.py; the command is `crossreview calibrate`).

The question answered: above which agreement score (crossreview/ledger/score.py)
can task runs be accepted with no human, so that — with probability at least
``confidence`` — at most ``max_escaped`` of the accepted ones are wrong?
"Wrong" for an accepted task run is an *escaped defect*: the candidate the
score picks fails the task's holdout tests.

Method (Learn-then-Test, Angelopoulos et al., arXiv 2110.01052; as used by
"Trust or Escalate", Jung et al., ICLR 2025, arXiv 2407.18370):

1. A grid of thresholds fixed in advance, strictest first: 1.00, 0.99, … 0.50.
2. At each threshold λ, the labeled task runs scoring ≥ λ are the ones the
   policy would have accepted: n of them, k wrong. The exact binomial
   (Clopper-Pearson) upper confidence bound on their error rate is computed.
3. Fixed-sequence testing: walk the grid from the strictest down; a threshold
   *passes* when its bound is ≤ max_escaped; the scan stops at the first
   threshold whose bound exceeds it. The certified threshold is the last one
   that passed (the loosest); with none, nothing is auto-accepted.

One refinement, and why it keeps the guarantee: a threshold that accepts fewer
labeled task runs than the zero-error minimum (``min_labeled``: 114 for 2% at
90%) cannot pass whatever the labels say, so it is *passed over* instead of
ending the scan (otherwise a grid starting at 1.00, where hardly any task run
scores, would always stop at once). Whether a threshold is passed over depends
only on the scores, never on which task runs were wrong, so — conditionally
on the scores — the sequence of tests is still fixed before any label is
looked at, which is all fixed-sequence testing needs. A threshold with enough
task runs whose bound exceeds the target ends the scan, as the method says.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Iterable, Literal

from pydantic import BaseModel, Field, model_validator

GRID: tuple[float, ...] = tuple(round(1.0 - i / 100.0, 2) for i in range(51))
"""The thresholds tried, strictest first: 1.00, 0.99, … 0.50. Fixed in advance (never fitted to the data)."""

EPS = 1e-9
"""Scores are products of floats: 0.95 computed is 0.95 ± 1e-16. A score within EPS of the threshold is at it."""


def at_or_above(score: float | None, threshold: float | None) -> bool:
    """True when ``score`` reaches ``threshold`` (the one comparison the scan and the policy share)."""
    return score is not None and threshold is not None and score >= threshold - EPS


# --- the exact binomial bound -----------------------------------------------------


def binom_cdf(k: int, n: int, p: float) -> float:
    """P(X ≤ k) for X ~ Binomial(n, p), summed exactly term by term (in logs, so large n is fine)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    lp, lq = math.log(p), math.log1p(-p)
    lgn = math.lgamma(n + 1)
    terms = [lgn - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp + (n - i) * lq for i in range(k + 1)]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


def clopper_pearson_upper(errors: int, n: int, confidence: float) -> float:
    """The exact one-sided upper confidence bound on a binomial rate: the p with P(X ≤ errors; n, p) = 1 − confidence.

    With n = 0 nothing is known: 1.0. With errors = n: 1.0. Found by bisection
    on the binomial CDF, which falls as p rises (80 halvings: far below float
    precision of a rate).
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), not {confidence}")
    if n < 0 or errors < 0 or errors > n:
        raise ValueError(f"need 0 ≤ errors ≤ n, got errors={errors}, n={n}")
    if n == 0 or errors == n:
        return 1.0
    alpha = 1.0 - confidence
    lo, hi = errors / n, 1.0
    for _ in range(80):
        mid = (lo + hi) / 2.0
        if binom_cdf(errors, n, mid) > alpha:
            lo = mid
        else:
            hi = mid
    return hi


def zero_error_upper(n: int, confidence: float) -> float:
    """The bound when no error was seen, in closed form: 1 − (1 − confidence)^(1/n)."""
    if n <= 0:
        return 1.0
    return 1.0 - (1.0 - confidence) ** (1.0 / n)


def min_labeled(max_escaped: float, confidence: float) -> int:
    """The fewest labeled accepted task runs that can certify ``max_escaped`` (all of them right).

    From the zero-error bound: 1 − (1 − c)^(1/n) ≤ t  ⇔  n ≥ ln(1 − c) / ln(1 − t).
    2% at 90%: 114.
    """
    if not 0.0 < max_escaped < 1.0:
        raise ValueError(f"max_escaped must be in (0, 1), not {max_escaped}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), not {confidence}")
    n = math.ceil(math.log(1.0 - confidence) / math.log(1.0 - max_escaped) - 1e-9)
    # Guard the float edge: the closed form decides.
    while zero_error_upper(n, confidence) > max_escaped:
        n += 1
    while n > 1 and zero_error_upper(n - 1, confidence) <= max_escaped:
        n -= 1
    return n


# --- the scan -------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One labeled task run: its agreement score, and whether the candidate the score picks fails holdout."""

    score: float
    wrong: bool
    task_run: str | None = None


class Step(BaseModel):
    """One threshold of the scan."""

    threshold: float
    accepted: int
    """Labeled task runs scoring at or above the threshold."""
    errors: int
    bound: float
    """Clopper-Pearson upper bound on the error rate of those accepted."""
    outcome: Literal["passed", "failed", "passed over", "not tried"]


class Scan(BaseModel):
    """What the fixed-sequence scan found."""

    threshold: float | None
    """The certified threshold (the loosest that passed); None: nothing may be auto-accepted."""
    accepted: int
    errors: int
    bound: float | None
    labeled: int
    min_labeled: int
    needed_more: int
    """The fewest more labeled task runs (none wrong, scoring at the top) after which a threshold can pass; 0 when
    one passed, or when a threshold with enough task runs failed (too many errors: more alone may not fix it)."""
    steps: list[Step]


def scan(samples: Iterable[Sample], max_escaped: float, confidence: float,
         grid: tuple[float, ...] = GRID) -> Scan:
    """Fixed-sequence scan of ``grid`` (strictest first) for the loosest certified threshold.

    See the module docstring for the method and the passed-over rule.
    """
    if list(grid) != sorted(grid, reverse=True):
        raise ValueError("the grid must go from the strictest threshold down")
    data = list(samples)
    need = min_labeled(max_escaped, confidence)
    steps: list[Step] = []
    best: Step | None = None
    stopped = False
    for th in grid:
        acc = [s for s in data if at_or_above(s.score, th)]
        n, k = len(acc), sum(1 for s in acc if s.wrong)
        bound = clopper_pearson_upper(k, n, confidence)
        if stopped:
            outcome = "not tried"
        elif n < need:
            outcome = "passed over"
        elif bound <= max_escaped:
            outcome = "passed"
        else:
            outcome = "failed"
            stopped = True
        step = Step(threshold=th, accepted=n, errors=k, bound=bound, outcome=outcome)
        steps.append(step)
        if outcome == "passed":
            best = step
    return Scan(
        threshold=best.threshold if best else None,
        accepted=best.accepted if best else 0,
        errors=best.errors if best else 0,
        bound=best.bound if best else None,
        labeled=len(data),
        min_labeled=need,
        needed_more=0 if best or stopped else _needed_more(steps, need, max_escaped, confidence),
        steps=steps,
    )


def _needed_more(steps: list[Step], need: int, max_escaped: float, confidence: float) -> int:
    """The fewest more labeled task runs, none wrong, after which a threshold can pass (every step was passed over).

    It is not ``need`` minus the task runs at the loosest threshold: errors already among them
    stay there, so that many more can still certify nothing (76 at ≥ 0.50 with 2 wrong, plus 38
    right, is 114 with 2 wrong: bound 4.6% > 2%). Counted at their best for the scan — new task
    runs scoring at the top raise every threshold's n and none's errors — the first threshold
    that would then have enough task runs must pass; the smallest such count is returned.
    """
    if not steps:
        return need
    m = max(0, need - max(s.accepted for s in steps))
    while True:
        first = next(s for s in steps if s.accepted + m >= need)  # the strictest one has n + m ≥ need once m ≥ need
        if clopper_pearson_upper(first.errors, first.accepted + m, confidence) <= max_escaped:
            return m
        m += 1


# --- the policy file ----------------------------------------------------------------


class Window(BaseModel):
    """The ledger range the calibration was computed on, and its score distribution (for drift)."""

    ledger: str
    since: datetime | None = None
    """The --since filter, if any."""
    suite: str | None = None
    first: datetime | None = None
    """Start of the oldest scored task run read."""
    last: datetime | None = None
    """Start of the newest scored task run read: task runs after it are 'recent' for drift."""
    task_runs: int = 0
    """Scored task runs in the window (labeled or not)."""
    share_at_or_above: float | None = None
    """Share of the window's scored task runs at or above the threshold (the auto-accept rate it expects)."""
    mean_score: float | None = None


class Certificate(BaseModel):
    """What the threshold guarantees, and the evidence for it."""

    max_escaped: float
    confidence: float
    n: int
    """Labeled task runs at or above the threshold."""
    errors: int
    """Of those, how many picks fail holdout."""
    bound: float | None
    """Clopper-Pearson upper bound on their error rate (≤ max_escaped when a threshold is certified)."""
    labeled: int
    """Labeled task runs in the window."""
    min_labeled: int
    needed_more: int
    waiting: int = 0
    """Task runs in the window waiting for a human without holdout results in the ledger (older ledgers
    wrote parked runs only when decided): not labeled, so the history leans towards automatic decisions."""
    method: str = "Clopper-Pearson upper bound, fixed-sequence over the grid 1.00 → 0.50 (crossreview/calibrate.py)"
    computed: datetime
    window: Window


class Calibration(BaseModel):
    """The file `crossreview calibrate` writes and the `calibrated` and `cascade` policies read."""

    format: Literal["crossreview-calibration"] = "crossreview-calibration"
    version: Literal[1] = 1
    threshold: float | None
    """Auto-accept task runs whose agreement score is at or above this; None: auto-accept nothing."""
    certificate: Certificate
    steps: list[Step] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> "Calibration":
        """A file whose threshold or certificate was edited by hand must not claim a guarantee it does not have.

        A threshold of one's own is allowed only as what it is: ``certificate.bound`` null
        ("set by hand, not certified"). Otherwise the threshold, the certificate and the scan's
        steps must say what `crossreview calibrate` wrote: the bound recomputed from n, errors and
        the confidence, the loosest passed step, and min_labeled from the target.
        """
        c = self.certificate
        hand = "; to use a threshold of your own, set certificate.bound to null (it is then not certified)"
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold {self.threshold} is not an agreement score between 0 and 1{hand}")
        for name, value in (("max_escaped", c.max_escaped), ("confidence", c.confidence)):
            if not 0.0 < value < 1.0:
                raise ValueError(f"certificate.{name} {value} is not a rate strictly between 0 and 1")
        if c.bound is None:
            return self
        if self.threshold is None:
            raise ValueError(f"certificate.bound is {c.bound} but threshold is null: a certificate needs its threshold")
        if not 0 <= c.errors <= c.n:
            raise ValueError(f"certificate.errors {c.errors} is not between 0 and certificate.n {c.n}")
        if c.min_labeled != min_labeled(c.max_escaped, c.confidence):
            raise ValueError(f"certificate.min_labeled {c.min_labeled} is not the {min_labeled(c.max_escaped, c.confidence)} "
                             f"that ≤{c.max_escaped:.1%} at {c.confidence:.0%} needs: max_escaped, confidence or "
                             f"min_labeled was edited{hand}")
        bound = clopper_pearson_upper(c.errors, c.n, c.confidence)
        if abs(bound - c.bound) > 1e-9 + 1e-6 * bound:
            raise ValueError(f"certificate.bound {c.bound} is not the Clopper-Pearson bound of {c.errors} errors in "
                             f"{c.n} at {c.confidence:.0%} confidence ({bound}): the certificate was edited{hand}")
        if bound > c.max_escaped:
            raise ValueError(f"certificate.bound {bound:.4%} is above certificate.max_escaped {c.max_escaped:.4%}: "
                             f"the threshold is not certified{hand}")
        if self.steps and [round(st.threshold, 2) for st in self.steps] != list(GRID):
            raise ValueError(f"steps do not follow the fixed grid {GRID[0]:.2f} → {GRID[-1]:.2f} in steps of 0.01: "
                             f"the file was edited{hand}")
        passed = [st for st in self.steps if st.outcome == "passed"]
        if passed:
            last = passed[-1]
            if abs(last.threshold - self.threshold) > EPS or (last.accepted, last.errors) != (c.n, c.errors):
                raise ValueError(f"threshold {self.threshold} (n={c.n}, {c.errors} errors) is not what the scan in "
                                 f"steps certified ({last.threshold:.2f}, n={last.accepted}, {last.errors} errors): "
                                 f"the file was edited{hand}")
        elif self.steps:
            raise ValueError(f"threshold {self.threshold} is certified in certificate.bound, but no step passed in "
                             f"steps: the file was edited{hand}")
        return self

    def summary(self) -> str:
        """One line: the threshold and what it guarantees."""
        c = self.certificate
        if self.threshold is None:
            return (f"no threshold certified (≤{c.max_escaped:.1%} escaped at {c.confidence:.0%} confidence needs "
                    f"{c.min_labeled} labeled task runs without error; {c.needed_more} more): nothing is auto-accepted")
        if c.bound is None:  # a threshold set by hand: no evidence behind it
            return f"threshold {self.threshold:.2f}: set by hand, not certified"
        return (f"threshold {self.threshold:.2f}: ≤{c.max_escaped:.1%} escaped defects at {c.confidence:.0%} "
                f"confidence (n={c.n}, {c.errors} errors, bound {c.bound:.2%})")


def build(scan_result: Scan, max_escaped: float, confidence: float, window: Window, computed: datetime) -> Calibration:
    """The policy file's content from a scan."""
    cert = Certificate(
        max_escaped=max_escaped, confidence=confidence, n=scan_result.accepted, errors=scan_result.errors,
        bound=scan_result.bound, labeled=scan_result.labeled, min_labeled=scan_result.min_labeled,
        needed_more=scan_result.needed_more, computed=computed, window=window,
    )
    return Calibration(threshold=scan_result.threshold, certificate=cert, steps=scan_result.steps)


# --- drift ----------------------------------------------------------------------------


class Drift(BaseModel):
    """Recent task runs against the calibration window."""

    recent: int
    """Scored task runs started after the window's last one."""
    share_at_or_above: float | None = None
    mean_score: float | None = None
    z: float | None = None
    """Two-proportion z statistic of the at-or-above share, recent vs window."""
    recent_labeled_accepted: int = 0
    recent_errors: int = 0
    other_ledger: str | None = None
    """The ledger the policy file was computed on, when it is not the one read."""
    warning: str | None = None


DRIFT_MIN_RECENT = 20
DRIFT_Z = 3.0


def drift(cal: Calibration, recent_scores: list[float], recent_labeled: list[Sample]) -> Drift:
    """Compare recent task runs' scores (and any holdout labels) with the calibration window.

    Warns when the share scoring at or above the threshold moved by more than
    DRIFT_Z standard errors (two-proportion z test, with at least
    DRIFT_MIN_RECENT recent task runs), or when the recent accepted task runs
    already fail holdout more often than the target with the same confidence
    (their Clopper-Pearson *lower* bound is above it).
    """
    w = cal.certificate.window
    th = cal.threshold if cal.threshold is not None else None
    n2 = len(recent_scores)
    out = Drift(recent=n2)
    if n2:
        out.mean_score = sum(recent_scores) / n2
    warnings = []
    if th is not None and n2:
        k2 = sum(1 for s in recent_scores if at_or_above(s, th))
        out.share_at_or_above = k2 / n2
        if w.share_at_or_above is not None and w.task_runs and n2 >= DRIFT_MIN_RECENT:
            n1, p1, p2 = w.task_runs, w.share_at_or_above, k2 / n2
            pooled = (p1 * n1 + k2) / (n1 + n2)
            se = math.sqrt(max(pooled * (1 - pooled) * (1 / n1 + 1 / n2), 0.0))
            if se > 0:
                out.z = (p2 - p1) / se
                if abs(out.z) >= DRIFT_Z:
                    warnings.append(f"{p2:.0%} of the {n2} task runs since the calibration score ≥ {th:.2f}, against "
                                    f"{p1:.0%} of the {n1} it was computed on (z = {out.z:+.1f})")
        acc = [s for s in recent_labeled if at_or_above(s.score, th)]
        out.recent_labeled_accepted = len(acc)
        out.recent_errors = sum(1 for s in acc if s.wrong)
        if acc and out.recent_errors:
            lower = 1.0 - clopper_pearson_upper(len(acc) - out.recent_errors, len(acc), cal.certificate.confidence)
            if lower > cal.certificate.max_escaped:
                warnings.append(f"{out.recent_errors} of the {len(acc)} recent task runs at or above the threshold fail "
                                f"holdout: more than {cal.certificate.max_escaped:.1%} with "
                                f"{cal.certificate.confidence:.0%} confidence")
    if warnings:
        out.warning = "; ".join(warnings) + ": run `crossreview calibrate` again"
    return out
