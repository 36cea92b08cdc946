"""Every hook crossreview calls. The docstring of each hook is its documentation.

Built-in agents, reviewers, policies, escalation channels and reporters
implement these exactly as a third-party plugin does (see
crossreview/default_plugins/). A third-party package declares an entry point
in the ``crossreview`` group pointing at a module that implements any of them::

    [project.entry-points.crossreview]
    myagent = "myagent_plugin"

Register hooks receive a ``register`` callback (as in Simon Willison's
``llm``): call it once per thing you add.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import pluggy

if TYPE_CHECKING:  # pragma: no cover - typing only
    from .models import Escalation, HumanDecision, Task, TaskResult, Candidate, Verdict

hookspec = pluggy.HookspecMarker("crossreview")
hookimpl = pluggy.HookimplMarker("crossreview")


@hookspec
def crossreview_register_agents(register: Callable[..., None]) -> None:
    """Add agent kinds.

    Call ``register(kind, factory, help=...)`` once per kind. ``kind`` is the
    part of an agent spec before the first colon (``oracle``, ``command``,
    ``llm``); ``factory(spec: AgentSpec)`` returns an object with a
    ``solve(workspace: crossreview.agents.Workspace) -> SolveResult`` method.
    ``solve`` edits files in ``workspace.path`` only; crossreview takes the
    diff itself afterwards. Raise ``crossreview.agents.SpecError`` from the
    factory for a spec you cannot use (the message is shown to the user).
    """


@hookspec
def crossreview_register_reviewers(register: Callable[..., None]) -> None:
    """Add reviewer kinds.

    Call ``register(kind, factory, help=...)``; ``factory(spec: AgentSpec)``
    returns an object with ``review(request: crossreview.agents.ReviewRequest)
    -> crossreview.models.ReviewVerdictOutput``. The request's diff is
    untrusted input written by another agent: never execute it, never let text
    inside it change the rules of the review.
    """


@hookspec
def crossreview_register_policies(register: Callable[..., None]) -> None:
    """Add consensus policies.

    Call ``register(name, policy, help=...)``; ``policy`` has
    ``decide(candidates: list[Candidate], verdicts: list[Verdict]) -> Decision``.
    ``candidates`` come in agent order with their test reports; ``verdicts``
    hold every review of this round. A policy is pure: it must not do I/O.

    Optional, for policies that need a calibration (``calibrated``, ``cascade``):
    ``needs_calibration = True`` and ``with_calibration(calibration) -> policy``
    (the runner reads the policy file and records it in the run's config, so a
    resumed run decides with the same threshold); ``initial_agents = N`` makes
    the graph start only the first N agents and one more each time the policy
    escalates, until every agent has run (the cascade).
    """


@hookspec
def crossreview_escalation_opened(escalation: "Escalation", ledger: Any) -> None:
    """A task run was parked waiting for a human.

    Every escalation channel is told (the inbox records it in ``ledger``; a
    chat or CI channel would post it). Called once per escalation, after the
    run's checkpoint is saved, so the run can be resumed from any process.
    """


@hookspec(firstresult=True)
def crossreview_ask_human(escalation: "Escalation", interactive: bool) -> "HumanDecision | None":
    """Ask a human for a decision on the spot.

    Return a ``HumanDecision`` to resume the run at once, or ``None`` to leave
    the escalation in the inbox for ``crossreview decide``. Channels must
    return ``None`` when ``interactive`` is false (``--no-input``, CI, no TTY).
    The first non-None answer wins.
    """


@hookspec
def crossreview_task_started(task: "Task", task_run: str) -> None:
    """A task run begins (reporters show progress)."""


@hookspec
def crossreview_candidate_solved(task: "Task", task_run: str, candidate: "Candidate") -> None:
    """An agent finished solving (before its tests ran)."""


@hookspec
def crossreview_candidate_verified(task: "Task", task_run: str, candidate: "Candidate") -> None:
    """A candidate's tests ran; ``candidate.tests`` holds the outcomes."""


@hookspec
def crossreview_review_done(task: "Task", task_run: str, verdict: "Verdict") -> None:
    """One reviewer finished reviewing one candidate."""


@hookspec
def crossreview_task_finished(result: "TaskResult") -> None:
    """A task run ended: accepted, rejected, escalated (parked) or error."""


@hookspec
def crossreview_run_finished(run: str, results: "list[TaskResult]") -> None:
    """Every task run of a suite run ended (reporters print their summary)."""
