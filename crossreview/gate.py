"""The CI face: judge a pull request (the diff base..head) with the agents' reviews, and tell GitHub.

    from crossreview.gate import GateOptions, run_gate
    report = run_gate(GateOptions(base="origin/main", head="HEAD"))
    report.exit_code   # 0 accept, 1 reject (or cut short by a budget cap), 3 needs a human (DESIGN.md's exit codes)

The pull request is one candidate, named ``pr``: the ``ref:<head>`` agent lays
head's tree over a worktree made at the merge base, so its diff is exactly
what GitHub shows. The configured agents review it (and with ``attempts``,
some of them first solve the task themselves from the base, so a reviewer
sees the pull request beside independent attempts). The decision is about
the pull request alone; the attempts are context in the packet.

Everything that judges — agents, reviewers, policy, verifier, the task — is
read from the base commit's config (``crossreview.toml`` or
``[tool.crossreview]`` in pyproject.toml), never from head: a pull request
cannot loosen its own gate. Reviewer scripts named with ``{suite}`` run from
the base's copy too.

Inside GitHub Actions (``GITHUB_ACTIONS=true``) the result also goes to the
step summary, the step outputs, workflow annotations, one pull request
comment updated in place, and a label; see :mod:`crossreview.github`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tarfile
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Mapping

import pluggy
from pydantic import BaseModel, Field

from . import plugins
from .models import AgentSpec, HumanDecision, Task, TaskResult, utcnow
from .packet import escalation_headline, reasons_heading
from .words import count_phrase, files_phrase
from .runner import (
    DEFAULT_STATE_DIR,
    RunOptions,
    UsageError,
    _finish_run,
    new_run_id,
    open_session,
    resolve_options,
    run_task_detailed,
)
from .tasks import ConfigError, GateConfig, load_config_at, load_task

PR_AGENT = "pr"
GATE_DEFAULT_AGENTS = ["tests=noop"]
"""With no agents in the base's config: one reviewer, the tests (accept iff they pass)."""
MARKER = "<!-- crossreview:gate"
_TASK_LINE = re.compile(r"^\s*crossreview-task:\s*(\S+)\s*$", re.MULTILINE)
_CONCERN_AT = re.compile(r"^\s*`?(?P<file>[\w./@+-]+?)`?:(?P<line>\d+)(?::\d+)?\s*[:\-–—]?\s*(?P<msg>.+)$", re.DOTALL)
_MAX_COMMENT = 60_000  # GitHub refuses comments over 65,536 characters


# --- the pull request and its environment -------------------------------------


class PullRequest(BaseModel):
    """What the gate needs to know about the pull request it judges."""

    number: int | None = None
    title: str = ""
    body: str = ""
    base_sha: str | None = None
    head_sha: str | None = None
    url: str | None = None


@dataclass
class GitHubEnv:
    """The standard GitHub Actions environment, read once (never the token into anything printable)."""

    active: bool = False
    api_url: str = "https://api.github.com"
    repository: str | None = None
    token: str | None = field(default=None, repr=False)
    event_name: str | None = None
    event: dict[str, Any] = field(default_factory=dict)
    step_summary: Path | None = None
    output: Path | None = None
    run_url: str | None = None

    @classmethod
    def from_environ(cls, env: Mapping[str, str], token_var: str = "GITHUB_TOKEN") -> "GitHubEnv":
        """Read GITHUB_* variables; outside Actions everything stays off."""
        active = env.get("GITHUB_ACTIONS") == "true"
        event: dict[str, Any] = {}
        path = env.get("GITHUB_EVENT_PATH")
        if active and path and Path(path).is_file():
            try:
                event = json.loads(Path(path).read_text())
            except (OSError, ValueError) as exc:
                raise UsageError(f"GITHUB_EVENT_PATH={path}: not a readable JSON event ({exc})") from None
        server, repo, run_id = env.get("GITHUB_SERVER_URL"), env.get("GITHUB_REPOSITORY"), env.get("GITHUB_RUN_ID")
        return cls(
            active=active,
            api_url=env.get("GITHUB_API_URL") or "https://api.github.com",
            repository=repo,
            token=env.get(token_var) or None,
            event_name=env.get("GITHUB_EVENT_NAME"),
            event=event,
            step_summary=Path(env["GITHUB_STEP_SUMMARY"]) if active and env.get("GITHUB_STEP_SUMMARY") else None,
            output=Path(env["GITHUB_OUTPUT"]) if active and env.get("GITHUB_OUTPUT") else None,
            run_url=f"{server}/{repo}/actions/runs/{run_id}" if server and repo and run_id else None,
        )

    @property
    def pull_request(self) -> PullRequest | None:
        """The event's pull request (pull_request, pull_request_review events), if any."""
        pr = self.event.get("pull_request")
        if not isinstance(pr, dict):
            return None
        return PullRequest(
            number=pr.get("number"),
            title=pr.get("title") or "",
            body=pr.get("body") or "",
            base_sha=(pr.get("base") or {}).get("sha"),
            head_sha=(pr.get("head") or {}).get("sha"),
            url=pr.get("html_url"),
        )

    def client(self):
        """A REST client for this repository, or None without a token or repository."""
        if not (self.token and self.repository):
            return None
        from .github import GitHubClient

        return GitHubClient(self.api_url, self.token, self.repository)


# --- options and result --------------------------------------------------------


@dataclass
class GateOptions:
    """What `crossreview gate` was asked; the rest comes from the base's config."""

    base: str | None = None
    head: str | None = None
    repo: Path = Path(".")
    attempts: int | None = None
    task: str | None = None
    """A task folder (relative to the repository root, read from the base) the pull request solves."""
    title: str | None = None
    body: str | None = None
    state_dir: Path = DEFAULT_STATE_DIR
    ledger: Path | str | None = None
    sandbox: str | None = None
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    publish: bool = True
    """Write to GitHub (summary, outputs, annotations, comment, label) when inside Actions."""
    commands: Any = None
    """Where workflow commands (annotations, warnings) are printed: default stdout; `--json` uses
    stderr, which the Actions runner reads for them too, so stdout stays one JSON document."""
    progress: Callable[[str], None] | None = None
    """Told what the gate is about to do (judge the pull request, or read a review) once it knows."""


class Annotation(BaseModel):
    """A reviewer's concern about one line of the pull request, as a workflow annotation."""

    level: str = "warning"
    file: str
    line: int
    title: str
    message: str


class GateReport(BaseModel):
    """Everything the gate decided, as the faces (terminal, GitHub, --json) show it."""

    run: str
    task_run: str
    task: str
    decision: str
    winner: str | None = None
    escalation: str | None = None
    reason: str = ""
    base: str
    head: str
    merge_base: str
    config_source: str | None = None
    """The base's config file the gate was judged by (None: built-in defaults)."""
    pull_request: PullRequest | None = None
    candidates: list[dict[str, Any]] = Field(default_factory=list)
    verdicts: list[dict[str, Any]] = Field(default_factory=list)
    disagreements: list[str] = Field(default_factory=list)
    tampering_alone: list[str] = Field(default_factory=list)
    """Decision.tampering_alone: the candidates (``pr``) whose possible faking of their test results
    alone escalated the pull request, so the comment does not say the reviewers disagree."""
    cause: str = ""
    """Decision.cause: why the policy escalated when it is not a disagreement (a score below the
    calibrated threshold), so the comment says that instead."""
    annotations: list[Annotation] = Field(default_factory=list)
    label: str = "crossreview:needs-human"
    comment: bool = True
    created: datetime = Field(default_factory=utcnow)
    github: list[str] = Field(default_factory=list)
    """What was done on GitHub (or why not), one line each."""
    human: str | None = None
    """Who settled an escalation of this head on GitHub ("github:login"), when a review did."""
    stopped: str | None = None
    """TaskResult.stopped: the budget cap that cut the gate's run short (an attempt or a review it
    stopped), or None. A run it cut short is never accepted (see _report) and exits 1."""

    @property
    def exit_code(self) -> int:
        """0 the pull request is accepted, 1 rejected, failed to run or cut short by a budget cap,
        3 a human must decide (runner.exit_code_for's rule; a maintainer's decision settles it)."""
        if self.stopped and not self.human:
            return 1
        return {"accepted": 0, "escalated": 3}.get(self.decision, 1)

    def meta(self) -> dict[str, Any]:
        """The facts `--record-human` needs later, kept (hidden) in the pull request comment."""
        return {"run": self.run, "task_run": self.task_run, "task": self.task, "decision": self.decision,
                "escalation": self.escalation, "created": self.created.isoformat(), "head": self.head,
                "reason": self.reason[:500], "label": self.label, "human": self.human, "config": self.config_source,
                "tampering_alone": self.tampering_alone, "cause": self.cause, "stopped": self.stopped}


# --- running the gate ----------------------------------------------------------


def _git_repo(path: Path):
    import git

    try:
        return git.Repo(path, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise UsageError(f"{path.resolve()} is not inside a git repository; run the gate from the repository's "
                         "checkout (or give --repo)") from None


def _commit(repo, rev: str, flag: str) -> str:
    import git

    if rev.startswith("-"):
        raise UsageError(f"{flag} {rev!r}: a revision cannot start with '-'")
    try:
        return repo.commit(rev).hexsha
    except (git.BadName, ValueError, git.GitCommandError):
        raise UsageError(
            f"{flag} {rev!r}: no such commit in {repo.working_tree_dir}. In GitHub Actions, check out with "
            "`fetch-depth: 0` so the base branch's history is there"
        ) from None


def _snapshot(repo, commit: str, dest: Path) -> Path:
    """The files of ``commit`` (the base) in ``dest``: where config, task and reviewer scripts are read from."""
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile() as tar:
        repo.git.archive("--format=tar", commit, output_stream=tar)
        tar.seek(0)
        with tarfile.open(fileobj=tar) as tf:
            tf.extractall(dest, filter="data")
    return dest


def _task_path(opts: GateOptions, cfg: GateConfig, pr: PullRequest) -> str | None:
    """The task folder to verify with: --task, else the base's `[gate] task`, else the one the body names.

    The base's configuration outranks the pull request's body: a pull request
    must not pick an easier task than the one its repository gates with. The
    body is read only when the base allows it (``[gate] task_from_body``):
    otherwise a pull request could swap the repository's own tests (the
    default verifier) for any task folder whose tests it passes.
    """
    if opts.task:
        return opts.task
    if cfg.task:
        return cfg.task
    if not cfg.task_from_body:
        return None
    m = _TASK_LINE.search(pr.body or "")
    return m.group(1) if m else None


def _load_gate_task(path_text: str, base_dir: Path, repo_root: Path, merge_base: str, where: str) -> Task:
    """A task folder named by the pull request (or flag, or config), read from the base, on the repository."""
    rel = Path(path_text)
    folder = (base_dir / rel).resolve()
    if rel.is_absolute() or base_dir.resolve() not in folder.parents:
        raise UsageError(f"task {path_text!r} ({where}): give a folder inside the repository, relative to its root")
    if not (folder / "task.toml").is_file():
        raise UsageError(f"task {path_text!r} ({where}): the base commit has no task.toml there; the task must "
                         "exist on the base branch (a pull request cannot bring its own tests)")
    loaded = load_task(folder)
    if isinstance(loaded, list):
        raise UsageError(f"task {path_text!r} ({where}) is broken on the base branch:\n"
                         + "\n".join(str(e) for e in loaded))
    return loaded.model_copy(update={"repo_path": repo_root, "repo_ref": merge_base, "repo_is_folder": False})


def _synth_task(gate_dir: Path, pr: PullRequest, cfg: GateConfig, repo_root: Path, merge_base: str,
                base: str, head: str) -> Task:
    """The task a pull request stands for when it names no task folder: its title and body, the base's verifier."""
    folder = gate_dir / "task"
    (folder / "tests").mkdir(parents=True, exist_ok=True)
    title = pr.title or f"the change {base[:12]}..{head[:12]}"
    instruction = f"# {title}\n\n{pr.body or ''}".rstrip() + "\n"
    (folder / "instruction.md").write_text(instruction)
    task_id = f"pr-{pr.number}" if pr.number else f"gate-{head[:10]}"
    return Task(
        id=task_id,
        path=folder,
        instruction=instruction,
        instruction_trusted=False,  # the pull request's author wrote it, like the diff
        tags=["gate"],
        metadata={"base": base, "head": head, "merge_base": merge_base,
                  **({"pull_request": pr.number} if pr.number else {}), **({"url": pr.url} if pr.url else {})},
        agent_timeout=cfg.agent_timeout_sec,
        verifier_command=cfg.verifier,
        verifier_timeout=cfg.verifier_timeout_sec,
        repo_path=repo_root,
        repo_ref=merge_base,
        repo_is_folder=False,
    )


def run_gate(opts: GateOptions, pm: pluggy.PluginManager | None = None) -> GateReport:
    """Judge the pull request base..head; publish to GitHub when inside Actions. Raises UsageError (exit 2)."""
    pm = pm or plugins.get_plugin_manager()
    gh = GitHubEnv.from_environ(opts.environ)
    pr = gh.pull_request or PullRequest()
    if opts.title is not None:
        pr.title = opts.title
    if opts.body is not None:
        pr.body = opts.body
    base_rev = opts.base or pr.base_sha
    if not base_rev:
        raise UsageError("--base REF is needed (the branch or commit the pull request goes into); inside a "
                         "pull_request workflow it defaults to the event's base commit")
    head_rev = opts.head or pr.head_sha or "HEAD"
    repo = _git_repo(opts.repo)
    repo_root = Path(repo.working_tree_dir).resolve()
    base, head = _commit(repo, base_rev, "--base"), _commit(repo, head_rev, "--head")
    bases = repo.merge_base(base, head)
    if not bases:
        if repo.git.rev_parse("--is-shallow-repository").strip() == "true":
            raise UsageError(f"--base {base_rev} and --head {head_rev}: their merge base is not in this shallow "
                             "clone. In GitHub Actions, check out with `fetch-depth: 0` (actions/checkout fetches "
                             "one commit by default), or `git fetch --unshallow` first")
        raise UsageError(f"--base {base_rev} and --head {head_rev} have no common ancestor")
    merge_base = bases[0].hexsha
    say = opts.progress or (lambda line: None)
    if gh.active and gh.event_name == "pull_request_review":
        reviewer = ((gh.event.get("review") or {}).get("user") or {}).get("login") or "?"
        which = f"pull request #{pr.number}" if pr.number is not None else "the pull request"
        say(f"reading {reviewer}'s review of {which} and the gate's last decision on {head[:12]}…")
        report = review_outcome(gh, pr, head, opts.ledger or opts.state_dir / "ledger.db")
        if report is not None:
            report = report.model_copy(update={"base": base, "merge_base": merge_base})
            if opts.publish:
                publish(report, gh, opts.commands)
            return report
        say(f"no earlier decision on {head[:12]} to keep: judging the pull request with the base branch's "
            "reviewers…")
    else:
        say("judging the pull request with the base branch's reviewers…")

    run = new_run_id()
    state_dir = opts.state_dir if opts.state_dir.is_absolute() else (Path.cwd() / opts.state_dir)
    gate_dir = state_dir.resolve() / "gate" / run
    base_dir = _snapshot(repo, base, gate_dir / "base")
    try:
        loaded = load_config_at(base_dir)
    except ConfigError as exc:
        raise UsageError(f"the base branch's config ({base[:12]}): {exc}".replace(str(base_dir) + os.sep, "")) from None
    cfg = loaded.config.gate
    source = str(loaded.source.relative_to(base_dir)) if loaded.source else None
    attempts = cfg.attempts if opts.attempts is None else opts.attempts

    task_text = _task_path(opts, cfg, pr)
    if task_text:
        where = "--task" if opts.task else ("[gate] task" if cfg.task else "the pull request's body")
        task = _load_gate_task(task_text, base_dir, repo_root, merge_base, where)
        if pr.title or pr.body:
            task = task.model_copy(update={"metadata": {**task.metadata, "pull_request": pr.number, "head": head}})
    else:
        task = _synth_task(gate_dir, pr, cfg, repo_root, merge_base, base, head)

    run_opts = RunOptions(paths=[base_dir], agents=[] if loaded.config.agents else list(GATE_DEFAULT_AGENTS),
                          state_dir=state_dir, ledger=Path(opts.ledger) if isinstance(opts.ledger, Path) else opts.ledger,
                          sandbox=opts.sandbox)
    res = resolve_options(run_opts, pm, loaded)
    names = [a.name for a in res.agents]
    if PR_AGENT in names:
        raise UsageError(f"{source or 'config'}: an agent is named {PR_AGENT!r}, the name the gate gives the pull "
                         "request; rename it")
    if attempts > len(res.agents):
        raise UsageError(f"--attempts {attempts}: only {count_phrase(len(res.agents), 'agent')} configured "
                         f"({', '.join(names)})")
    pr_spec = AgentSpec(name=PR_AGENT, spec=f"ref:{head}")
    solvers = [pr_spec, *res.agents[:attempts]]
    config = {
        "paths": [str(base_dir)],
        "agents": [s.model_dump() for s in solvers],
        "panel": [s.model_dump() for s in res.agents],
        "focus": PR_AGENT,
        "keep": False,
        "reviewers": res.reviewers,
        "policy": res.policy,
        # A calibrated or cascade policy decides with the file resolve_options read; without it the graph cannot decide.
        **({"calibration": res.calibration} if res.calibration is not None else {}),
        "jobs": 1,
        "suite_dir": str(base_dir),
        "state_dir": str(state_dir.resolve()),
        "llm": res.llm,
        "limits": res.limits,
        "sandbox": res.sandbox,
        "tasks": [str(task.path)],
        "gate": {"base": base, "head": head, "merge_base": merge_base, "pull_request": pr.number,
                 "config": source, "repository": gh.repository, "repo": str(repo_root)},
    }
    # The ledger is the job's (--ledger, else <state-dir>/ledger.db): a file named by the base's config
    # would land in the base snapshot, which is removed after the run.
    with open_session(state_dir, opts.ledger or None, pm) as session:
        session.ledger.start_run(run, config)
        try:
            outcome = run_task_detailed(session, run, task, config, interactive=False)
        except KeyboardInterrupt:
            session.ledger.set_run_status(run, "interrupted")
            raise
        decision = _last_decision(session, outcome.result.task_run)  # from the checkpoint: before it is forgotten
        _finish_run(session, run, [outcome.result])
    pm.hook.crossreview_run_finished(run=run, results=[outcome.result])
    if outcome.result.decision != "escalated":
        shutil.rmtree(gate_dir, ignore_errors=True)  # a parked run keeps it: a later `decide --guide` reviews from it

    report = _report(run, outcome, decision, pr, base, head, merge_base, source, cfg)
    if opts.publish and gh.active:
        publish(report, gh, opts.commands)
    return report


def _last_decision(session, task_run: str) -> dict:
    from .runner import _thread_config

    values = session.graph.get_state(_thread_config(task_run, 1)).values
    return (values.get("decisions") or [{}])[-1]


def _report(run: str, outcome, decision: dict, pr: PullRequest, base: str, head: str, merge_base: str,
            source: str | None, cfg: GateConfig) -> GateReport:
    result: TaskResult = outcome.result
    pr_cand = next((c for c in outcome.candidates if c.agent == PR_AGENT), None)
    changed = set(pr_cand.files_changed) if pr_cand else set()
    annotations = []
    for v in outcome.verdicts:
        if v.candidate != PR_AGENT:
            continue
        for concern in v.concerns:
            m = _CONCERN_AT.match(concern)
            # Only lines of files the pull request changes: elsewhere an annotation points at nothing it did.
            if m and m.group("file") in changed:
                annotations.append(Annotation(
                    level="error" if v.verdict == "reject" else "warning", file=m.group("file"),
                    line=int(m.group("line")), title=f"crossreview: {v.reviewer} ({v.verdict})",
                    message=m.group("msg").strip()[:1000],
                ))
    decision_, reason = result.decision, result.reason or (result.error or "")
    if decision_ == "rejected" and pr_cand is not None and pr_cand.status != "ok":
        # Nobody reviewed the pull request (its diff is too large, its tree could not be written):
        # not "the reviewers agree: reject" but "the gate could not judge it", still a failing check.
        decision_, reason = "error", f"the pull request could not be judged: {pr_cand.error or pr_cand.status}"
    winner = result.winner
    if decision_ == "accepted" and result.stopped:
        # Accepted on what the cap left (a review or attempt it stopped): never a green check or an
        # outputs.decision a workflow could merge on. Not "rejected" either: nobody found a fault.
        decision_, winner = "error", None
        reason = (f"a budget cap cut the review short; the reviews left would accept it, which is not enough: "
                  f"{reason} (raise or lift the cap in the base branch's config and run the gate again)")
    return GateReport(
        run=run, task_run=result.task_run, task=result.task, decision=decision_, winner=winner,
        escalation=result.escalation, reason=reason, base=base, head=head,
        merge_base=merge_base, config_source=source, pull_request=pr if pr.number else None,
        candidates=[_candidate_row(c) for c in outcome.candidates],
        verdicts=[{"reviewer": v.reviewer, "candidate": v.candidate, "verdict": v.verdict,
                   "confidence": v.confidence, "concerns": v.concerns, "error": v.error} for v in outcome.verdicts],
        disagreements=list(decision.get("disagreements") or []), annotations=annotations,
        tampering_alone=list(decision.get("tampering_alone") or []),
        cause=str(decision.get("cause") or ""),
        label=cfg.label, comment=cfg.comment, stopped=result.stopped,
    )


def _candidate_row(c) -> dict[str, Any]:
    failing = [o.name for o in (c.tests.outcomes if c.tests else []) if o.outcome in ("failed", "error")]
    return {"agent": c.agent, "spec": c.spec, "status": c.status, "error": c.error,
            "tests_passed": c.tests.passed if c.tests else 0, "tests_total": c.tests.total if c.tests else 0,
            "failing_tests": failing[:20], "files": c.files_changed, "lines_added": c.lines_added,
            "lines_removed": c.lines_removed, "tampering": c.tampering, "test_files": c.test_files,
            "tokens": c.usage.tokens,
            "cost": c.usage.cost, "seconds": round(c.seconds, 2),
            "diff": c.diff if c.agent != PR_AGENT else ""}  # GitHub shows the PR's own diff


# --- what GitHub is told -------------------------------------------------------

_ICON = {"accepted": "✅", "rejected": "❌", "escalated": "🧑‍⚖️", "error": "⚠️"}
_HEADLINE = {
    "accepted": "the reviewers agree: accept",
    "rejected": "the reviewers agree: reject",
    "error": "the gate could not run",
}  # "escalated": escalation_headline, which says whether the reviewers split or a flag alone stopped it


def _shown_as(agent: str) -> str:
    """A candidate as the comment names it: the pull request, or an attempt by a configured agent."""
    return "this pull request" if agent == PR_AGENT else f"the attempt by {_code(agent)}"


def _headline(report: GateReport) -> str:
    if report.stopped and report.decision == "error":
        return "a budget cap cut the review short: not accepted"
    if report.decision != "escalated":
        return _HEADLINE.get(report.decision, _md_escape(report.decision))
    # The decision is about the pull request alone; attempts are context (and have their own table mark).
    pr_row = next((c for c in report.candidates if c["agent"] == PR_AGENT), None)
    flagged = [PR_AGENT] if pr_row and pr_row.get("tampering") else []
    return escalation_headline([_shown_as(a) for a in report.tampering_alone], [_shown_as(a) for a in flagged],
                               _md_escape(report.cause))


def _md_escape(text: str) -> str:
    """Reviewer and agent text goes into Markdown as text: no HTML, no links that ping, no tables broken."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("|", "\\|").replace("@", "@\u200b").replace("\n", " ")


def _code(text: str) -> str:
    """``text`` as inline code that cannot close early (no backticks, one line)."""
    return "`" + _md_escape(str(text)).replace("`", "'")[:200] + "`"


def render_markdown(report: GateReport) -> str:
    """The decision, and for a split the packet, as GitHub-flavoured Markdown (step summary and PR comment)."""
    icon, headline = _ICON.get(report.decision, "•"), _headline(report)
    if report.human and report.decision in ("accepted", "rejected"):
        # The reviewers split; a maintainer settled it. Saying they agreed would misstate what happened.
        headline = f"a maintainer decided: {'accept' if report.decision == 'accepted' else 'reject'}"
    lines = [f"## {icon} crossreview: {headline}", ""]
    lines.append(f"**Why:** {_md_escape(report.reason)}" if report.reason else "")
    if report.stopped and not report.human:
        # A rejection or an escalation the cap cut short says so too: it was decided without some of its work.
        lines += ["", f"**Stopped by a budget cap:** {_md_escape(report.stopped)}; decided without the attempts "
                      "and reviews it stopped, so this check fails."]
    lines.append("")
    lines.append(f"Judged {_code(report.merge_base[:12] + '..' + report.head[:12])} with the base branch's "
                 f"{_code(report.config_source) if report.config_source else 'built-in defaults'}; "
                 f"run {_code(report.run)}" + (f", escalation {_code(report.escalation)}" if report.escalation else "")
                 + ".")
    if report.candidates:
        lines += ["", "| candidate | tests | change | reviews |", "|---|---|---|---|"]
    for c in report.candidates:
        on_it = [v for v in report.verdicts if v["candidate"] == c["agent"]]
        reviews = ", ".join(f"{_md_escape(v['reviewer'])}: **{_md_escape(v['verdict'])}**" for v in on_it) or "—"
        tests = f"{c['tests_passed']}/{c['tests_total']}" if c["status"] == "ok" else c["status"]
        if c["tampering"]:
            tests += " ⚠️ may fake its results"
        who = "this pull request" if c["agent"] == PR_AGENT else f"attempt by {_code(c['agent'])}"
        lines.append(f"| {who} | {tests} | {files_phrase(len(c['files']))} +{c['lines_added']} -{c['lines_removed']} "
                     f"| {reviews} |")
    if report.disagreements:
        lines += ["", f"### {reasons_heading(report.tampering_alone, report.cause)}", ""]
        lines += [f"- {_md_escape(d)}" for d in report.disagreements]
    pr_row = next((c for c in report.candidates if c["agent"] == PR_AGENT), None)
    judging = (pr_row or {}).get("test_files") or []  # absent from a report saved by an older version
    if judging:
        # The repository's tests judge the pull request: a human should see which of them it touches,
        # and every reason one is a problem (the table above cuts them at three).
        lines += ["", "### Tests and test configuration this pull request changes", ""]
        for f in judging[:30]:
            lines.append(f"- {_code(f)}")
        problems = [t for t in pr_row.get("tampering") or []]
        if problems:
            lines += ["", "Never accepted on test results alone, because:", ""]
            lines += [f"- {_md_escape(t)[:500]}" for t in problems[:30]]
    concerns = [(v, c) for v in report.verdicts for c in v["concerns"]]
    if concerns:
        lines += ["", "### Concerns", ""]
        for v, concern in concerns[:30]:
            on = "the PR" if v["candidate"] == PR_AGENT else _md_escape(v["candidate"])
            lines.append(f"- **{_md_escape(v['reviewer'])}** on {on} ({_md_escape(v['verdict'])}): "
                         f"{_md_escape(concern)[:500]}")
    for c in report.candidates:
        if c["failing_tests"]:
            lines.append(f"\n{_code(c['agent'])} fails: " + ", ".join(_code(t) for t in c["failing_tests"][:10]))
    attempts = [c for c in report.candidates if c["agent"] != PR_AGENT and c["diff"].strip()]
    for c in attempts:
        fence = "~~~~~~"  # a diff may hold ``` lines; this fence it cannot close by accident
        diff = c["diff"][:8000].replace(fence, "~ ~ ~")
        lines += ["", f"<details><summary>independent attempt by {_md_escape(c['agent'])}</summary>", "",
                  f"{fence}diff", diff, fence, "", "</details>"]
    if report.decision == "escalated":
        lines += ["", "**To decide:** review the pull request as usual — approve it or request changes (or merge or "
                  "close it); crossreview records who decided and how long it took."]
    # The hidden facts must not end the HTML comment early: JSON escapes of < and > keep "-->" out.
    meta = json.dumps(report.meta()).replace("<", "\\u003c").replace(">", "\\u003e").replace("@", "\\u0040")
    lines += ["", f"{MARKER} {meta} -->"]
    text = "\n".join(lines)
    return text if len(text) <= _MAX_COMMENT else text[:_MAX_COMMENT] + "\n\n… (cut)\n\n" + lines[-1]


def _escape_data(s: str) -> str:
    return s.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(s: str) -> str:
    return _escape_data(s).replace(":", "%3A").replace(",", "%2C")


def annotation_lines(report: GateReport) -> list[str]:
    """Workflow commands (``::warning file=...,line=...::msg``) for concerns that name a file and line."""
    return [f"::{a.level} file={_escape_property(a.file)},line={a.line},title={_escape_property(a.title)}::"
            f"{_escape_data(a.message)}" for a in report.annotations]


def write_outputs(path: Path, values: Mapping[str, Any]) -> None:
    """Append step outputs to $GITHUB_OUTPUT (multi-line values in the heredoc form GitHub documents)."""
    with path.open("a", encoding="utf-8") as f:
        for key, value in values.items():
            text = "" if value is None else str(value)
            if "\n" in text:
                delim = "ghadelimiter_" + os.urandom(8).hex()
                f.write(f"{key}<<{delim}\n{text}\n{delim}\n")
            else:
                f.write(f"{key}={text}\n")


def publish(report: GateReport, gh: GitHubEnv, out=None) -> None:
    """Tell GitHub: step summary, outputs, annotations, the PR comment and the label.

    A failing GitHub call is reported (as a warning annotation and in
    ``report.github``) and never changes the decision or the exit code.
    """
    import sys

    out = out or sys.stdout
    markdown = render_markdown(report)
    if gh.step_summary:
        with gh.step_summary.open("a", encoding="utf-8") as f:
            f.write(markdown + "\n")
        report.github.append("step summary written")
    if gh.output:
        write_outputs(gh.output, {"decision": report.decision, "winner": report.winner or "",
                                  "escalation": report.escalation or "", "run": report.run,
                                  "exit-code": report.exit_code, "stopped": report.stopped or ""})
        report.github.append("outputs written")
    for line in annotation_lines(report):
        print(line, file=out)
    pr = report.pull_request
    if pr is None or pr.number is None:
        report.github.append("no pull request in this event: no comment or label")
        return
    client = gh.client()
    if client is None:
        report.github.append("no GITHUB_TOKEN: no comment or label (give the job `pull-requests: write` and pass "
                             "the token)")
        return
    from .github import GitHubError

    with client:
        steps = []
        if report.comment:
            steps.append(("comment", lambda: client.upsert_comment(pr.number, markdown, MARKER)))
        if report.decision == "escalated":
            steps.append(("label", lambda: client.add_label(pr.number, report.label) or "added " + report.label))
        elif report.decision in ("accepted", "rejected"):
            steps.append(("label", lambda: client.remove_label(pr.number, report.label)))
        for what, step in steps:
            try:
                report.github.append(f"{what}: {step()}")
            except GitHubError as exc:
                why = f"could not update the pull request's {what}: {exc}"
                if exc.status in (403, 404):
                    why += (" (a pull request from a fork gets a read-only token: see the README's "
                            "'Pull requests from forks')")
                report.github.append(why)
                print(f"::warning title=crossreview::{_escape_data(why)}", file=out)


def _client_or_fail(gh: GitHubEnv, flag: str):
    client = gh.client()
    if client is None:
        raise UsageError(f"{flag} calls GitHub's API: it needs GITHUB_TOKEN and GITHUB_REPOSITORY (the job's token, "
                         "passed as an environment variable)")
    return client


def publish_saved(path: Path, expect_head: str | None, label: str | None = None,
                  environ: Mapping[str, str] | None = None, out=None) -> GateReport:
    """Post a report a gate run saved (``--report``) from a privileged workflow_run job.

    For pull requests from forks: the unprivileged pull_request run judges and
    uploads its report; this posts the comment and label with the base
    repository's token, without checking out any of the pull request's code.
    The report is untrusted text: its pull request must have ``expect_head``
    (the workflow_run's head sha) as its head, the label comes from here, not
    from the report, and everything shown is escaped as any reviewer text is.
    """
    gh = GitHubEnv.from_environ(environ if environ is not None else os.environ)
    if not gh.active:
        raise UsageError("--publish posts to GitHub: run it in a workflow (GITHUB_ACTIONS=true)")
    try:
        report = GateReport.model_validate_json(path.read_text())
    except OSError as exc:
        raise UsageError(f"--publish {path}: cannot be read ({exc.strerror}); download the gate's artifact first") from None
    except ValueError as exc:
        raise UsageError(f"--publish {path}: not a gate report ({str(exc).splitlines()[0]}); it is written by "
                         "`crossreview gate --report FILE`") from None
    pr = report.pull_request
    if pr is None or pr.number is None:
        raise UsageError(f"--publish {path}: the report names no pull request")
    if not expect_head:
        raise UsageError("--publish needs --expect-head SHA (github.event.workflow_run.head_sha): the report is "
                         "untrusted until its pull request is checked")
    client = _client_or_fail(gh, "--publish")
    from .github import GitHubError

    try:
        with client:
            actual = client.pull_head(pr.number)
    except GitHubError as exc:
        raise UsageError(f"--publish: reading pull request #{pr.number} failed: {exc}") from None
    if actual != expect_head or report.head != expect_head:
        raise UsageError(f"--publish: refusing: pull request #{pr.number}'s head is {actual[:12]}, the run judged "
                         f"{report.head[:12]}, the workflow_run says {expect_head[:12]}")
    report.label = label or GateConfig().label
    report.comment = True
    report.annotations = []  # they belong to the run that judged; this one only posts
    publish(report, gh, out)
    return report


# --- human decisions made on GitHub ---------------------------------------------


class HumanEvent(BaseModel):
    """A human's decision on a pull request, read from a review or close event."""

    number: int
    action: str
    """pick (approved or merged) or reject (changes requested or closed unmerged)."""
    by: str
    at: datetime
    what: str


MAINTAINERS = frozenset({"OWNER", "MEMBER", "COLLABORATOR"})
"""Review authors (GitHub's ``author_association``) whose review decides an escalation. On a public
repository anyone may submit an approving review; only these people's reviews count."""


def human_event(gh: GitHubEnv) -> HumanEvent | None:
    """The decision in a pull_request_review (submitted) or pull_request (closed) event; None if it is none.

    A review decides only when its author is a maintainer (:data:`MAINTAINERS`).
    """
    ev, pr = gh.event, gh.event.get("pull_request") or {}
    number = pr.get("number")
    if number is None:
        raise UsageError("--record-human needs a pull_request_review or pull_request event (GITHUB_EVENT_PATH); "
                         f"this event ({gh.event_name or 'none'}) names no pull request")
    if gh.event_name == "pull_request_review" and ev.get("action") == "submitted":
        review = ev.get("review") or {}
        state = (review.get("state") or "").lower()
        action = {"approved": "pick", "changes_requested": "reject"}.get(state)
        if action is None:
            return None  # a comment-only review decides nothing
        if (review.get("author_association") or "").upper() not in MAINTAINERS:
            return None  # anyone can review a public repository's pull request
        return HumanEvent(number=number, action=action, by=(review.get("user") or {}).get("login") or "?",
                          at=review.get("submitted_at") or utcnow(), what=f"review: {state}")
    if gh.event_name in ("pull_request", "pull_request_target") and ev.get("action") == "closed":
        merged = bool(pr.get("merged"))
        who = (pr.get("merged_by") or {}).get("login") if merged else (ev.get("sender") or {}).get("login")
        return HumanEvent(number=number, action="pick" if merged else "reject", by=who or "?",
                          at=pr.get("closed_at") or utcnow(), what="merged" if merged else "closed unmerged")
    return None


def _not_a_maintainer(gh: GitHubEnv) -> str | None:
    """Why a deciding review does not count, if its author is no maintainer (else None)."""
    review = gh.event.get("review") or {}
    state = (review.get("state") or "").lower()
    assoc = (review.get("author_association") or "NONE").upper()
    if gh.event_name != "pull_request_review" or state not in ("approved", "changes_requested") or assoc in MAINTAINERS:
        return None
    who = (review.get("user") or {}).get("login") or "?"
    return f"{who} is no maintainer here ({assoc}): only a review by an owner, member or collaborator decides"


def parse_marker(body: str) -> dict[str, Any] | None:
    """The hidden facts the gate left in its pull request comment."""
    start = body.rfind(MARKER)
    if start < 0:
        return None
    end = body.find("-->", start)
    try:
        meta = json.loads(body[start + len(MARKER):end].strip())
    except ValueError:
        return None
    return meta if isinstance(meta, dict) else None


@dataclass
class RecordOutcome:
    """What `--record-human` did, for the terminal."""

    recorded: bool
    message: str
    escalation: str | None = None


def record_human(ledger_location: Path | str, environ: Mapping[str, str] | None = None) -> RecordOutcome:
    """Record the human's decision on an escalated pull request in the ledger.

    The escalation is found through the gate's comment on the pull request
    (its hidden facts name the escalation and when it was opened). If this
    ledger does not hold the escalation (each CI run has its own), a row for it
    is written from those facts, so `crossreview merge` can fold the gate's
    ledger and this one together later.
    """
    gh = GitHubEnv.from_environ(environ if environ is not None else os.environ)
    if not gh.active:
        raise UsageError("--record-human reads a GitHub Actions event; run it in a workflow on "
                         "pull_request_review and pull_request (closed) events")
    event = human_event(gh)
    if event is None:
        untrusted = _not_a_maintainer(gh)
        why = (f"review: {untrusted}" if untrusted else f"event {gh.event_name}/{gh.event.get('action')}: not a "
               "decision (approve, request changes, merge or close)")
        return RecordOutcome(False, f"{why}; nothing recorded")
    client = _client_or_fail(gh, "--record-human")
    from .github import GitHubError

    try:
        with client:
            comment = client.find_comment(event.number, MARKER)
            meta = parse_marker(comment["body"]) if comment else None
            if not meta or not meta.get("escalation"):
                return RecordOutcome(False, f"pull request #{event.number}: the last gate run needed no human; "
                                     "nothing recorded")
            if meta.get("human"):
                return RecordOutcome(False, f"escalation {meta['escalation']} was already decided on GitHub "
                                     f"({meta['human']}, by a review the gate took)", meta["escalation"])
            reviewed = (gh.event.get("review") or {}).get("commit_id")
            if gh.event_name == "pull_request_review" and reviewed and meta.get("head") and reviewed != meta["head"]:
                return RecordOutcome(False, f"review of {reviewed[:12]}, but the gate escalated {meta['head'][:12]}: "
                                     "an approval of another commit decides nothing; nothing recorded",
                                     meta["escalation"])
            outcome = record_decision(ledger_location, meta, event)
            if not outcome.recorded:
                return outcome
            try:
                client.remove_label(event.number, (meta.get("label") or GateConfig().label))
            except GitHubError:
                pass  # the decision is recorded; a label left behind is cosmetic
    except GitHubError as exc:
        raise UsageError(f"reading pull request #{event.number}'s comments failed: {exc}") from None
    return outcome


def record_decision(ledger_location: Path | str, meta: dict[str, Any], event: HumanEvent) -> RecordOutcome:
    """Write a human's decision on GitHub into the ledger, for the escalation the gate's comment names.

    If this ledger does not hold the escalation (each CI run has its own), a
    row for it is written from the comment's facts first.
    """
    from .ledger import Ledger

    esc_id = meta["escalation"]
    ledger = Ledger(ledger_location)
    row = ledger.get_escalation(esc_id)
    if row and row["decided"]:
        return RecordOutcome(False, f"escalation {esc_id} was already decided ({row['action']} by "
                             f"{row['decided_by']})", esc_id)
    if row is None:
        ledger.import_escalation(esc_id, meta)
    human = HumanDecision(action=event.action, pick=PR_AGENT if event.action == "pick" else None,
                          by=f"github:{event.by}", decided_at=event.at,
                          shown_at=datetime.fromisoformat(meta["created"]))
    if not ledger.decide_escalation(esc_id, human):  # another job recorded it just now
        row = ledger.get_escalation(esc_id) or {}
        return RecordOutcome(False, f"escalation {esc_id} was already decided ({row.get('action')} by "
                             f"{row.get('decided_by')})", esc_id)
    ledger.finish_by_human(meta["task_run"], human, f"{event.what} by {event.by} on GitHub ({esc_id})")
    minutes = (event.at - datetime.fromisoformat(meta["created"])).total_seconds() / 60
    return RecordOutcome(True, f"recorded: {event.what} by {event.by}, {minutes:.1f} minutes after escalation "
                         f"{esc_id}", esc_id)


def review_outcome(gh: GitHubEnv, pr: PullRequest, head: str, ledger_location: Path | str) -> GateReport | None:
    """On a pull_request_review event: the gate's decision for ``head``, settled by the review if it can be.

    Without this, an escalated pull request's check stayed red whatever a
    human said, and re-running the gate only escalated it again. The gate's
    comment holds its last decision and the head it judged. When that head is
    ``head``:

    - an escalation is settled by a maintainer's review of exactly ``head``:
      approved -> accepted (the check turns green), changes requested ->
      rejected; the decision goes to the ledger as `--record-human` records it;
    - any other review (a comment, an older commit, someone who is not a
      maintainer) leaves the decision as it was, without judging again.

    None when the gate never judged ``head`` (or GitHub cannot be read): judge it as usual.
    """
    client = gh.client()
    if client is None or pr.number is None:
        return None
    from .github import GitHubError

    try:
        with client:
            comment = client.find_comment(pr.number, MARKER)
    except GitHubError:
        return None
    meta = parse_marker(comment["body"]) if comment else None
    if not meta or meta.get("head") != head or not meta.get("run") or not meta.get("task_run"):
        return None
    review = gh.event.get("review") or {}
    who = (review.get("user") or {}).get("login") or "?"
    report = GateReport(
        run=meta["run"], task_run=meta["task_run"], task=meta.get("task") or "", decision=meta.get("decision") or "error",
        winner=PR_AGENT if meta.get("decision") == "accepted" else None, escalation=meta.get("escalation"),
        reason=meta.get("reason") or "", base="", head=head, merge_base="", pull_request=pr,
        label=meta.get("label") or GateConfig().label, comment=False, human=meta.get("human"),
        # What the gate said of the escalation (older comments: nothing, then "the reviewers disagree").
        tampering_alone=[a for a in meta.get("tampering_alone") or [] if isinstance(a, str)]
        if isinstance(meta.get("tampering_alone"), list) else [],
        cause=meta["cause"][:200] if isinstance(meta.get("cause"), str) else "",
        # The review does not judge again: the config that judged this head is the one the comment names.
        config_source=meta["config"] if isinstance(meta.get("config"), str) else None,
        # A review that settles nothing keeps the check as the gate left it: cut short by a cap, it stays red.
        stopped=meta["stopped"][:500] if isinstance(meta.get("stopped"), str) else None,
    )
    event = human_event(gh)
    settles = (meta.get("decision") == "escalated" and meta.get("escalation") and not meta.get("human")
               and event is not None and review.get("commit_id") == head)
    if not settles:
        if event is None:
            why = _not_a_maintainer(gh) or "it decides nothing"
        elif review.get("commit_id") != head:
            why = f"it reviews {str(review.get('commit_id') or '?')[:12]}, not this head"
        else:
            why = f"the gate's decision was {meta.get('decision')}, nothing waits for a human"
        report.github.append(f"review by {who} ({(review.get('state') or '?').lower()}): the gate's decision on "
                             f"{head[:12]} stands, {why}")
        return report
    recorded = record_decision(ledger_location, meta, event)
    report.decision = "accepted" if event.action == "pick" else "rejected"
    report.winner = PR_AGENT if event.action == "pick" else None
    report.human = f"github:{event.by}"
    report.reason = (f"{'approved' if event.action == 'pick' else 'changes requested'} by {event.by} in a review of "
                     f"{head[:12]}, settling escalation {meta['escalation']} ({meta.get('reason') or 'split'})")
    report.comment = True
    report.github.append(recorded.message)
    return report
