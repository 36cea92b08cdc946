"""``command:<template>`` agents and reviewers: any program, run in a confined directory.

Templates may use {python} (the interpreter crossreview runs on), {suite}
(the folder of the suite's crossreview.toml), {task_dir}, {instruction} and
{worktree}; values are shell-quoted.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from pydantic import ValidationError

from ..agents import DuplicateKeyError, ReviewRequest, SpecError, Workspace, expand_template, load_json_object, validation_problems
from ..hookspecs import hookimpl
from ..models import AgentSpec, ReviewVerdictOutput, SolveResult, Usage
from ..sandbox import agent_policy, command_paths, reviewer_policy, run_confined

_TAIL = 4000


class ReviewerOutputError(Exception):
    """A reviewer's output that is not a verdict; recorded as an abstention, never an approval.

    ``usage`` is what the failed review spent, as the review node records it: a
    command that ran may have called a model we cannot see, so its cost is
    unknown, never 0 (as for a command agent that reports nothing).
    """

    def __init__(self, message: str, usage: Usage | None = None):
        super().__init__(message)
        self.usage = usage


def _template(spec: AgentSpec, what: str) -> str:
    if not spec.arg or not spec.arg.strip():
        raise SpecError(f"{what} {spec.name}: 'command:' needs a command, e.g. command:./solve.sh")
    return spec.arg


class CommandAgent:
    """Runs a program in the candidate's worktree; whatever it changes there is the candidate."""

    def __init__(self, spec: AgentSpec):
        self.spec = spec
        self.template = _template(spec, "agent")

    def solve(self, workspace: Workspace) -> SolveResult:
        """Run the command with the task in CROSSREVIEW_* variables."""
        task = workspace.task
        with tempfile.TemporaryDirectory(prefix="crossreview-instruction-") as tmp:
            instruction_file = task.instruction_file
            if workspace.instruction != task.instruction:
                # Guidance from a human was added: the agent reads the amended prompt.
                instruction_file = Path(tmp) / "instruction.md"
                instruction_file.write_text(workspace.instruction)
            values = {
                "suite": str(workspace.suite_dir),
                "task_dir": str(task.path),
                "instruction": str(instruction_file),
                "worktree": str(workspace.path),
            }
            usage_file = Path(tmp) / "usage.json"
            env = {
                "CROSSREVIEW_USAGE_FILE": str(usage_file),
                "CROSSREVIEW_INSTRUCTION_FILE": str(instruction_file),
                "CROSSREVIEW_TASK_DIR": str(task.path),
                "CROSSREVIEW_TASK_ID": task.id,
                "CROSSREVIEW_AGENT": workspace.agent.name,
                "CROSSREVIEW_SUITE_DIR": str(workspace.suite_dir),
                "CROSSREVIEW_WORKTREE": str(workspace.path),
                **workspace.env,
            }
            cmd = expand_template(self.template, values)
            # The sandbox: the worktree and this scratch folder (usage file,
            # amended instruction) writable; the task's tests/ (unless
            # visible), solution/ and holdout/ masked.
            policy = agent_policy(workspace).allow_write(tmp).allow_read(*command_paths(cmd))
            proc = run_confined(cmd, cwd=workspace.path, timeout=workspace.timeout, env=env, shell=True, policy=policy)
            usage = read_usage(usage_file)
        log = (proc.stdout + proc.stderr)[-_TAIL:]
        if proc.timed_out:
            return SolveResult(status="timeout", error=f"killed after {workspace.timeout:g}s", log=log, usage=usage)
        if proc.returncode != 0:
            tail = proc.stderr.strip().splitlines()[-1:] or [""]
            return SolveResult(status="error", error=f"exited {proc.returncode}: {tail[0][:300]}", log=log, usage=usage)
        return SolveResult(log=log, usage=usage)


def read_usage(path: Path) -> Usage:
    """What a command says it spent in $CROSSREVIEW_USAGE_FILE; unknown cost if it says nothing.

    A command may call a model we cannot see, so silence is not "free".
    """
    try:
        data = json.loads(path.read_text())
        return Usage.model_validate({"calls": 0, **data})
    except (OSError, ValueError, ValidationError):
        return Usage(cost=None)


def parse_verdict(stdout: str) -> ReviewVerdictOutput:
    """The verdict a reviewer printed: the whole output, or its last line that is a JSON object."""
    text = stdout.strip()
    candidates = [text] + [line.strip() for line in reversed(text.splitlines()) if line.strip().startswith("{")]
    last_error = "no output"
    for chunk in candidates:
        if not chunk:
            continue
        try:
            data = load_json_object(chunk)
        except DuplicateKeyError as exc:  # not a line to skip for an earlier verdict: the reviewer contradicts itself
            raise ReviewerOutputError(f"verdict JSON is not usable: {exc}") from None
        except ValueError as exc:
            last_error = str(exc)
            continue
        try:
            return ReviewVerdictOutput.model_validate(data)
        except ValidationError as exc:
            raise ReviewerOutputError(
                f"verdict JSON is not valid: {validation_problems(exc)}. Expected "
                '{"verdict": "approve"|"reject", "confidence": 0..1, "concerns": [...]}'
            ) from None
    raise ReviewerOutputError(
        f"printed no verdict: {last_error}. Expected one JSON object like "
        '{"verdict": "approve", "confidence": 0.8, "concerns": []}'
    )


class CommandReviewer:
    """Runs a program that reads the candidate from files and prints a JSON verdict."""

    def __init__(self, spec: AgentSpec):
        self.spec = spec
        self.template = _template(spec, "reviewer for")

    def review(self, request: ReviewRequest) -> ReviewVerdictOutput:
        """Write the diff and test outcomes to files, run the command, parse its verdict."""
        work = request.workdir
        work.mkdir(parents=True, exist_ok=True)
        diff_file = work / "candidate.diff"
        diff_file.write_text(request.diff)
        tests_file = work / "tests.json"
        tests_file.write_text(json.dumps(request.tests.summary_dict() if request.tests else None, indent=1))
        instruction_file = work / "instruction.md"
        instruction_file.write_text(request.instruction)
        usage_file = work / "usage.json"
        usage_file.unlink(missing_ok=True)  # a file left by an earlier review must not be read as this one's
        env = {
            "CROSSREVIEW_USAGE_FILE": str(usage_file),
            "CROSSREVIEW_DIFF_FILE": str(diff_file),
            "CROSSREVIEW_TESTS_FILE": str(tests_file),
            "CROSSREVIEW_INSTRUCTION_FILE": str(instruction_file),
            "CROSSREVIEW_TASK_ID": request.task.id,
            "CROSSREVIEW_TASK_DIR": str(request.task.path),
            "CROSSREVIEW_CANDIDATE": request.candidate_label,
            "CROSSREVIEW_SUITE_DIR": str(request.suite_dir),
        }
        values = {
            "suite": str(request.suite_dir),
            "task_dir": str(request.task.path),
            "instruction": str(instruction_file),
            "worktree": str(work),
        }
        cmd = expand_template(self.template, values)
        proc = run_confined(cmd, cwd=work, timeout=request.timeout, env=env, shell=True, policy=reviewer_policy(request).allow_read(*command_paths(cmd)))
        try:
            if proc.timed_out:
                raise ReviewerOutputError(f"timed out after {request.timeout:g}s")
            if proc.returncode != 0:
                tail = (proc.stderr.strip().splitlines() or [""])[-1][:300]
                raise ReviewerOutputError(f"exited {proc.returncode}: {tail}")
            verdict = parse_verdict(proc.stdout)
        except ReviewerOutputError as exc:
            exc.usage = read_usage(usage_file)  # it ran: what it says it spent, else unknown, not free
            raise
        if verdict.usage is None:
            verdict.usage = read_usage(usage_file)  # unknown unless the command wrote it
        return verdict


@hookimpl
def crossreview_register_agents(register):
    register("command", CommandAgent, help="command:<template> runs any program in the worktree")


@hookimpl
def crossreview_register_reviewers(register):
    register("command", CommandReviewer, help="command:<template> runs a program that prints a JSON verdict")
