"""command: agents and reviewers (real subprocesses in real worktrees), and agent specs."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from crossreview.agents import (
    ReviewRequest,
    SpecError,
    Workspace,
    build_agent,
    build_reviewer,
    parse_agents,
    parse_spec,
    pair_reviewers,
)
from crossreview.default_plugins.command import (
    CommandAgent,
    CommandReviewer,
    ReviewerOutputError,
    parse_verdict,
)
from crossreview.models import AgentSpec, Task, TestOutcome, TestReport
from crossreview.plugins import new_plugin_manager
from crossreview.worktrees import create_worktree, prepare_base, take_diff, worktrees_root

# --- parse_verdict ---------------------------------------------------------------


def test_parse_verdict_whole_json():
    out = parse_verdict('{"verdict": "approve", "confidence": 0.8, "concerns": ["naming"], "prefers": "b"}\n')
    assert out.verdict == "approve"
    assert out.confidence == 0.8
    assert out.concerns == ["naming"]
    assert out.prefers == "b"


def test_parse_verdict_pretty_printed_whole_output():
    out = parse_verdict(json.dumps({"verdict": "reject", "concerns": ["x"]}, indent=2))
    assert out.verdict == "reject" and out.confidence == 0.5


def test_parse_verdict_last_json_line_after_noise():
    stdout = (
        "Loading model...\n"
        '{"progress": "not a verdict, and earlier"}\n'
        "Reviewing the diff: looks fine\n"
        '{"verdict": "reject", "confidence": 0.3, "concerns": ["no tests for edge cases"]}\n'
        "bye\n"
    )
    out = parse_verdict(stdout)
    assert out.verdict == "reject"
    assert out.confidence == 0.3
    assert out.concerns == ["no tests for edge cases"]


def test_parse_verdict_rejects_non_json():
    with pytest.raises(ReviewerOutputError) as info:
        parse_verdict("LGTM, ship it!")
    msg = str(info.value)
    assert "not JSON" in msg
    assert "Expected one JSON object" in msg and '"verdict"' in msg


def test_parse_verdict_rejects_empty_output():
    with pytest.raises(ReviewerOutputError, match="no output.*Expected one JSON object"):
        parse_verdict("   \n")


def test_parse_verdict_rejects_a_json_list():
    with pytest.raises(ReviewerOutputError) as info:
        parse_verdict('[{"verdict": "approve"}]')
    msg = str(info.value)
    assert "expected a JSON object, got list" in msg
    assert "Expected one JSON object" in msg


def test_parse_verdict_rejects_verdict_maybe():
    with pytest.raises(ReviewerOutputError) as info:
        parse_verdict('{"verdict": "maybe", "confidence": 0.5}')
    msg = str(info.value)
    assert "verdict:" in msg and "'approve' or 'reject'" in msg
    assert '"approve"|"reject"' in msg


def test_parse_verdict_rejects_confidence_above_one():
    with pytest.raises(ReviewerOutputError) as info:
        parse_verdict('{"verdict": "approve", "confidence": 2}')
    msg = str(info.value)
    assert "confidence:" in msg and "less than or equal to 1" in msg
    assert "0..1" in msg


def test_parse_verdict_rejects_unknown_keys_and_missing_verdict():
    with pytest.raises(ReviewerOutputError, match="verdict: Field required"):
        parse_verdict('{"confidence": 0.5}')
    with pytest.raises(ReviewerOutputError, match="approved"):
        parse_verdict('{"verdict": "approve", "approved": true}')


# --- CommandAgent in a real worktree ------------------------------------------------


@pytest.fixture
def task(tmp_path) -> Task:
    tdir = tmp_path / "suite" / "demo"
    (tdir / "repo").mkdir(parents=True)
    (tdir / "repo" / "main.py").write_text("def answer():\n    return 41\n")
    (tdir / "tests").mkdir()
    (tdir / "tests" / "test_main.py").write_text("def test_x():\n    assert True\n")
    (tdir / "instruction.md").write_text("Make answer() return 42.\n")
    return Task(id="demo", path=tdir, instruction="Make answer() return 42.\n", repo_path=tdir / "repo")


@pytest.fixture
def worktree(tmp_path, task):
    state = tmp_path / "state"
    base = prepare_base(task, state)
    path = create_worktree(state, base, worktrees_root(state) / "r1" / task.id / "a")
    return path, base


def workspace(task: Task, path: Path, timeout: float = 30, name: str = "a", spec: str = "command:x",
              instruction: str | None = None) -> Workspace:
    return Workspace(
        path=path,
        task=task,
        agent=AgentSpec(name=name, spec=spec),
        instruction=task.instruction if instruction is None else instruction,
        timeout=timeout,
        suite_dir=task.path.parent,
    )


def _process_gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def _wait_gone(pid: int, seconds: float = 5) -> bool:
    deadline = time.monotonic() + seconds
    while not _process_gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return _process_gone(pid)


def test_command_agent_solves_in_the_worktree_with_env(task, worktree, tmp_path, unsandboxed):
    path, base = worktree
    env_out = tmp_path / "env.txt"
    template = (
        "sed -i 's/41/42/' main.py && echo hello > new_file.txt && pwd > "
        + str(tmp_path / "cwd.txt")
        + " && printf '%s\\n' \"$CROSSREVIEW_INSTRUCTION_FILE\" \"$CROSSREVIEW_TASK_DIR\" "
        "\"$CROSSREVIEW_TASK_ID\" \"$CROSSREVIEW_AGENT\" \"$CROSSREVIEW_WORKTREE\" > "
        + str(env_out)
        + " && echo {python} > "
        + str(tmp_path / "python.txt")
        + " && echo {task_dir} > "
        + str(tmp_path / "task_dir.txt")
    )
    spec = AgentSpec(name="fast", spec="command:" + template)
    agent = CommandAgent(spec)
    res = agent.solve(workspace(task, path, name="fast", spec=spec.spec))
    assert res.status == "ok", res
    assert res.error is None
    assert (path / "main.py").read_text() == "def answer():\n    return 42\n"
    assert (path / "new_file.txt").read_text() == "hello\n"
    assert (tmp_path / "cwd.txt").read_text().strip() == str(path)
    lines = env_out.read_text().splitlines()
    assert lines == [
        str(task.path / "instruction.md"),
        str(task.path),
        "demo",
        "fast",
        str(path),
    ]
    assert (tmp_path / "python.txt").read_text().strip() == sys.executable
    assert (tmp_path / "task_dir.txt").read_text().strip() == str(task.path)
    diff = take_diff(path, base.commit)
    assert sorted(diff.files) == ["main.py", "new_file.txt"]


def test_command_agent_reads_amended_instruction(task, worktree, tmp_path, unsandboxed):
    path, _ = worktree
    agent = CommandAgent(AgentSpec(name="a", spec=f'command:cat "$CROSSREVIEW_INSTRUCTION_FILE" > {tmp_path}/got.md'))
    amended = task.instruction + "\nHuman guidance: keep it simple.\n"
    res = agent.solve(workspace(task, path, instruction=amended))
    assert res.status == "ok", res
    assert (tmp_path / "got.md").read_text() == amended
    assert task.instruction_file.read_text() == task.instruction  # the task folder is not touched


def test_command_agent_nonzero_exit_is_an_error(task, worktree):
    path, _ = worktree
    agent = CommandAgent(AgentSpec(name="a", spec="command:echo working; echo 'cannot find model' >&2; exit 3"))
    res = agent.solve(workspace(task, path))
    assert res.status == "error"
    assert res.error.startswith("exited 3")
    assert "cannot find model" in res.error
    assert "working" in res.log


def test_command_agent_timeout_kills_the_whole_tree(task, worktree, tmp_path, unsandboxed):
    path, _ = worktree
    pidfile = tmp_path / "child.pid"
    agent = CommandAgent(AgentSpec(name="a", spec=f"command:sleep 60 & echo $! > {pidfile}; sleep 60"))
    started = time.monotonic()
    res = agent.solve(workspace(task, path, timeout=1.5))
    assert time.monotonic() - started < 10
    assert res.status == "timeout"
    assert "1.5s" in res.error
    pid = int(pidfile.read_text())
    assert _wait_gone(pid), f"the agent's background child {pid} survived the timeout"


def test_command_agent_that_leaves_a_background_process_is_not_a_timeout(task, worktree, tmp_path, unsandboxed):
    # the agent finishes at once but leaves a server running: its work is done,
    # the leftover process is killed, and nobody waits for the timeout
    path, _ = worktree
    pidfile = tmp_path / "bg.pid"
    agent = CommandAgent(AgentSpec(name="a", spec=f"command:sleep 30 & echo $! > {pidfile}; echo 42 > done.txt"))
    started = time.monotonic()
    res = agent.solve(workspace(task, path, timeout=4))
    elapsed = time.monotonic() - started
    assert res.status == "ok", res
    assert elapsed < 3, f"waited {elapsed:.1f}s for a command that finished at once"
    assert (path / "done.txt").read_text() == "42\n"
    assert _wait_gone(int(pidfile.read_text()))


def test_command_agent_needs_a_command():
    with pytest.raises(SpecError, match="needs a command"):
        CommandAgent(AgentSpec(name="a", spec="command:"))
    with pytest.raises(SpecError, match="needs a command"):
        CommandReviewer(AgentSpec(name="a", spec="command:   "))


# --- CommandReviewer ------------------------------------------------------------------

REVIEWER_SCRIPT = """\
import json, os, sys
diff = open(os.environ["CROSSREVIEW_DIFF_FILE"]).read()
tests = json.load(open(os.environ["CROSSREVIEW_TESTS_FILE"]))
instruction = open(os.environ["CROSSREVIEW_INSTRUCTION_FILE"]).read()
ok = bool(tests) and tests["all_passed"] and "return 42" in diff and "42" in instruction
print("reviewing", os.environ["CROSSREVIEW_CANDIDATE"], "of", os.environ["CROSSREVIEW_TASK_ID"])
concerns = [] if ok else ["tests: %s" % (tests and "%d/%d" % (tests["passed"], tests["total"]))]
print(json.dumps({"verdict": "approve" if ok else "reject", "confidence": 0.9,
                  "concerns": concerns, "prefers": os.environ["CROSSREVIEW_CANDIDATE"]}))
"""

GOOD_DIFF = """\
diff --git a/main.py b/main.py
--- a/main.py
+++ b/main.py
@@ -1,2 +1,2 @@
 def answer():
-    return 41
+    return 42
"""


def review_request(task: Task, tmp_path: Path, diff: str, tests: TestReport | None, timeout: float = 30):
    return ReviewRequest(
        task=task,
        reviewer=AgentSpec(name="b", spec="command:x"),
        candidate_label="candidate-1",
        instruction=task.instruction,
        diff=diff,
        files_changed=["main.py"],
        tests=tests,
        workdir=tmp_path / "review-work",
        suite_dir=task.path.parent,
        timeout=timeout,
    )


def passed_report() -> TestReport:
    return TestReport(outcomes=[TestOutcome(name="test_main::test_x", outcome="passed")], exit_code=0)


@pytest.fixture
def reviewer(task) -> CommandReviewer:
    (task.path.parent / "reviewer.py").write_text(REVIEWER_SCRIPT)
    return CommandReviewer(AgentSpec(name="b", spec="command:{python} {suite}/reviewer.py"))


def test_command_reviewer_approves_from_diff_and_tests(task, tmp_path, reviewer):
    out = reviewer.review(review_request(task, tmp_path, GOOD_DIFF, passed_report()))
    assert out.verdict == "approve"
    assert out.confidence == 0.9
    assert out.prefers == "candidate-1"
    assert (tmp_path / "review-work" / "candidate.diff").read_text() == GOOD_DIFF


def test_command_reviewer_rejects_failing_tests(task, tmp_path, reviewer):
    failing = TestReport(outcomes=[TestOutcome(name="t::a", outcome="passed"),
                                   TestOutcome(name="t::b", outcome="failed")], exit_code=1)
    out = reviewer.review(review_request(task, tmp_path, GOOD_DIFF, failing))
    assert out.verdict == "reject"
    assert out.concerns == ["tests: 1/2"]


def test_command_reviewer_untested_candidate(task, tmp_path, reviewer):
    out = reviewer.review(review_request(task, tmp_path, GOOD_DIFF, None))
    assert out.verdict == "reject"
    assert json.loads((tmp_path / "review-work" / "tests.json").read_text()) is None


def test_command_reviewer_reports_what_it_spent_as_agents_do(task, tmp_path):
    paid = ("printf '{\"tokens_in\": 300, \"tokens_out\": 40, \"cost\": 0.002}' > \"$CROSSREVIEW_USAGE_FILE\"; "
            "echo '{\"verdict\": \"approve\"}'")
    out = CommandReviewer(AgentSpec(name="b", spec=f"command:{paid}")).review(
        review_request(task, tmp_path, GOOD_DIFF, passed_report()))
    assert (out.usage.tokens_in, out.usage.tokens_out, out.usage.cost) == (300, 40, 0.002)
    # The next review in the same folder does not inherit that file.
    silent = CommandReviewer(AgentSpec(name="b", spec="command:echo '{\"verdict\": \"approve\"}'")).review(
        review_request(task, tmp_path, GOOD_DIFF, passed_report()))
    assert silent.usage.cost is None and silent.usage.tokens == 0


def test_command_reviewer_printing_garbage(task, tmp_path):
    r = CommandReviewer(AgentSpec(name="b", spec="command:echo 'Looks good to me!'"))
    with pytest.raises(ReviewerOutputError, match="printed no verdict") as failed:
        r.review(review_request(task, tmp_path, GOOD_DIFF, passed_report()))
    assert failed.value.usage is not None and failed.value.usage.cost is None  # ran: cost unknown, not $0


def test_command_reviewer_failing_command(task, tmp_path):
    r = CommandReviewer(AgentSpec(name="b", spec='command:echo \'{"verdict": "approve"}\'; echo "quota exceeded" >&2; exit 2'))
    with pytest.raises(ReviewerOutputError, match="exited 2: quota exceeded") as failed:
        r.review(review_request(task, tmp_path, GOOD_DIFF, passed_report()))
    # It may have called a model before failing (the "quota exceeded"): its abstention's cost is
    # unknown, as for a command agent that reports nothing, never recorded as free.
    assert failed.value.usage is not None and failed.value.usage.cost is None


def test_command_reviewer_timeout(task, tmp_path):
    r = CommandReviewer(AgentSpec(name="b", spec="command:sleep 30"))
    started = time.monotonic()
    with pytest.raises(ReviewerOutputError, match="timed out") as failed:
        r.review(review_request(task, tmp_path, GOOD_DIFF, passed_report(), timeout=1))
    assert failed.value.usage is not None and failed.value.usage.cost is None
    assert time.monotonic() - started < 10


def test_command_kinds_are_registered():
    pm = new_plugin_manager(load_entrypoints=False)
    assert isinstance(build_agent(AgentSpec(name="a", spec="command:true"), pm), CommandAgent)
    assert isinstance(build_reviewer(AgentSpec(name="a", spec="command:true"), pm), CommandReviewer)
    with pytest.raises(SpecError, match="unknown agent 'nosuch:x'.*command"):
        build_agent(AgentSpec(name="a", spec="nosuch:x"), pm)


# --- agent specs ---------------------------------------------------------------------


def test_parse_spec_named_and_default_names():
    assert parse_spec("oracle", 0) == AgentSpec(name="a", spec="oracle")
    assert parse_spec("noop", 2) == AgentSpec(name="c", spec="noop")
    assert parse_spec("fast=command:./solve.sh", 0) == AgentSpec(name="fast", spec="command:./solve.sh")
    assert parse_spec("  gpt=llm:openai/gpt-4o-mini ", 1) == AgentSpec(name="gpt", spec="llm:openai/gpt-4o-mini")


def test_parse_spec_kind_and_arg():
    s = parse_spec("x=llm:anthropic/claude-sonnet-4", 0)
    assert (s.name, s.kind, s.arg) == ("x", "llm", "anthropic/claude-sonnet-4")
    assert parse_spec("oracle", 0).arg is None


@pytest.mark.parametrize("text", [
    "command:FOO=1 ./solve.sh",
    "command:./solve.sh --mode=fast",
    "command:env A=B python -c 'x=1'",
    "llm:ollama/qwen2.5-coder:7b",
])
def test_command_specs_with_equals_and_colons_are_not_split(text):
    s = parse_spec(text, 1)
    assert s.name == "b"
    assert s.spec == text


def test_named_command_spec_with_equals_inside():
    s = parse_spec("fix=command:make FIX=1 solve", 0)
    assert s.name == "fix" and s.spec == "command:make FIX=1 solve"


def test_parse_spec_errors():
    with pytest.raises(SpecError, match="--agent '  ': the spec is empty"):
        parse_spec("  ", 0)
    with pytest.raises(SpecError, match="the spec after 'b=' is empty"):
        parse_spec("b=", 0)


def test_parse_agents_default_names_by_position():
    specs = parse_agents(["oracle", "noop", "command:./x.sh"])
    assert [(s.name, s.spec) for s in specs] == [("a", "oracle"), ("b", "noop"), ("c", "command:./x.sh")]
    specs = parse_agents(["mine=oracle", "noop"])
    assert [s.name for s in specs] == ["mine", "b"]


def test_parse_agents_duplicate_names():
    with pytest.raises(SpecError, match="two agents are named 'x'"):
        parse_agents(["x=oracle", "x=noop"])
    with pytest.raises(SpecError, match="two agents are named 'a'"):
        parse_agents(["oracle", "a=noop"])


def test_pair_reviewers_defaults():
    agents = parse_agents(["oracle", "noop", "command:./solve.sh", "llm:openai/gpt-4o-mini"])
    assert pair_reviewers(agents, []) == {
        "a": "tests",
        "b": "tests",
        "c": "tests",
        "d": "llm:openai/gpt-4o-mini",  # each model reviews with itself
    }


def test_pair_reviewers_named_and_unnamed():
    agents = parse_agents(["oracle", "noop", "llm:m1"])
    got = pair_reviewers(agents, ["b=command:./strict.sh --level=high", "command:FOO=1 ./review.sh"])
    assert got == {
        "a": "command:FOO=1 ./review.sh",
        "b": "command:./strict.sh --level=high",
        "c": "command:FOO=1 ./review.sh",
    }


def test_pair_reviewers_named_only():
    agents = parse_agents(["oracle", "llm:m1"])
    assert pair_reviewers(agents, ["a=llm:m2"]) == {"a": "llm:m2", "b": "llm:m1"}


def test_pair_reviewers_unknown_agent_name():
    agents = parse_agents(["oracle", "noop"])
    with pytest.raises(SpecError) as info:
        pair_reviewers(agents, ["z=tests"])
    msg = str(info.value)
    assert "'z'" in msg and "a, b" in msg


def test_pair_reviewers_two_unnamed():
    agents = parse_agents(["oracle", "noop"])
    with pytest.raises(SpecError, match="more than one unnamed --reviewer"):
        pair_reviewers(agents, ["tests", "command:./r.sh"])


@pytest.mark.parametrize("stdout", [
    '{"verdict": "reject", "confidence": 0.9, "verdict": "approve"}',
    '{"verdict": "approve", "confidence": 0.2}\n{"verdict": "reject", "verdict": "approve"}\n',
])
def test_parse_verdict_refuses_a_verdict_given_twice(stdout):
    # Whichever came last would win in a plain json.loads: a reviewer that says two things is unusable.
    with pytest.raises(ReviewerOutputError, match="appears twice"):
        parse_verdict(stdout)


def test_a_reviewer_cannot_flood_the_ledger_with_concerns():
    from crossreview.models import MAX_CONCERN_CHARS, MAX_CONCERNS, ReviewVerdictOutput

    out = ReviewVerdictOutput(verdict="reject", concerns=["x" * 10_000_000] + ["y"] * 100_000)
    assert len(out.concerns) == MAX_CONCERNS + 1
    assert len(out.concerns[0]) < MAX_CONCERN_CHARS + 20 and out.concerns[0].endswith("(cut)")
    assert out.concerns[-1] == f"… and {100_001 - MAX_CONCERNS} more concerns (cut)"
    assert ReviewVerdictOutput(verdict="approve", concerns=["fine"]).concerns == ["fine"]
