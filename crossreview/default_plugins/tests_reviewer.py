"""The ``tests`` reviewer: approves exactly the candidates whose tests pass."""

from __future__ import annotations

from ..agents import ReviewRequest, SpecError
from ..hookspecs import hookimpl
from ..models import AgentSpec, ReviewVerdictOutput


class TestsReviewer:
    """Reads only the test outcomes; the offline default reviewer."""

    __test__ = False
    spends_nothing = True  # reviews even when a budget is exhausted: it reads test outcomes, calls no model

    def __init__(self, spec: AgentSpec):
        if spec.arg:
            raise SpecError(f"reviewer for {spec.name}: 'tests' takes no argument (got {spec.spec!r})")

    def review(self, request: ReviewRequest) -> ReviewVerdictOutput:
        """Approve when every test passed, reject otherwise, naming the failures."""
        tests = request.tests
        if tests is not None and tests.all_passed:
            return ReviewVerdictOutput(verdict="approve", confidence=1.0)
        if tests is None:
            return ReviewVerdictOutput(verdict="reject", confidence=1.0, concerns=["the candidate was not tested"])
        concerns = [f"{o.name} {o.outcome}" for o in tests.outcomes if o.outcome in ("failed", "error")][:10]
        if tests.timed_out:
            concerns.insert(0, "the tests timed out")
        if not tests.outcomes:
            concerns.append("no test ran")
        return ReviewVerdictOutput(
            verdict="reject",
            confidence=1.0,
            concerns=[f"{tests.passed}/{tests.total} tests pass", *concerns],
        )


@hookimpl
def crossreview_register_reviewers(register):
    register("tests", TestsReviewer, help="approves exactly the candidates whose tests pass")
