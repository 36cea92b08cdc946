"""Plugins: a third-party package installed for real, fake plugins through the real manager,
and every hook documented and exercised."""

from __future__ import annotations

import inspect
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pluggy
import pytest

from crossreview import hookspecs, plugins
from crossreview.hookspecs import hookimpl
from crossreview.models import Decision, HumanDecision
from crossreview.runner import RunOptions, run_suite

from conftest import BROKEN_PLUGINS, REPO_ROOT, fake_installed_plugin, make_task

SAMPLE = Path(__file__).parent / "sample_plugin"
HOOKS = sorted(n for n in dir(hookspecs) if n.startswith("crossreview_"))


@pytest.fixture(scope="session")
def sample_site(tmp_path_factory) -> Path:
    """tests/sample_plugin installed with pip into its own folder (put on PYTHONPATH to use it)."""
    target = tmp_path_factory.mktemp("site")
    src = tmp_path_factory.mktemp("src") / "sample_plugin"
    shutil.copytree(SAMPLE, src)  # building writes build/ beside the sources: keep it out of the repo
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(target), str(src)],
        check=True, capture_output=True, text=True,
    )
    return target


def test_installed_plugin_shows_in_plugins_and_is_usable(cli, suite, tmp_path, sample_site):
    env = {"PYTHONPATH": str(sample_site)}
    res = cli("plugins", "--json", env=env)
    assert res.returncode == 0, res.stderr
    doc = res.json()
    assert "sample" in doc["plugins"]
    assert {"name": "echo", "plugin": "sample", "help": "writes its argument to ECHO.txt"} in doc["agents"]
    assert "grumpy" in [r["name"] for r in doc["reviewers"]]
    assert "first-passing" in [r["name"] for r in doc["policies"]]
    # Built-ins are listed the same way, by the plugin module that registered them.
    assert {"oracle", "noop", "command"} <= {r["name"] for r in doc["agents"]}

    make_task(suite)
    res = cli("run", str(suite), "--agent", "echo:hi there", "--agent", "oracle",
              "--reviewer", "grumpy", "--policy", "first-passing", "--json", env=env)
    assert res.returncode == 0, res.stderr
    [t] = res.json()["tasks"]
    assert (t["decision"], t["winner"]) == ("accepted", "b")
    by = {c["agent"]: c for c in t["candidates"]}
    assert by["b"]["approvals"] == 0 and by["b"]["reviews"] == 1  # grumpy rejected, the policy didn't care
    human = cli("plugins", env=env)
    assert "echo" in human.stdout and "writes its argument" in human.stdout


def test_without_the_plugin_its_agent_is_unknown(cli, suite):
    make_task(suite)
    res = cli("run", str(suite), "--agent", "echo:hi")
    assert res.returncode == 2 and "unknown agent 'echo:hi'" in res.stderr and "known kinds" in res.stderr


def test_misspelled_hook_fails_loudly():
    class Typo:
        @hookimpl
        def crossreview_register_agent(self, register):  # missing the final s
            pass

    pm = plugins.new_plugin_manager(load_entrypoints=False)
    pm.register(Typo())
    with pytest.raises(pluggy.PluginValidationError, match="crossreview_register_agent"):
        pm.check_pending()


def test_every_hook_has_a_docstring():
    for name in HOOKS:
        doc = inspect.getdoc(getattr(hookspecs, name))
        assert doc and len(doc) > 30, f"hook {name} needs a docstring: it is the documentation"


class Recorder:
    """Implements every hook and records the calls; proves each hook is really called."""

    def __init__(self, tmp_path: Path):
        self.calls: dict[str, list[dict]] = {}
        self.tmp_path = tmp_path

    def _rec(self, name, **kw):
        self.calls.setdefault(name, []).append(kw)

    @hookimpl
    def crossreview_register_agents(self, register):
        from crossreview.default_plugins.offline_agents import OracleAgent

        self._rec("crossreview_register_agents")
        register("recorded", OracleAgent, help="oracle, registered by a test plugin")

    @hookimpl
    def crossreview_register_reviewers(self, register):
        from crossreview.default_plugins.tests_reviewer import TestsReviewer

        self._rec("crossreview_register_reviewers")
        register("recorded-tests", TestsReviewer, help="tests, registered by a test plugin")

    @hookimpl
    def crossreview_register_policies(self, register):
        from crossreview.policy import UNANIMOUS

        self._rec("crossreview_register_policies")
        register("recorded-unanimous", UNANIMOUS, help="unanimous under another name")

    @hookimpl
    def crossreview_escalation_opened(self, escalation, ledger):
        self._rec("crossreview_escalation_opened", escalation=escalation)

    @hookimpl(tryfirst=True)
    def crossreview_ask_human(self, escalation, interactive):
        self._rec("crossreview_ask_human", escalation=escalation, interactive=interactive)
        return HumanDecision(action="pick", pick="a", by="recorder")

    @hookimpl
    def crossreview_task_started(self, task, task_run):
        self._rec("crossreview_task_started", task=task, task_run=task_run)

    @hookimpl
    def crossreview_candidate_solved(self, task, task_run, candidate):
        self._rec("crossreview_candidate_solved", candidate=candidate)

    @hookimpl
    def crossreview_candidate_verified(self, task, task_run, candidate):
        self._rec("crossreview_candidate_verified", candidate=candidate)

    @hookimpl
    def crossreview_review_done(self, task, task_run, verdict):
        self._rec("crossreview_review_done", verdict=verdict)

    @hookimpl
    def crossreview_task_finished(self, result):
        self._rec("crossreview_task_finished", result=result)

    @hookimpl
    def crossreview_run_finished(self, run, results):
        self._rec("crossreview_run_finished", run=run, results=results)


def test_every_hook_is_called_through_the_real_plugin_manager(tmp_path, suite):
    """An in-process run with a recorder plugin: an escalation answered on the spot."""
    make_task(suite)
    pm = plugins.new_plugin_manager(load_entrypoints=False)
    rec = Recorder(tmp_path)
    pm.register(rec, name="recorder")
    pm.check_pending()
    reject = tmp_path / "reject.py"
    reject.write_text('print(\'{"verdict": "reject", "confidence": 0.5, "concerns": ["looks wrong"]}\')\n')
    opts = RunOptions(
        paths=[suite], agents=["a=recorded", "b=noop"],
        reviewers=["a=recorded-tests", f"b=command:{{python}} {reject}"],
        policy="recorded-unanimous", state_dir=tmp_path / "state", interactive=True,
    )
    # a passes its tests but b's reviewer rejects it: a split, answered on the spot by the recorder.
    outcome = run_suite(opts, pm)
    [result] = outcome.results
    assert set(rec.calls) == set(HOOKS), f"hooks never called: {set(HOOKS) - set(rec.calls)}"
    assert result.decision == "accepted" and result.winner == "a"
    [asked] = rec.calls["crossreview_ask_human"]
    assert asked["interactive"] is True and asked["escalation"].task == "add"
    assert rec.calls["crossreview_escalation_opened"][0]["escalation"].id == result.escalation
    assert {c["candidate"].agent for c in rec.calls["crossreview_candidate_verified"]} == {"a", "b"}
    assert all(c["candidate"].tests is not None for c in rec.calls["crossreview_candidate_verified"])
    assert {(c["verdict"].reviewer, c["verdict"].candidate) for c in rec.calls["crossreview_review_done"]} == {("a", "b"), ("b", "a")}
    assert rec.calls["crossreview_run_finished"][0]["results"] == outcome.results
    assert outcome.exit_code == 0


def test_every_hook_is_exercised_by_the_recorder():
    implemented = {n for n, _ in inspect.getmembers(Recorder) if n.startswith("crossreview_")}
    assert implemented == set(HOOKS), "a new hook needs a line in Recorder and an assertion above"


# --- a plugin author's mistakes: each one names the plugin and the fix --------

@pytest.mark.parametrize("name", sorted(BROKEN_PLUGINS))
def test_a_broken_installed_plugin_is_a_usage_error_naming_it(cli, tmp_path, name):
    source, said = BROKEN_PLUGINS[name]
    site = fake_installed_plugin(tmp_path, name, source)
    res = cli("plugins", env={"PYTHONPATH": os.pathsep.join([str(site), str(REPO_ROOT)])})
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    message = " ".join(res.stderr.split())
    for text in said:
        assert text in message, message


def test_a_broken_installed_plugin_under_pytest_is_a_usage_error_not_an_internal_error(tmp_path, suite):
    make_task(suite)
    site = fake_installed_plugin(tmp_path, "boom", BROKEN_PLUGINS["boom"][0])
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--crossreview", str(suite)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO_ROOT)]), "CI": "true"},
    )
    assert proc.returncode == 4, proc.stdout + proc.stderr  # pytest's usage error; 3 would read "waits for a human"
    assert "INTERNALERROR" not in proc.stdout + proc.stderr
    assert "plugin 'boom'" in proc.stderr and "cannot be imported" in proc.stderr


class Misbehaving:
    """Plugin kinds that break the return-value contract."""

    class NoneAgent:
        def __init__(self, spec):
            pass

        def solve(self, workspace):
            return None

    class DictReviewer:
        def __init__(self, spec):
            pass

        def review(self, request):
            return {"verdict": "approve"}

    class BrokenFactory:
        def __init__(self, spec):
            raise ValueError("needs MYCLI_HOME")

    class StrPolicy:
        def decide(self, candidates, verdicts):
            return "accepted"

    class GhostWinner:
        def decide(self, candidates, verdicts):
            return Decision(kind="accepted", winner="zed", reason="zed is great")

    @hookimpl
    def crossreview_register_agents(self, register):
        register("none-agent", self.NoneAgent)
        register("broken-factory", self.BrokenFactory)

    @hookimpl
    def crossreview_register_reviewers(self, register):
        register("dict-reviewer", self.DictReviewer)

    @hookimpl
    def crossreview_register_policies(self, register):
        register("str-policy", self.StrPolicy())
        register("ghost-winner", self.GhostWinner())


def _misbehaving_pm():
    pm = plugins.new_plugin_manager(load_entrypoints=False)
    pm.register(Misbehaving(), name="misbehaving")
    return pm


def test_an_agent_or_reviewer_returning_the_wrong_type_is_named_and_the_run_goes_on(tmp_path, suite):
    make_task(suite)
    opts = RunOptions(paths=[suite], agents=["none-agent", "oracle"], reviewers=["b=dict-reviewer", "a=tests"],
                      state_dir=tmp_path / "state", interactive=False)
    [result] = run_suite(opts, _misbehaving_pm()).results
    by = {c.agent: c for c in result.candidates}
    assert by["a"].status == "error"
    assert by["b"].tests_passed == by["b"].tests_total > 0  # the other candidate's work is there
    from crossreview.ledger import Ledger

    rows = {r["agent"]: r for r in Ledger(tmp_path / "state" / "ledger.db").candidate_rows(result.task_run)}
    assert "agent 'none-agent' of the plugin 'misbehaving'" in rows["a"]["error"]
    assert "returned NoneType, not a crossreview.models.SolveResult" in rows["a"]["error"]


def test_a_reviewer_returning_a_dict_abstains_with_a_clear_error(tmp_path, suite):
    from crossreview.ledger import Ledger

    make_task(suite)
    opts = RunOptions(paths=[suite], agents=["oracle", "noop"], reviewers=["b=dict-reviewer", "a=tests"],
                      state_dir=tmp_path / "state", interactive=False)
    outcome = run_suite(opts, _misbehaving_pm())
    [result] = outcome.results
    rows = Ledger(tmp_path / "state" / "ledger.db").verdict_rows(result.task_run)
    [on_a] = [v for v in rows if v["candidate"] == "a"]
    assert on_a["verdict"] == "abstain"
    assert "reviewer 'dict-reviewer' of the plugin 'misbehaving': review() returned dict" in on_a["error"]


def test_a_factory_that_raises_is_a_usage_error_naming_the_plugin(tmp_path, suite):
    from crossreview.runner import UsageError

    make_task(suite)
    opts = RunOptions(paths=[suite], agents=["broken-factory", "noop"], state_dir=tmp_path / "state")
    with pytest.raises(UsageError, match=r"the plugin 'misbehaving' could not build its 'broken-factory' agent: "
                                         r"ValueError: needs MYCLI_HOME"):
        run_suite(opts, _misbehaving_pm())


@pytest.mark.parametrize("policy, said", [
    ("str-policy", "returned str from decide(), not a crossreview.models.Decision"),
    ("ghost-winner", "accepted with winner 'zed', which is not one of this round's candidates"),
])
def test_a_policy_returning_garbage_errors_by_name_and_resume_keeps_the_candidates(tmp_path, suite, policy, said):
    make_task(suite)
    opts = RunOptions(paths=[suite], agents=["oracle", "noop"], policy=policy,
                      state_dir=tmp_path / "state", interactive=False)
    [result] = run_suite(opts, _misbehaving_pm()).results
    assert result.decision == "error"
    assert f"policy {policy!r} (plugin 'misbehaving')" in result.error and said in result.error
    assert f"crossreview resume {result.run}" in result.error


LOUD_PLUGIN = '''
from crossreview.hookspecs import hookimpl
from crossreview.models import ReviewVerdictOutput


class Grumpy:
    def __init__(self, spec):
        pass

    def review(self, request):
        return ReviewVerdictOutput(verdict="reject", confidence=0.9, concerns=["I never approve"])


@hookimpl
def crossreview_register_reviewers(register):
    register("grumpy", Grumpy, help="rejects everything")

'''
# Every hook that only tells a plugin what happened raises: a reporter with a bug.
LOUD_HOOKS = sorted(n for n in HOOKS if not n.startswith("crossreview_register_"))
LOUD_PLUGIN += "".join(
    f"\n@hookimpl\ndef {name}({', '.join(getattr(hookspecs, name).__code__.co_varnames[:getattr(hookspecs, name).__code__.co_argcount])}):\n"
    f"    raise RuntimeError('loud {name}')\n"
    for name in LOUD_HOOKS
)


def test_an_installed_plugin_whose_hooks_raise_is_named_in_a_warning_and_the_run_goes_on(cli, tmp_path, suite):
    # Two tasks, both escalated (grumpy rejects the passing oracle): a raising
    # task_started must not stop the suite, and a raising escalation_opened
    # (called before the built-in inbox's) must not keep the escalation out of the inbox.
    make_task(suite, "one")
    make_task(suite, "two")
    site = fake_installed_plugin(tmp_path, "loud", LOUD_PLUGIN)
    env = {"PYTHONPATH": os.pathsep.join([str(site), str(REPO_ROOT)])}
    res = cli("run", str(suite), "--agent", "oracle", "--agent", "noop", "--reviewer", "grumpy", "--json", env=env)
    assert res.returncode == 3, res.stderr
    assert "Traceback" not in res.stderr
    assert [t["decision"] for t in res.json()["tasks"]] == ["escalated", "escalated"]
    inbox = cli("inbox", "--json", env=env)
    assert len(inbox.json()["escalations"]) == 2
    warned = [line for line in res.stderr.splitlines() if line.startswith("warning: plugin 'loud'")]
    for name in LOUD_HOOKS:
        [line] = [w for w in warned if f"its {name} hook raised RuntimeError: loud {name}" in w]  # once each
        assert "package crossreview-loud" in line and "crossreview_loud.py:" in line
        assert "pip uninstall crossreview-loud" in line


def test_an_installed_plugin_whose_hooks_raise_under_pytest_is_a_warning_not_a_failure(tmp_path, suite):
    make_task(suite, "one")
    site = fake_installed_plugin(tmp_path, "loud", LOUD_PLUGIN)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--crossreview", str(suite),
         "--crossreview-agent", "oracle", "--crossreview-agent", "noop"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO_ROOT)]), "CI": "true", "COLUMNS": "300"},
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "1 passed" in out and "INTERNALERROR" not in out
    assert "PluginWarning: plugin 'loud'" in out and "crossreview_task_started hook raised" in out


@pytest.mark.parametrize("group", ["crosreview", "crossreview.plugins"])
def test_a_plugin_declared_in_a_misspelled_entry_point_group_is_named_not_silently_missing(cli, tmp_path, suite, group):
    site = fake_installed_plugin(tmp_path, "typogroup", "from crossreview.hookspecs import hookimpl\n")
    (site / "crossreview_typogroup-0.1.dist-info" / "entry_points.txt").write_text(
        f"[{group}]\ntypogroup = crossreview_typogroup\n")
    env = {"PYTHONPATH": os.pathsep.join([str(site), str(REPO_ROOT)])}
    make_task(suite)
    res = cli("run", str(suite), "--agent", "typogroup:x", env=env)
    assert res.returncode == 2, res.stderr
    message = " ".join(res.stderr.split())
    assert "unknown agent 'typogroup:x'" in message
    assert (f"the package crossreview-typogroup declares the entry point `typogroup = crossreview_typogroup` "
            f"in the group '{group}'") in message
    assert "[project.entry-points.crossreview]" in message
    listed = cli("plugins", "--json", env=env)
    assert listed.returncode == 0 and "typogroup" not in listed.json()["plugins"]
    assert f"warning: the package crossreview-typogroup declares" in listed.stderr


def test_an_entry_point_naming_a_missing_attribute_says_to_fix_the_entry_point_not_the_import(cli, tmp_path):
    site = fake_installed_plugin(tmp_path, "noattr", "from crossreview.hookspecs import hookimpl\n")
    (site / "crossreview_noattr-0.1.dist-info" / "entry_points.txt").write_text(
        "[crossreview]\nnoattr = crossreview_noattr:plugin\n")
    res = cli("plugins", env={"PYTHONPATH": os.pathsep.join([str(site), str(REPO_ROOT)])})
    assert res.returncode == 2, res.stderr
    message = " ".join(res.stderr.split())
    assert "plugin 'noattr'" in message and "crossreview-noattr" in message
    assert "the module crossreview_noattr has no 'plugin'" in message
    assert "`noattr = crossreview_noattr` under [project.entry-points.crossreview]" in message
    assert "python -c" not in message  # importing the module works: that hint would send them astray


def _readme_block(first_line: str) -> str:
    """The README code block that starts with ``first_line``, as written there."""
    text = (REPO_ROOT / "README.md").read_text()
    start = text.rindex("```", 0, text.index(first_line))  # the fence that opens the block holding it
    start = text.index("\n", start) + 1
    return text[start:text.index("\n```", start)] + "\n"


@pytest.fixture(scope="module")
def readme_plugin_site(tmp_path_factory) -> Path:
    """README, "Writing a plugin": its two modules and its pyproject.toml, copied literally and pip-installed."""
    src = tmp_path_factory.mktemp("src") / "crossreview-mycli"
    src.mkdir()
    (src / "crossreview_mycli.py").write_text(_readme_block("# crossreview_mycli.py"))
    (src / "crossreview_smalldiff.py").write_text(_readme_block("# crossreview_smalldiff.py"))
    pyproject = _readme_block("# pyproject.toml of the plugin package")
    second = _readme_block('smalldiff = "crossreview_smalldiff"')
    assert "[project.entry-points.crossreview]\nmycli = " in second
    # The README's second block replaces the entry-point table ("declare it next to the first module").
    pyproject = pyproject[:pyproject.index("[project.entry-points.crossreview]")] + second
    (src / "pyproject.toml").write_text(pyproject)
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(target), str(src)],
        check=True, capture_output=True, text=True,
    )
    bin_dir = tmp_path_factory.mktemp("bin")  # a stand-in `mycli`: reads the instruction, edits a file
    (bin_dir / "mycli").write_text("#!/bin/sh\ncat > /dev/null\necho '# by mycli' >> NOTES.md\necho done\n")
    (bin_dir / "mycli").chmod(0o755)
    return target, bin_dir


def test_the_readme_plugin_example_works_as_written(cli, suite, readme_plugin_site):
    site, bin_dir = readme_plugin_site
    env = {"PYTHONPATH": str(site), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    listed = cli("plugins", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    doc = listed.json()
    assert {"mycli", "smalldiff"} <= set(doc["plugins"])
    assert {"name": "mycli", "plugin": "mycli",
            "help": "mycli:<model> runs the mycli coding agent in the worktree"} in doc["agents"]
    assert "smalldiff" in [r["name"] for r in doc["reviewers"]] and "anyone" in [p["name"] for p in doc["policies"]]

    make_task(suite)
    res = cli("run", str(suite), "--agent", "mycli:small", "--agent", "noop", "--reviewer", "tests", "--json", env=env)
    assert res.returncode == 1, res.stderr  # mycli's edit does not implement add(): rejected, as it should be
    [t] = res.json()["tasks"]
    mycli = next(c for c in t["candidates"] if c["agent"] == "a")
    assert mycli["tests_total"] > 0 and mycli["cost"] is None  # it ran; cost=None is "unknown", not $0

    bad = cli("run", str(suite), "--agent", "mycli", env=env)
    assert bad.returncode == 2 and "agent a: write mycli:MODEL, e.g. --agent mycli:small" in bad.stderr

    res = cli("run", str(suite), "--agent", "oracle", "--agent", "noop", "--reviewer", "smalldiff:3",
              "--policy", "anyone", "--json", env=env)
    assert res.returncode == 0, res.stderr
    assert (res.json()["tasks"][0]["decision"], res.json()["tasks"][0]["winner"]) == ("accepted", "a")
    bad = cli("run", str(suite), "--reviewer", "smalldiff", env=env)
    assert bad.returncode == 2 and "write smalldiff:N" in bad.stderr


class SpendsThenRaises:
    """A third-party agent whose solve raises after spending: one says what it spent, one says nothing."""

    class Reporting:
        def __init__(self, spec):
            pass

        def solve(self, workspace):
            from crossreview.models import Usage

            exc = RuntimeError("the agent CLI crashed after its model calls")
            exc.usage = Usage(tokens_in=900, tokens_out=100, cost=0.03, calls=2)  # as reviewers report it
            raise exc

    class Silent:
        def __init__(self, spec):
            pass

        def solve(self, workspace):
            raise RuntimeError("segfault in the agent's model client")

    @hookimpl
    def crossreview_register_agents(self, register):
        register("reports-then-raises", self.Reporting)
        register("raises", self.Silent)


def test_a_solve_that_raises_costs_unknown_not_nothing(tmp_path, suite, cli):
    """It may have spent before it raised: unknown in the ledger, stats and run --json, ≥ what it reported."""
    import json

    from crossreview.ledger import Ledger

    make_task(suite)
    pm = plugins.new_plugin_manager(load_entrypoints=False)
    pm.register(SpendsThenRaises(), name="spends-then-raises")
    opts = RunOptions(paths=[suite], agents=["a=reports-then-raises", "b=raises", "c=oracle"],
                      reviewers=["a=tests", "b=tests", "c=tests"], state_dir=tmp_path / "state", interactive=False)
    [result] = run_suite(opts, pm).results
    by = {c.agent: c for c in result.candidates}
    assert by["a"].status == by["b"].status == "error"
    assert (by["a"].cost, by["a"].cost_known, by["a"].tokens) == (None, 0.03, 1000)
    assert by["b"].cost is None and not by["b"].cost_known
    assert by["c"].cost == 0.0 and result.cost is None  # the task run's cost is unknown too

    ledger = tmp_path / "state" / "ledger.db"
    rows = {r["agent"]: r for r in Ledger(ledger).candidate_rows(result.task_run)}
    assert (rows["a"]["cost"], rows["a"]["cost_known"], rows["a"]["calls"]) == (None, 0.03, 2)
    assert rows["b"]["cost"] is None and not rows["b"]["cost_known"]

    res = cli("stats", "--json", "--ledger", str(ledger))
    assert res.returncode == 0, res.stderr
    agents = {a["agent"]: a["solve"]["cost"] for a in json.loads(res.stdout)["cost"]["by_agent"]}
    assert agents["a"] == {"total": None, "known": 0.03, "unknown": 1, "items": 1}
    assert agents["b"] == {"total": None, "known": 0.0, "unknown": 1, "items": 1}
    assert agents["c"]["total"] == 0.0
    text = cli("stats", "--ledger", str(ledger)).stdout
    assert "≥ $0.0300" in text and "unknown" in text
    assert json.loads(res.stdout)["cost"]["cut_short"]["cost"] == 0.0  # the reported spend is the candidate's, once


class ReviewRaises:
    """A third-party reviewer whose review raises and says nothing of what it spent."""

    class Silent:
        def __init__(self, spec):
            pass

        def review(self, request):
            raise RuntimeError("the reviewer's model client crashed mid-call")

    @hookimpl
    def crossreview_register_reviewers(self, register):
        register("raises", self.Silent)


def test_a_review_that_raises_costs_unknown_not_nothing(tmp_path, suite, cli):
    """As for a solve: a reviewer may have called a model before it raised, so its review's cost is unknown."""
    import json

    from crossreview.ledger import Ledger

    make_task(suite)
    pm = plugins.new_plugin_manager(load_entrypoints=False)
    pm.register(ReviewRaises(), name="review-raises")
    opts = RunOptions(paths=[suite], agents=["a=oracle", "b=oracle"], reviewers=["a=raises", "b=tests"],
                      state_dir=tmp_path / "state", interactive=False)
    [result] = run_suite(opts, pm).results
    assert result.cost is None  # the task run's cost is unknown with it

    ledger = tmp_path / "state" / "ledger.db"
    rows = {r["reviewer"]: r for r in Ledger(ledger).verdict_rows(result.task_run)}
    assert rows["a"]["verdict"] == "abstain" and "crashed mid-call" in rows["a"]["error"]
    assert rows["a"]["cost"] is None
    assert rows["b"]["cost"] == 0.0  # the tests reviewer is free, as before

    res = cli("stats", "--json", "--ledger", str(ledger))
    assert res.returncode == 0, res.stderr
    review = {a["agent"]: a["review"]["cost"] for a in json.loads(res.stdout)["cost"]["by_agent"]}
    assert review["a"] == {"total": None, "known": 0.0, "unknown": 1, "items": 1}
    assert review["b"]["total"] == 0.0
