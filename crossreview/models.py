"""The data crossreview passes around: tasks, candidates, verdicts, decisions.

Pure data: nothing here touches git, subprocesses, SQL or models, so policies
and plugins can import it freely.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

DecisionKind = Literal["accepted", "rejected", "escalated", "error"]
VerdictKind = Literal["approve", "reject", "abstain"]
Outcome = Literal["passed", "failed", "error", "skipped"]


def utcnow() -> datetime:
    """Timezone-aware now; every timestamp crossreview records is UTC."""
    return datetime.now(timezone.utc)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- task.toml, exactly as users write it -----------------------------------


class TaskSection(_Strict):
    id: str | None = Field(default=None, description="task id; default: the folder name")
    tags: list[str] = Field(default_factory=list)


class AgentSection(_Strict):
    timeout_sec: float = Field(default=900, gt=0, allow_inf_nan=False)


class VerifierSection(_Strict):
    command: str = "python -m pytest -q {tests}"
    timeout_sec: float = Field(default=120, gt=0, allow_inf_nan=False)
    tests_visible: bool = False


class RepoSection(_Strict):
    path: str = "repo"
    ref: str = "HEAD"


class TaskFile(_Strict):
    """The schema of task.toml; unknown keys are errors, so typos are caught."""

    version: str = "1.0"
    task: TaskSection = Field(default_factory=TaskSection)
    metadata: dict[str, Any] = Field(default_factory=dict)
    agent: AgentSection = Field(default_factory=AgentSection)
    verifier: VerifierSection = Field(default_factory=VerifierSection)
    repo: RepoSection = Field(default_factory=RepoSection)


class Task(BaseModel):
    """A loaded, validated task folder."""

    id: str
    path: Path
    instruction: str
    tags: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)
    agent_timeout: float = 900
    verifier_command: str = "python -m pytest -q {tests}"
    verifier_timeout: float = 120
    tests_visible: bool = False
    repo_path: Path
    repo_ref: str = "HEAD"
    repo_is_folder: bool = True
    """True when the repository is a plain folder of files (repo/), False when
    it is an existing git repository."""
    instruction_trusted: bool = True
    """False when the instruction was written by the author of the change
    under review (a pull request's title and body): model reviewers then get
    it fenced as untrusted data and scanned for injection, like the diff."""

    @property
    def instruction_file(self) -> Path:
        return self.path / "instruction.md"

    @property
    def tests_dir(self) -> Path:
        return self.path / "tests"

    @property
    def solution_dir(self) -> Path:
        return self.path / "solution"

    @property
    def holdout_dir(self) -> Path:
        return self.path / "holdout"


class TaskError(BaseModel):
    """A task folder that could not be loaded, with what to fix."""

    path: Path
    file: Path
    field: str | None = None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}"
        if self.field:
            where += f": {self.field}"
        return f"{where}: {self.message}"


# --- agents, candidates, reviews --------------------------------------------


class AgentSpec(BaseModel):
    """One `--agent NAME=SPEC`: a name, the spec's kind and its argument."""

    name: str
    spec: str

    @property
    def kind(self) -> str:
        return self.spec.split(":", 1)[0]

    @property
    def arg(self) -> str | None:
        parts = self.spec.split(":", 1)
        return parts[1] if len(parts) == 2 else None


class Usage(BaseModel):
    """What a piece of work consumed. cost is None when unknown, never 0 by guess."""

    tokens_in: int = 0
    tokens_out: int = 0
    cost: float | None = 0.0
    calls: int = 0
    cost_known: float = 0.0
    """When cost is None, what is known to have been spent (a lower bound: "≥ $cost_known"),
    e.g. what an agent reported before its solve raised; 0 when nothing is known."""

    @property
    def tokens(self) -> int:
        return self.tokens_in + self.tokens_out


class TestOutcome(BaseModel):
    __test__ = False  # keep pytest from collecting it
    name: str
    outcome: Outcome
    message: str = ""


class TestReport(BaseModel):
    """Per-test outcomes of one verifier run."""

    __test__ = False
    outcomes: list[TestOutcome] = Field(default_factory=list)
    exit_code: int | None = None
    timed_out: bool = False
    seconds: float = 0.0
    output: str = ""
    """The tail of the verifier's output, for the escalation packet."""
    tampering: list[str] = Field(default_factory=list)
    """Signs the outcomes were tampered with (crossreview.verify's canary); then nothing passed."""

    @property
    def total(self) -> int:
        return len(self.outcomes)

    @property
    def passed(self) -> int:
        return sum(1 for o in self.outcomes if o.outcome == "passed")

    @property
    def all_passed(self) -> bool:
        """True when tests ran, none failed or errored, and the command succeeded."""
        if self.timed_out or self.total == 0 or self.exit_code not in (0, None) or self.tampering:
            return False
        return all(o.outcome in ("passed", "skipped") for o in self.outcomes) and self.passed > 0

    def summary_dict(self) -> dict[str, Any]:
        """The shape command reviewers read from CROSSREVIEW_TESTS_FILE."""
        return {
            "passed": self.passed,
            "total": self.total,
            "all_passed": self.all_passed,
            "timed_out": self.timed_out,
            "tampering": self.tampering,
            "outcomes": [o.model_dump() for o in self.outcomes],
        }


class SolveResult(BaseModel):
    """What an agent reports back; the diff is taken by crossreview, not trusted from it."""

    status: Literal["ok", "error", "timeout"] = "ok"
    error: str | None = None
    usage: Usage = Field(default_factory=Usage)
    log: str = ""
    calls: list[dict[str, Any]] = Field(default_factory=list)
    """Each model call itemized (model, tokens_in, tokens_out, cost, started, seconds, error);
    see Ledger.record_calls. ``usage`` is their sum."""


class Candidate(BaseModel):
    """One agent's attempt at a task: its diff and how it fared."""

    agent: str
    spec: str
    round: int = 0
    status: Literal["ok", "error", "timeout"] = "ok"
    error: str | None = None
    diff: str = ""
    files_changed: list[str] = Field(default_factory=list)
    lines_added: int = 0
    lines_removed: int = 0
    started: datetime = Field(default_factory=utcnow)
    finished: datetime = Field(default_factory=utcnow)
    usage: Usage = Field(default_factory=Usage)
    log: str = ""
    tests: TestReport | None = None
    holdout: TestReport | None = None
    calls: list[dict[str, Any]] = Field(default_factory=list)
    """The solve's model calls, itemized (SolveResult.calls)."""
    tampering: list[str] = Field(default_factory=list)
    """Why this candidate may fake its test results (crossreview.tamper); such a candidate is never
    accepted automatically."""
    test_files: list[str] = Field(default_factory=list)
    """The files of its change that decide how it is tested — the repository's tests where they judge it
    (the gate), conftest.py, pytest's configuration — as "path (new|changed|deleted|tests added|...)"
    (crossreview.tamper.judge_files). Shown to the human whether or not any of them is a problem."""

    @property
    def seconds(self) -> float:
        return (self.finished - self.started).total_seconds()

    @property
    def diff_size(self) -> int:
        return self.lines_added + self.lines_removed

    @property
    def tests_pass(self) -> bool:
        return self.status == "ok" and self.tests is not None and self.tests.all_passed


class Verdict(BaseModel):
    """One reviewer's judgement of one candidate."""

    reviewer: str
    candidate: str
    round: int = 0
    verdict: VerdictKind
    confidence: float = Field(default=0.5, ge=0, le=1)
    concerns: list[str] = Field(default_factory=list)
    prefers: str | None = None
    """The candidate this reviewer would pick among those it saw, if any."""
    usage: Usage = Field(default_factory=Usage)
    seconds: float = 0.0
    error: str | None = None
    calls: list[dict[str, Any]] = Field(default_factory=list)
    """The review's model calls, itemized (as SolveResult.calls)."""


class ReviewVerdictOutput(_Strict):
    """What a command (or model) reviewer must print: validated strictly."""

    verdict: Literal["approve", "reject"]
    confidence: float = Field(default=0.5, ge=0, le=1)
    concerns: list[str] = Field(default_factory=list)
    prefers: str | None = None
    usage: Usage | None = None
    """What producing this verdict cost (a model reviewer fills it in)."""
    calls: list[dict[str, Any]] = Field(default_factory=list)
    """Its model calls, itemized (as SolveResult.calls)."""

    @field_validator("concerns")
    @classmethod
    def _bounded_concerns(cls, concerns: list[str]) -> list[str]:
        """At most MAX_CONCERNS concerns of MAX_CONCERN_CHARS each: a reviewer (a model talked into it,
        or a hostile command) must not fill every checkpoint, the ledger and the packet with text."""
        kept = [c if len(c) <= MAX_CONCERN_CHARS else c[:MAX_CONCERN_CHARS] + " … (cut)" for c in concerns[:MAX_CONCERNS]]
        if len(concerns) > MAX_CONCERNS:
            kept.append(f"… and {len(concerns) - MAX_CONCERNS} more concerns (cut)")
        return kept


MAX_CONCERNS = 50
MAX_CONCERN_CHARS = 2000


class Decision(BaseModel):
    """What the consensus policy concluded for one task run."""

    kind: Literal["accepted", "rejected", "escalated"]
    winner: str | None = None
    reason: str
    disagreements: list[str] = Field(default_factory=list)
    policy: str = ""
    tampering_alone: list[str] = Field(default_factory=list)
    """On an escalation that only the tampering flag caused: the candidates that may fake their test
    results. Empty for every other decision, and for an escalation where the reviewers disagree as
    well (crossreview.policy.tampering_alone says when they do), so that what is shown to the human
    says which of the two it is (crossreview.packet.escalation_headline)."""
    cause: str = ""
    """On an escalation for another reason than that the reviewers disagree, that reason in a few
    words ("agreement score below the calibrated threshold"); the faces head the escalation with it
    (crossreview.packet.escalation_headline). Empty: the reviewers disagree. Beside a tampering flag,
    every other cause, "; "-joined (crossreview.policy.explain_flagged), "the reviewers disagree" among
    them when they split as well as, say, scoring below the threshold."""


class HumanDecision(BaseModel):
    """A human's answer to an escalation."""

    action: Literal["pick", "reject", "guide"]
    pick: str | None = None
    guide: str | None = None
    by: str = ""
    decided_at: datetime = Field(default_factory=utcnow)
    shown_at: datetime | None = None
    """When the human first saw the packet, if the channel that asked knows."""


class Escalation(BaseModel):
    """An escalation as channels and the inbox see it."""

    id: str
    run: str
    task_run: str
    task: str
    reason: str
    round: int = 0
    created: datetime = Field(default_factory=utcnow)
    packet: dict[str, Any] = Field(default_factory=dict)


class CandidateSummary(BaseModel):
    """A candidate as `run --json` reports it."""

    agent: str
    status: str
    tests_passed: int
    tests_total: int
    approvals: int
    reviews: int
    tokens: int
    cost: float | None
    seconds: float
    tampering: list[str] = Field(default_factory=list)
    """Candidate.tampering: why its test results may be faked; when any, its counts are not to be trusted."""
    cost_known: float | None = None
    """When cost is unknown (None), the part known to have been spent: the cost is at least this."""


class TaskResult(BaseModel):
    """The outcome of one task run."""

    task: str
    task_run: str
    run: str
    decision: DecisionKind
    winner: str | None = None
    escalation: str | None = None
    reason: str = ""
    branch: str | None = None
    candidates: list[CandidateSummary] = Field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None
    tokens: int = 0
    """Everything the task run spent: every round's solves and reviews (the candidates' lines hold their solves)."""
    cost: float | None = 0.0
    """The same in money; None when any part is unknown (never summed as 0)."""
    stopped: str | None = None
    """The budget cap that cut this task run short ("budget exhausted: --max-cost $50 for the suite run
    reached ..."): an agent or review it stopped, or the whole task run not started. None when no cap
    stopped anything. Its decision, if any, was made without the work the cap stopped."""
