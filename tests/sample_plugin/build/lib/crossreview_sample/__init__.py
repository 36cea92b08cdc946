"""A third-party crossreview plugin, installed by the tests exactly as a user would.

Adds agent kind ``echo:<text>`` (writes <text> into ECHO.txt), reviewer kind
``grumpy`` (rejects everything) and policy ``first-passing``.
"""

from pathlib import Path

from crossreview.hookspecs import hookimpl
from crossreview.models import Decision, ReviewVerdictOutput, SolveResult


class EchoAgent:
    def __init__(self, spec):
        self.text = spec.arg or "hello"

    def solve(self, workspace):
        Path(workspace.path, "ECHO.txt").write_text(self.text + "\n")
        return SolveResult()


class GrumpyReviewer:
    def __init__(self, spec):
        pass

    def review(self, request):
        return ReviewVerdictOutput(verdict="reject", confidence=0.99, concerns=["grumpy rejects everything"])


class FirstPassing:
    def decide(self, candidates, verdicts):
        for c in candidates:
            if c.tests_pass:
                return Decision(kind="accepted", winner=c.agent, reason=f"{c.agent} passes", policy="first-passing")
        return Decision(kind="rejected", reason="nothing passes", policy="first-passing")


@hookimpl
def crossreview_register_agents(register):
    register("echo", EchoAgent, help="writes its argument to ECHO.txt")


@hookimpl
def crossreview_register_reviewers(register):
    register("grumpy", GrumpyReviewer, help="rejects everything")


@hookimpl
def crossreview_register_policies(register):
    register("first-passing", FirstPassing(), help="the first candidate whose tests pass")
