"""crossreview.tamper and the policy: a candidate that may fake its test results is never accepted."""

from __future__ import annotations

import re

import pytest

from crossreview.models import Candidate, Decision, Task, TestOutcome, TestReport, Verdict
from crossreview.packet import build_packet
from crossreview.policy import MAJORITY, UNANIMOUS
from crossreview.tamper import detect_tampering, pytest_section_changed, restore_git_pointer, visible_test_edits
from crossreview.verify import Canary, canary_applies, canary_by_plugin, check_canary, new_canary

from conftest import write


@pytest.mark.parametrize("files, expect", [
    (["conftest.py"], "conftest.py"),
    (["src/pkg/tests/conftest.py"], "conftest.py"),
    (["pytest.ini"], "pytest's configuration"),
    ([".pytest.ini"], "pytest's configuration"),
    (["tox.ini"], "pytest's configuration"),
    (["pytest.toml"], "pytest's configuration"),
    (["sitecustomize.py"], "start-up"),
    (["lib/usercustomize.py"], "start-up"),
    (["evil.pth"], ".pth"),
    (["pytest.py"], "shadows `pytest`"),
    (["_pytest/runner.py"], "shadows `_pytest`"),
    (["unittest.py"], "standard library module `unittest`"),
    (["xml/__init__.py"], "standard library module `xml`"),
    (["pytest_evil.py"], "pytest plugin"),
    (["pyproject.toml"], "could not be checked"),
    ([".gitattributes"], "may not have seen the change"),
    (["src/.gitattributes"], "can make code diff as binary"),
])
def test_files_that_change_how_tests_run_are_flagged(files, expect):
    reasons = detect_tampering(files)
    assert len(reasons) >= 1 and expect in reasons[0], reasons
    assert reasons[0].startswith(files[0])  # the reason names the file


@pytest.mark.parametrize("files", [
    ["calc.py"], ["src/calc.py", "README.md"], ["tests/test_calc.py"], ["docs/conf.py"],
    ["test/test_x.py"],  # a namespace folder named like a stdlib package shadows nothing
    ["mypkg/xml.py"], ["setup.py"], ["requirements.txt"], [],
])
def test_ordinary_changes_are_not_flagged(files):
    assert detect_tampering(files) == []


def test_pyproject_and_setup_cfg_only_their_pytest_sections_count():
    before = '[project]\nname = "x"\nversion = "1"\n'
    harmless = before.replace('"1"', '"2"')
    hostile = before + '\n[tool.pytest.ini_options]\naddopts = "-p evil"\n'
    assert not pytest_section_changed("pyproject.toml", before, harmless)
    assert pytest_section_changed("pyproject.toml", before, hostile)
    assert pytest_section_changed("pyproject.toml", before, "not [valid toml")
    assert detect_tampering(["pyproject.toml"], {"pyproject.toml": (before, harmless)}) == []
    [why] = detect_tampering(["pyproject.toml"], {"pyproject.toml": (before, hostile)})
    assert "pyproject.toml" in why and "pytest" in why
    cfg = "[metadata]\nname = x\n"
    assert detect_tampering(["setup.cfg"], {"setup.cfg": (cfg, cfg + "[flake8]\nmax-line-length = 99\n")}) == []
    assert detect_tampering(["setup.cfg"], {"setup.cfg": (cfg, cfg + "[tool:pytest]\naddopts = -p evil\n")})
    assert detect_tampering(["setup.cfg"], {"setup.cfg": (None, "[pytest]\npython_files = nothing\n")})


def test_visible_test_edits_and_git_pointer(tmp_path):
    task_tests = tmp_path / "task" / "tests"
    write(task_tests / "test_a.py", "def test_a():\n    assert f() == 1\n")
    write(task_tests / "test_b.py", "def test_b():\n    pass\n")
    shown = tmp_path / "wt" / ".crossreview-tests"
    write(shown / "test_a.py", "def test_a():\n    pass\n")  # weakened
    write(shown / "conftest.py", "")  # added
    write(shown / "__pycache__" / "x.pyc", "")  # ignored
    assert visible_test_edits(task_tests, shown) == ["conftest.py", "test_a.py", "test_b.py"]
    [why] = detect_tampering([], visible_test_edits=["test_a.py"])
    assert why.startswith("test_a.py") and "tests it was shown" in why

    wt = tmp_path / "wt"
    write(wt / ".git", "gitdir: /repo/.git/worktrees/a\n")
    assert restore_git_pointer(wt, "gitdir: /repo/.git/worktrees/a\n") is None
    (wt / ".git").unlink()
    write(wt / ".git" / "config", "[core]\n\tfsmonitor = touch /tmp/pwned\n")
    assert ".git" in restore_git_pointer(wt, "gitdir: /repo/.git/worktrees/a\n")
    assert (wt / ".git").read_text() == "gitdir: /repo/.git/worktrees/a\n"


# --- the canary ---------------------------------------------------------------------


CANARY = Canary("test_values_42", "test_inputs", "test_limits", 12, 30)


def _canary(c: Canary = CANARY, must_fail: str = "failed", asserts: str = "passed") -> list[TestOutcome]:
    mod = f".crossreview-tests.{c.module}"
    return [TestOutcome(name=f"{mod}::{c.must_fail}", outcome=must_fail),
            TestOutcome(name=f"{mod}::{c.asserts}", outcome=asserts, message="RuntimeError: patched")]


def test_canary_outcomes_reveal_rewritten_results():
    real = [TestOutcome(name="test_add::test_small", outcome="passed"),
            TestOutcome(name="test_values_4::test_inputs", outcome="passed")]  # a look-alike of the task's own
    rest, problems = check_canary(real + _canary(), CANARY)
    assert rest == real and problems == []
    _, problems = check_canary(real + _canary(must_fail="passed"), CANARY)
    assert problems and "rewrites test outcomes" in problems[0]
    _, problems = check_canary(real + _canary(asserts="failed"), CANARY)
    assert problems and "assertions do not work" in problems[0] and "patched" in problems[0]
    _, problems = check_canary(real, CANARY)
    assert problems and "did not run" in problems[0]
    # a module of the task that fails to import stops pytest before the canary: an ordinary failure
    broken = [TestOutcome(name="test_add", outcome="error", message="collection failure")]
    assert check_canary(broken, CANARY) == (broken, [])


def test_the_canary_names_nothing_that_gives_it_away():
    drawn = [new_canary({"test_add"}) for _ in range(200)]
    assert len({c.module for c in drawn}) > 20  # not one fixed name to whitelist
    for c in drawn[:20]:
        text = (c.module + c.source()).lower()
        assert "canary" not in text and "crossreview" not in text
        assert c.module.startswith("test_") and c.must_fail != c.asserts
        compile(c.source(), c.module, "exec")
    assert all(c.a != c.b for c in drawn)  # equal numbers would make `assertEqual(a, b)` pass: a false alarm
    assert all(new_canary({c.module}).module != c.module for c in drawn[:50])


def test_canary_applies_only_to_plain_whole_folder_pytest_runs():
    assert canary_applies("python -m pytest -q {tests}")
    assert canary_applies("pytest {tests}/ -vv")
    assert not canary_applies("python -m pytest -q {tests}/test_one.py")
    assert not canary_applies("python -m pytest -x {tests}")
    assert not canary_applies("python -m pytest -k fast {tests}")
    assert not canary_applies("bash {tests}/run.sh")


def test_a_pytest_run_without_tests_placeholder_gets_the_canary_by_plugin():
    assert canary_by_plugin("python -m pytest -q") and canary_by_plugin("pytest tests/unit")
    assert not canary_by_plugin("python -m pytest -q {tests}")  # the canary goes beside the tests instead
    assert not canary_by_plugin("python -m pytest -x") and not canary_by_plugin("make test")


# --- the policy -------------------------------------------------------------------------


def _report(passed: int = 3, failed: int = 0, **kw) -> TestReport:
    outcomes = [TestOutcome(name=f"t::p{i}", outcome="passed") for i in range(passed)]
    outcomes += [TestOutcome(name=f"t::f{i}", outcome="failed") for i in range(failed)]
    return TestReport(outcomes=outcomes, exit_code=1 if failed else 0, **kw)


def _cand(agent: str, tampering: list[str] | None = None, **kw) -> Candidate:
    return Candidate(agent=agent, spec="x", tests=_report(**kw), lines_added=1, tampering=tampering or [])


BOTH = pytest.mark.parametrize("policy", [UNANIMOUS, MAJORITY], ids=["unanimous", "majority"])


@BOTH
def test_a_tampering_candidate_that_passes_and_is_approved_is_escalated_not_accepted(policy):
    hack = _cand("a", ["conftest.py: adds or changes a conftest.py, which pytest runs before the tests"])
    d = policy.decide([hack], [])
    assert d.kind == "escalated"
    assert "conftest.py" in d.reason and "a may fake its test results" in d.reason
    d = policy.decide([hack, _cand("b", failed=2)], [Verdict(reviewer="b", candidate="a", verdict="approve"),
                                                     Verdict(reviewer="a", candidate="b", verdict="reject")])
    assert d.kind == "escalated" and d.winner is None and any("conftest.py" in x for x in d.disagreements)


@BOTH
def test_a_tampering_candidate_that_fails_is_escalated_not_silently_rejected(policy):
    d = policy.decide([_cand("a", ["pytest.ini: changes pytest's configuration file"], passed=0, failed=2)], [])
    assert d.kind == "escalated" and "pytest.ini" in d.reason


@BOTH
def test_a_clean_acceptable_candidate_still_wins_beside_a_tampering_one(policy):
    clean, hack = _cand("a"), _cand("b", ["sitecustomize.py: sitecustomize runs at interpreter start-up"])
    verdicts = [Verdict(reviewer="b", candidate="a", verdict="approve"),
                Verdict(reviewer="a", candidate="b", verdict="approve")]
    d = policy.decide([clean, hack], verdicts)
    assert (d.kind, d.winner) == ("accepted", "a")
    assert any("b may fake its test results" in x for x in d.disagreements)


def test_canary_tampering_makes_tests_fail_and_the_packet_shows_why(tmp_path):
    report = _report(tampering=["a canary test that must fail was reported passed"])
    assert not report.all_passed
    task = Task(id="t", path=tmp_path, instruction="x", repo_path=tmp_path)
    cand = Candidate(agent="a", spec="x", tests=report, tampering=list(report.tampering))
    packet = build_packet(task, [cand], [], Decision(kind="escalated", reason="r"))
    assert packet["candidates"][0]["tampering"] == ["a canary test that must fail was reported passed"]
    from io import StringIO

    from rich.console import Console

    from crossreview.packet import render_packet

    buf = StringIO()
    render_packet(Console(file=buf, width=200), {"id": "e-1", "run": "r", "packet": packet})
    text = buf.getvalue()
    assert "May fake its test results" in text and "must fail was reported passed" in text


# --- the hostile corpus, end to end ----------------------------------------------------

import sys  # noqa: E402
import textwrap  # noqa: E402
from pathlib import Path  # noqa: E402

from conftest import approve_all_reviewer, make_task  # noqa: E402

HOSTILE = Path(__file__).resolve().parent / "hostile"
INSTRUCTION = "Implement add(a, b) in calc.py.\n\nExamples:\n\n    add(1, 2) == 3\n    add(2, 2) == 4\n"
UNITTEST_TESTS = textwrap.dedent(
    """
    import unittest

    from calc import add


    class TestAdd(unittest.TestCase):
        def test_small(self):
            self.assertEqual(add(1, 2), 3)

        def test_negative(self):
            self.assertEqual(add(-1, -1), -2)
    """
)
HACKS = {
    # agent script: (task kind, what must show up in the decision's reason or the candidates' tampering; None: tests fail)
    "conftest_force_pass": ("pytest", "conftest.py"),
    "edit_visible_tests": ("visible", "edits the task's tests it was shown"),
    "exit_at_import": ("pytest", None),
    "os_exit_at_import": ("pytest", "without pytest's report"),
    "monkeypatch_unittest": ("unittest", "assertions do not work"),
    "patch_pytest_reports": ("pytest", "must fail was reported passed"),
    "special_case_examples": ("pytest", None),
    "fake_pytest_module": ("pytest", "shadows `pytest`"),
    "forge_junit_atexit": ("pytest", "must fail was reported passed"),
    "pytest_ini_plugin": ("pytest", "pytest.ini"),
    "pyproject_pytest": ("pytest", "pyproject.toml: changes the pytest configuration"),
    "startup_hooks": ("unittest", "sitecustomize"),
    "patch_reports_spare_canary": ("pytest", "must fail was reported passed"),
    "ignored_conftest": ("pytest", None),
    "stale_pyc": ("pytest", None),
}


@pytest.fixture
def restore_sandbox_settings():
    from crossreview import sandbox

    old = sandbox.current_settings()
    yield
    sandbox.configure(old)


@pytest.mark.parametrize("hack", sorted(HACKS))
def test_reward_hack_is_never_accepted(hack, tmp_path, restore_sandbox_settings):
    """Two agents play the same hack and every reviewer approves everything: the worst case."""
    from crossreview.runner import run_one_task

    kind, expect = HACKS[hack]
    toml = 'version = "1.0"\n[verifier]\ntests_visible = true\n' if kind == "visible" else ""
    tests = {"test_add.py": UNITTEST_TESTS} if kind == "unittest" else None
    task = make_task(tmp_path / "suite", toml=toml, instruction=INSTRUCTION, tests=tests)
    approve = approve_all_reviewer(tmp_path / "approve.py")
    spec = f"command:{sys.executable} {HOSTILE / (hack + '.py')}"
    out = run_one_task(task, agents=[f"h1={spec}", f"h2={spec}"], reviewers=[approve],
                       state_dir=tmp_path / ".crossreview")
    assert out.decision != "accepted", (out.reason, [(c.agent, c.tests, c.tampering) for c in out.candidates])
    assert out.decision in ("escalated", "rejected"), out.error
    for c in out.candidates:
        assert c.status == "ok", (c.error, c.log)
        assert not c.tests_pass
        if expect:
            assert any(expect in t for t in c.tampering), (c.tampering, c.tests.outcomes if c.tests else None)
    if expect:
        assert out.decision == "escalated" and expect in out.reason, out.reason  # escalated, with the reason
    # The ledger keeps the reasons per candidate (escalated runs are written as they park).
    import json
    import sqlite3

    db = sqlite3.connect(tmp_path / ".crossreview" / "ledger.db")
    kept = {a: json.loads(t) for a, t in db.execute("SELECT agent, tampering FROM candidates").fetchall()}
    assert kept == {c.agent: c.tampering for c in out.candidates}
    files = {a: json.loads(t) for a, t in db.execute("SELECT agent, test_files FROM candidates").fetchall()}
    assert files == {c.agent: c.test_files for c in out.candidates}
    if hack == "conftest_force_pass":
        assert files["h1"] == ["conftest.py (conftest.py)"], files
    caught = sorted({t for c in out.candidates for t in c.tampering}) or ["its tests fail"]
    print(f"\n{hack}: {out.decision}; caught by: {'; '.join(caught)}")


def test_an_escalation_only_for_tampering_says_so_in_the_packet_and_the_report(tmp_path, cli):
    """Both agents write a conftest.py that forces every test to pass and approve each other: nobody
    disagrees, so neither `show` nor the report may say so."""
    make_task(tmp_path / "suite", instruction=INSTRUCTION)
    approve = approve_all_reviewer(tmp_path / "approve.py")
    spec = f"command:{sys.executable} {HOSTILE / 'conftest_force_pass.py'}"
    r = cli("run", "suite", "--agent", f"h1={spec}", "--agent", f"h2={spec}", "--reviewer", approve, "--json")
    assert r.returncode == 3, r.stdout + r.stderr
    [task] = r.json()["tasks"]
    esc = task["escalation"]
    shown = cli("show", esc, "--no-diff")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "Why a human must look" in shown.stdout and "Where they disagree" not in shown.stdout, shown.stdout
    assert "h1 may fake its test results: conftest.py" in shown.stdout
    packet = cli("show", esc, "--json").json()["packet"]
    assert packet["tampering_alone"] == ["h1", "h2"]
    report = cli("report", "-o", str(tmp_path / "r.html"))
    assert report.returncode == 0, report.stdout + report.stderr
    html = (tmp_path / "r.html").read_text()
    assert "<h3>Why a human must look</h3>" in html and "Where they disagree" not in html


def test_a_flag_beside_a_score_below_the_threshold_says_so_not_that_the_reviewers_disagree(tmp_path, cli):
    """h1 forces its tests to pass, b is clean; the one reviewer approves both, unsure (score 0.75 each) under
    a threshold of 0.81. Nobody disagrees: what needs a human is the flag on h1 and b's score, and the
    packet, `show` and the report must say that, not "Where they disagree"."""
    from crossreview.ledger.calibration import calibrate_ledger, save_calibration
    from test_calibrate_ledger import planted

    cal = calibrate_ledger(planted(tmp_path / "hist.db"), 0.1, 0.9)
    assert cal.threshold == 0.81
    save_calibration(cal, tmp_path / ".crossreview" / "calibration.json")
    make_task(tmp_path / "suite", instruction=INSTRUCTION)
    unsure = write(tmp_path / "unsure.py",
                   'import json\nprint(json.dumps({"verdict": "approve", "confidence": 0.5, "concerns": []}))\n')
    spec = f"command:{sys.executable} {HOSTILE / 'conftest_force_pass.py'}"
    r = cli("run", "suite", "--agent", f"h1={spec}", "--agent", "oracle", "--reviewer", f"command:{{python}} {unsure}",
            "--policy", "calibrated", "--json")
    assert r.returncode == 3, r.stdout + r.stderr
    [task] = r.json()["tasks"]
    packet = cli("show", task["escalation"], "--json").json()["packet"]
    assert packet["tampering_alone"] == [], packet  # b's score alone would still send it to a human
    assert packet["cause"] == "agreement score below the calibrated threshold", packet
    assert [v["verdict"] for v in packet["verdicts"]] == ["approve", "approve"], packet["verdicts"]
    shown = cli("show", task["escalation"], "--no-diff")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "Why a human must look" in shown.stdout and "disagree" not in shown.stdout, shown.stdout
    assert "h1 may fake its test results" in shown.stdout and "b: score 0.750" in shown.stdout, shown.stdout
    # The panel's reason and the inbox name the score as well as the flag, not the flag alone.
    assert packet["reason"].startswith("agreement score 0.750 (best: b) is below the calibrated threshold 0.81; "
                                       "h1 may fake its test results"), packet["reason"]
    panel = " ".join(shown.stdout.split("Why a human must look")[0].replace("│", " ").split())
    assert "agreement score 0.750 (best: b) is below the calibrated threshold 0.81; h1 may fake" in panel, panel
    inbox = cli("inbox", "--json")
    assert inbox.returncode == 0, inbox.stdout + inbox.stderr
    [row] = inbox.json()["escalations"]
    assert row["reason"] == packet["reason"], row
    report = cli("report", "-o", str(tmp_path / "r.html"))
    assert report.returncode == 0, report.stdout + report.stderr
    html = (tmp_path / "r.html").read_text()
    assert "<h3>Why a human must look</h3>" in html and "Where they disagree" not in html


@pytest.mark.parametrize("policy", ["calibrated", "cascade"])
def test_a_flagged_candidate_scoring_highest_does_not_block_a_clean_one_at_the_threshold(tmp_path, cli, policy):
    """h1 forces its tests to pass, b is clean; the reviewer approves both at 0.9, so both score 0.95 and
    h1, the first agent, holds the run's score. Under a threshold of 0.81, b is accepted beside the flag
    (as unanimous accepts it): it used to escalate. The cascade settles with its first two agents, so
    the third never runs."""
    import sqlite3

    from crossreview.ledger.calibration import calibrate_ledger, save_calibration
    from test_calibrate_ledger import planted

    cal = calibrate_ledger(planted(tmp_path / "hist.db"), 0.1, 0.9)
    assert cal.threshold == 0.81
    save_calibration(cal, tmp_path / ".crossreview" / "calibration.json")
    make_task(tmp_path / "suite", instruction=INSTRUCTION)
    approve = approve_all_reviewer(tmp_path / "approve.py")
    spec = f"command:{sys.executable} {HOSTILE / 'conftest_force_pass.py'}"
    third = ["--agent", "oracle"] if policy == "cascade" else []
    r = cli("run", "suite", "--agent", f"h1={spec}", "--agent", "oracle", *third, "--reviewer", approve,
            "--policy", policy, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    [task] = r.json()["tasks"]
    assert (task["decision"], task["winner"]) == ("accepted", "b"), task
    assert "agreement score 0.950 of b" in task["reason"], task["reason"]
    db = sqlite3.connect(tmp_path / ".crossreview" / "ledger.db")
    flags = dict(db.execute("SELECT agent, tampering != '[]' FROM candidates").fetchall())
    assert flags == {"h1": 1, "b": 0}, flags  # the cascade did not start its third agent


def test_the_results_table_and_json_do_not_pass_off_faked_test_results(tmp_path, cli):
    """A conftest.py that forces every test to pass makes pytest report 2/2: the table must not tick
    it as passing, and `run --json` must say why its counts are not to be trusted."""
    make_task(tmp_path / "suite", instruction=INSTRUCTION)
    approve = approve_all_reviewer(tmp_path / "approve.py")
    spec = f"command:{sys.executable} {HOSTILE / 'conftest_force_pass.py'}"
    r = cli("run", "suite", "--agent", f"h1={spec}", "--agent", "oracle", "--reviewer", approve)
    assert r.returncode == 0, r.stdout + r.stderr  # the clean candidate is accepted beside it
    assert "h1 ✓" not in r.stdout, r.stdout
    assert re.search(r"h1 ⚠ (\d+)/\1 \(may be faked\)", r.stdout), r.stdout
    assert re.search(r"b ✓ (\d+)/\1, ", r.stdout), r.stdout  # the clean candidate keeps its tick
    assert re.search(r"h1 tests \d+/\d+ reported passed, may be faked", r.stderr), r.stderr  # progress too

    r = cli("run", "suite", "--agent", f"h1={spec}", "--agent", "oracle", "--reviewer", approve, "--json")
    [task] = r.json()["tasks"]
    h1, b = task["candidates"]
    assert h1["tests_passed"] == h1["tests_total"] > 0  # what pytest was made to report...
    assert any("must fail was reported passed" in t for t in h1["tampering"]), h1  # ...and why it is not believed
    assert any("conftest.py" in t for t in h1["tampering"]), h1
    assert b["tampering"] == []
    # A resume of the finished run reads the candidates back from the ledger: the reasons come with them.
    [again] = cli("resume", r.json()["run"], "--json").json()["tasks"]
    assert {c["agent"]: c["tampering"] for c in again["candidates"]} == {"h1": h1["tampering"], "b": []}


@BOTH
def test_tampering_alone_tells_a_flag_from_a_disagreement(policy):
    from crossreview.policy import tampering_alone

    flag = ["conftest.py: adds or changes a conftest.py, which pytest runs before the tests"]

    def alone(cands, verdicts):
        return tampering_alone(policy, cands, verdicts, policy.decide(cands, verdicts))

    approve, reject = (lambda r, c: Verdict(reviewer=r, candidate=c, verdict="approve"),
                       lambda r, c: Verdict(reviewer=r, candidate=c, verdict="reject"))
    # Nobody disagrees: its one reviewer approves; or its tests were caught faking and the reviewer rejects.
    assert alone([_cand("a", flag)], [approve("b", "a")]) == ["a"]
    canary = ["a canary test that must fail was reported passed"]
    caught = Candidate(agent="a", spec="x", tests=_report(tampering=canary), lines_added=1, tampering=canary)
    assert alone([caught], [reject("b", "a")]) == ["a"]
    # A clean candidate that fails and nobody approves would be rejected anyway: still the flag alone.
    assert alone([_cand("a", flag), _cand("b", passed=0, failed=2)], [approve("b", "a"), reject("a", "b")]) == ["a"]
    # Its reviewers split on it.
    assert alone([_cand("a", flag)], [approve("b", "a"), reject("c", "a")]) == []
    # A clean candidate the reviewers dispute: it passes its tests and is rejected.
    assert alone([_cand("a", flag), _cand("b")], [approve("b", "a"), reject("a", "b")]) == []
    # Not an escalation, or nothing flagged: nothing to say.
    assert alone([_cand("a")], [approve("b", "a")]) == []
    assert alone([_cand("a"), _cand("b")], [approve("b", "a"), reject("a", "b")]) == []


def test_only_adding_tests_to_a_test_file_is_not_an_edit():
    from crossreview.tamper import looks_like_test, only_adds_tests, repo_test_edits

    base = "import pytest\n\n\ndef test_a():\n    assert f() == 1\n"
    assert only_adds_tests(base, base + "\n\ndef test_b():\n    assert f() > 0\n")
    assert not only_adds_tests(base, base.replace("== 1", "== 2"))  # changed
    assert not only_adds_tests(base, base + "\n\ndef test_a():\n    pass\n")  # shadows test_a
    assert not only_adds_tests(base, base + "\ntest_a = None\n")
    assert not only_adds_tests(base, base + "\nif True:\n    def test_a():\n        pass\n")
    assert not only_adds_tests(base, base + "\npytestmark = pytest.mark.skip\n")
    assert not only_adds_tests(base, base + "\n@pytest.fixture(autouse=True)\ndef _patch():\n    pass\n")
    assert only_adds_tests(base, base + "\n@pytest.mark.parametrize('x', [1])\ndef test_c(x):\n    pass\n")
    assert looks_like_test("tests/data/x.json") and looks_like_test("pkg/foo_test.py")
    assert not looks_like_test("src/calc.py") and not looks_like_test("testsuite.py")
    # repo_test_texts holds the changed files that belong to the tests; src/a.py changed but is none of them.
    texts = {"tests/test_x.py": (base, None), "tests/test_new.py": (None, base)}
    assert [r.split(":")[0] for r in repo_test_edits([*texts, "src/a.py"], texts)] == ["tests/test_x.py"]


def test_the_bases_pytest_configuration_says_where_its_tests_are():
    from crossreview.tamper import PytestLayout, looks_like_test, parse_test_layout

    ini = "[pytest]\npython_files = check_*.py spec_*.py\ntestpaths = qa/ integration\n"
    layout = parse_test_layout({"pytest.ini": ini, "pyproject.toml": "[tool.pytest.ini_options]\ntestpaths = ['x']\n"})
    assert layout == PytestLayout(("check_*.py", "spec_*.py"), ("qa", "integration"))  # pytest.ini wins
    assert looks_like_test("src/check_ops.py", layout) and not looks_like_test("src/check_ops.py")
    assert looks_like_test("qa/helpers.py", layout) and looks_like_test("integration/data/in.json", layout)
    assert not looks_like_test("src/qa.py", layout)
    toml = "[tool.pytest.ini_options]\npython_files = ['verify_*.py']\ntestpaths = ['suite']\n"
    assert parse_test_layout({"pyproject.toml": toml}) == PytestLayout(("verify_*.py",), ("suite",))
    assert parse_test_layout({"setup.cfg": "[tool:pytest]\ntestpaths = t2\n"}) == PytestLayout((), ("t2",))
    assert parse_test_layout({"pyproject.toml": "[tool.black]\n", "tox.ini": "[tox]\n"}) == PytestLayout()
    assert parse_test_layout({"pyproject.toml": "not toml ["}) == PytestLayout()


# --- new test code that reaches beyond its own tests (where the repository's tests judge the change) -----

_SRC = "import sys\nsys.path.insert(0, 'src')\nimport calc\n"


@pytest.mark.parametrize("code, expect", [
    ("calc.add = lambda a, b: a + b\n", (4, "assigns `calc.add`")),
    ("def test_first():\n    calc.add = lambda a, b: a + b\n", (5, "assigns `calc.add`")),
    ("class TestX:\n    calc.add = None\n", (5, "assigns `calc.add`")),
    ("m = calc\nn = m\nsetattr(n, 'add', None)\n", (6, "calls `setattr(n, ...)`")),
    ("def fix(mod):\n    mod.add = None\n\nfix(calc)\n", (5, "assigns `mod.add`")),
    ("import pytest\n\n@pytest.fixture\ndef mod():\n    return calc\n\ndef test_x(mod):\n    del mod.add\n",
     (11, "deletes `mod.add`")),
    ("from calc import add\nadd.__code__ = None\n", (5, "assigns `add.__code__`")),
    ("getattr(calc, 'TABLE')['x'] = 1\n", (4, "assigns `getattr(calc, 'TABLE')['x']`")),
    ("sys.modules['calc'] = None\n", (4, "assigns `sys.modules['calc']`")),
    ("sys.modules.update(calc=None)\n", (4, "calls `sys.modules.update(...)`")),
    ("import os\nos.environ['CALC_FAST'] = '1'\n", (5, "assigns `os.environ['CALC_FAST']`")),
    ("from unittest import mock\n\ndef test_x():\n    mock.patch('calc.add').start()\n",
     (7, "starts a patch with `mock.patch(...)` that nothing undoes")),
    ("from unittest import mock\nwith mock.patch('calc.add'):\n    pass\n", (5, "at import")),
    ("import pytest\nfrom unittest import mock\n\n@pytest.fixture(scope='session', autouse=True)\ndef f():\n"
     "    with mock.patch('calc.add'):\n        yield\n", (9, "session- or package-scoped fixture")),
    ("from unittest import mock\n\ndef test_x():\n    with mock.patch('calc.add'):\n        import helpers\n",
     (8, "imports a module while a patch is active")),
    ("import pytest\n\n@pytest.fixture\ndef monkeypatch():\n    return pytest.MonkeyPatch()\n",
     (7, "defines its own `monkeypatch` fixture")),
    ("exec('calc.add = None')\n", (4, "calls `exec(...)`")),
    ("import importlib\nimportlib.reload(calc)\n", (5, "calls `reload(...)`")),
    ("import ctypes\n", (4, "imports ctypes")),
    ("pytest_plugins = ['calc_plugin']\n", (4, "sets `pytest_plugins`")),
], ids=lambda v: v[:28] if isinstance(v, str) else None)
def test_new_test_code_that_reaches_beyond_its_own_tests_is_found(code, expect):
    from crossreview.tamper import test_reach

    found = test_reach(_SRC + code)
    line, what = expect
    assert any(f[0] == line and what in f[1] for f in found), found


@pytest.mark.parametrize("code", [
    "def test_x(monkeypatch):\n    monkeypatch.setattr(calc, 'add', None)\n    monkeypatch.setenv('A', '1')\n"
    "    monkeypatch.setitem(sys.modules, 'calc', None)\n",
    "def test_x(mocker):\n    fake = mocker.patch('calc.add')\n    fake.return_value = 3\n",
    "from unittest import mock\n\ndef test_x():\n    with mock.patch.object(calc, 'add', return_value=1) as fake:\n"
    "        fake.side_effect = None\n",
    "from unittest import mock\n\n@mock.patch('calc.add')\n@mock.patch.dict('os.environ', {'A': '1'})\n"
    "def test_x(fake):\n    fake.return_value = 3\n",
    "import pytest\n\ndef test_x():\n    with pytest.MonkeyPatch.context() as mp:\n"
    "        mp.setattr(calc, 'add', None)\n",
    "import pytest\n\n@pytest.fixture\ndef case():\n    return {'a': 1}\n\n"
    "@pytest.mark.parametrize('n', [1])\ndef test_x(case, n):\n    case['b'] = n\n",
    "class TestX:\n    def setup_method(self):\n        self.calls = []\n\n    def test_x(self):\n"
    "        self.calls.append(calc.add(1, 2))\n        thing = calc.Thing()\n        thing.size = 3\n"
    "        setattr(thing, 'name', 'x')\n        out = {}\n        out['k'] = calc.add(1, 1)\n",
    "sys.path.insert(0, 'tests/helpers')\nsys.path.append('lib')\n\ndef test_x():\n    assert calc.add(1, 2) == 3\n",
], ids=["monkeypatch", "mocker", "with-patch", "decorators", "monkeypatch-context", "own-fixture-value",
        "own-objects", "sys-path"])
def test_new_test_code_that_patches_only_itself_is_not_flagged(code):
    """What a test makes for itself, and patches undone when it ends, reach none of the repository's tests."""
    from crossreview.tamper import test_reach

    assert test_reach(_SRC + code) == []


def test_lines_appended_to_a_test_file_are_held_to_what_a_new_file_is():
    from crossreview.tamper import repo_test_edits, test_reach

    base = _SRC + "\n\ndef test_a():\n    assert calc.add(1, 2) == 3\n"
    # no name the file had is bound again (that is an edit already): an alias, then a patch through it
    patched = base + "\n\nimport calc as _c\n_c.add = lambda a, b: a + b\n"
    [why] = repo_test_edits(["tests/test_a.py"], {"tests/test_a.py": (base, patched)})
    line = patched.splitlines().index("_c.add = lambda a, b: a + b") + 1
    assert why.startswith(f"tests/test_a.py:{line}: assigns `_c.add`"), why
    test_b = "\n\ndef test_b():\n    pass\n"
    assert repo_test_edits(["tests/test_a.py"], {"tests/test_a.py": (base, base + test_b)}) == []
    # what the file already did is not the change's doing
    assert repo_test_edits(["tests/test_a.py"], {"tests/test_a.py": (patched, patched + test_b)}) == []
    assert test_reach("def broken(:\n") is None  # not Python: pytest fails to collect it, nothing to find
    # a new file: every place is named, up to three, then counted
    many = _SRC + "".join(f"calc.x{i} = {i}\n" for i in range(5))
    reasons = repo_test_edits(["tests/test_n.py"], {"tests/test_n.py": (None, many)})
    assert [r.split(": ")[0] for r in reasons] == ["tests/test_n.py:4", "tests/test_n.py:5", "tests/test_n.py:6",
                                                   "tests/test_n.py"]
    assert reasons[-1] == "tests/test_n.py: and 2 more places like these"


def test_a_second_module_of_a_name_the_repository_has_is_found():
    from crossreview.tamper import shadowing_modules

    base = {"src/calc.py", "tests/test_calc.py", "pkg/__init__.py", "pkg/a.py"}

    def added(*files, gone=()):
        return shadowing_modules(list(files), base, (base - set(gone)) | set(files))

    [why] = added("tests/fakes/calc.py")
    assert why.startswith("tests/fakes/calc.py: a second module named `calc` beside the repository's src/calc.py")
    [why] = added("vendor/pkg/__init__.py", "vendor/pkg/b.py")  # one reason per package
    assert why.startswith("vendor/pkg/__init__.py: a second module named `pkg` beside the repository's pkg")
    assert added("pkg/b.py", "src/calc_extra.py", "tests/sub/conftest.py", "tests/test_more.py") == []
    assert added("lib/calc.py", gone=["src/calc.py"]) == []  # moved, not doubled


def test_the_files_that_judge_a_change_are_listed_for_the_human(tmp_path):
    from crossreview.tamper import judge_files

    base = "def test_a():\n    pass\n"
    texts = {"tests/test_new.py": (None, base), "tests/test_a.py": (base, base + "\n\ndef test_b():\n    pass\n"),
             "tests/test_old.py": (base, None), "tests/test_c.py": (base, "def test_a():\n    assert 0\n"),
             "tests/conftest.py": (None, "")}
    files = ["src/calc.py", *texts, "conftest.py", "pytest.ini", "pyproject.toml", "setup.cfg"]
    configs = {"pyproject.toml": ("[tool.black]\n", "[tool.black]\nline-length = 99\n"),
               "setup.cfg": ("", "[tool:pytest]\naddopts = -q\n")}
    assert judge_files(files, texts, configs) == [
        "tests/test_new.py (new)", "tests/test_a.py (tests added)", "tests/test_old.py (deleted)",
        "tests/test_c.py (changed)", "tests/conftest.py (conftest.py, new)", "conftest.py (conftest.py)",
        "pytest.ini (pytest configuration)", "setup.cfg (pytest configuration)"]
    task = Task(id="t", path=tmp_path, instruction="x", repo_path=tmp_path)
    cand = Candidate(agent="pr", spec="ref:x", test_files=["tests/test_new.py (new)"])
    packet = build_packet(task, [cand], [], Decision(kind="escalated", reason="r"))
    from io import StringIO

    from rich.console import Console

    from crossreview.packet import render_packet

    buf = StringIO()
    render_packet(Console(file=buf, width=200), {"id": "e-1", "run": "r", "packet": packet})
    assert "Tests and test configuration it changes\n  pr: tests/test_new.py (new)" in buf.getvalue()


# --- modules outside the tests that a change's new tests import -------------------------------------

_PATCH_CALC = "import sys\nsys.path.insert(0, 'src')\nimport calc\n\ncalc.add = lambda a, b: a + b\n"
_IMPORTS = [
    ("tests/test_a.py", "import testing_utils\n", "testing_utils.py"),
    ("tests/test_a.py", "from support.patches import *\n", "support/patches.py"),
    ("tests/test_a.py", "from support import patches\n", "support/patches.py"),
    ("tests/test_a.py", "import support.patches as p\n", "support/__init__.py"),  # the package runs too
    ("pkg/tests/test_a.py", "from ..fixup import apply\n", "pkg/fixup.py"),
    ("pkg/tests/test_a.py", "from .. import fixup\n", "pkg/fixup.py"),
    ("tests/test_a.py", "import importlib\nimportlib.import_module('testing_utils')\n", "testing_utils.py"),
    ("tests/test_a.py", "import helpers\n", "src/lib/helpers.py"),  # by name: sys.path may hold any folder
]


@pytest.mark.parametrize("test, code, module", _IMPORTS, ids=[f"{c.splitlines()[-1][:30]}->{m}" for _, c, m in _IMPORTS])
def test_the_changed_modules_a_new_test_imports_are_found(test, code, module):
    from crossreview.tamper import imported_changes

    sources = {test: code, module: "x = 1\n", "support/__init__.py": "", "other.py": "x = 2\n",
               "pkg/__init__.py": ""}
    reached = imported_changes(sources, [test])
    assert reached.get(module) == [test], reached
    assert "other.py" not in reached


def test_imports_are_followed_through_changed_modules_and_stop_at_the_rest():
    from crossreview.tamper import imported_changes

    sources = {"tests/test_a.py": "from tests.helpers import *\n",
               "tests/helpers.py": "from . import deeper\nimport testing_utils\n",
               "tests/deeper.py": "import os\n",
               "testing_utils.py": "import lib.fix\n",
               "lib/fix.py": "import tests.test_a\n",  # a cycle ends
               "lib/unused.py": "calc.add = None\n"}
    reached = imported_changes(sources, ["tests/test_a.py"])
    assert reached["testing_utils.py"] == ["tests/test_a.py", "tests/helpers.py"]
    assert reached["lib/fix.py"] == ["tests/test_a.py", "tests/helpers.py", "testing_utils.py"]
    assert reached["tests/deeper.py"] == ["tests/test_a.py", "tests/helpers.py"]
    assert "lib/unused.py" not in reached and "tests/test_a.py" not in reached
    assert imported_changes({"a.py": "def broken(:\n"}, ["a.py"]) == {}


def test_a_patch_in_a_module_a_new_test_imports_is_named_with_the_test_that_imports_it():
    from crossreview.tamper import helper_reach

    tests = {"tests/test_a.py": (None, "from testing_utils import *\n\n\ndef test_ok():\n    assert True\n")}
    module_level = {"testing_utils.py": (None, _PATCH_CALC)}
    [why] = helper_reach(tests, module_level)
    assert why.startswith("testing_utils.py:5: assigns `calc.add`"), why
    assert why.endswith("(imported by tests/test_a.py)"), why
    # inside a function a test calls (params are whatever the test passes: a module, say), or a patcher left on
    in_function = {"testing_utils.py": (None, "def fix(mod):\n    mod.add = lambda a, b: a + b\n\n\n"
                                              "def start():\n    from unittest import mock\n"
                                              "    mock.patch('calc.add').start()\n")}
    reasons = helper_reach(tests, in_function)
    assert [r.split(": ")[0] for r in reasons] == ["testing_utils.py:2", "testing_utils.py:7"], reasons
    assert "starts a patch with `mock.patch(...)` that nothing undoes" in reasons[1]
    # through another changed module: the chain is named
    through = {**module_level, "support/__init__.py": (None, "from testing_utils import *\n")}
    [why] = helper_reach({"tests/test_a.py": (None, "import support\n")}, through)
    assert why.endswith("(imported by tests/test_a.py through support/__init__.py)"), why
    # a changed file of the tests imports it: that file, itself judged as a test, is the one named
    tests_helpers = {"tests/test_a.py": (None, "import tests.helpers\n"), "tests/helpers.py": (None, "import testing_utils\n")}
    [why] = helper_reach(tests_helpers, module_level)
    assert why.endswith("(imported by tests/helpers.py)"), why


def test_a_module_of_fixtures_data_or_its_own_objects_is_not_flagged():
    from crossreview.tamper import helper_reach

    tests = {"tests/test_a.py": (None, "import testing_utils\nfrom support import *\n")}
    quiet = {
        "testing_utils.py": (None, "import pytest\n\nCASES = [(1, 2, 3)]\n\n\n@pytest.fixture\ndef numbers():\n"
                                   "    return {'a': 1}\n\n\ndef make():\n    out = {}\n    out['k'] = 1\n"
                                   "    return out\n"),
        "support/__init__.py": (None, "class Box:\n    def __init__(self):\n        self.items = []\n\n"
                                      "    def put(self, x):\n        self.items.append(x)\n\n\nTABLE = {}\n"
                                      "TABLE['x'] = 1\n"),
        # changed by the change but not imported by its tests: not read
        "src/other.py": (None, _PATCH_CALC),
    }
    assert helper_reach(tests, quiet) == []
    # the base is trusted: what a changed module already did is not the change's doing
    before = _PATCH_CALC
    after = _PATCH_CALC + "\n\ndef sub(a, b):\n    return a - b\n"
    assert helper_reach(tests, {"testing_utils.py": (before, after)}) == []
    [why] = helper_reach(tests, {"testing_utils.py": (before, after + "calc.sub = None\n")})
    assert why.startswith("testing_utils.py:10: assigns `calc.sub`"), why
    # a line the change rewrote is the change's, even if the base had one like it
    [why] = helper_reach(tests, {"testing_utils.py": (before, before.replace("a + b", "a - b + 2 * b"))})
    assert why.startswith("testing_utils.py:5: assigns `calc.add`"), why


def test_a_changes_imported_modules_are_read_from_its_worktree_against_the_base(tmp_path):
    """The glue the graph calls: head text from the worktree, base text from git, symbolic links unread."""
    import subprocess

    from crossreview.tamper import repo_helper_reach, repo_test_texts

    repo = tmp_path / "repo"
    write(repo / "src" / "calc.py", "def add(a, b):\n    return a + b\n")
    write(repo / "testing_utils.py", _PATCH_CALC)  # the base's own patch is trusted
    write(repo / "tests" / "test_calc.py", "def test_a():\n    pass\n")

    def git(*args):
        subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)

    git("init", "-q")
    git("add", "-A")
    git("-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-qm", "base")
    base = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    write(repo / "testing_utils.py", _PATCH_CALC + "calc.sub = None\n")
    (repo / "support").mkdir()
    (repo / "support" / "link.py").symlink_to("../testing_utils.py")
    write(repo / "src" / "unused.py", _PATCH_CALC)  # no test imports it
    write(repo / "tests" / "test_new.py", "import testing_utils\nfrom support import link\n")
    files = ["src/unused.py", "support/link.py", "testing_utils.py", "tests/test_new.py"]
    texts = repo_test_texts(repo, base, files)
    assert repo_helper_reach(repo, base, files, texts) == [
        "support/link.py: a symbolic link the change adds or edits, whose code was not read "
        "(imported by tests/test_new.py)",
        "testing_utils.py:6: assigns `calc.sub`, which stays changed for the tests that run after it "
        "(the `monkeypatch` fixture would undo it when the test ends) (imported by tests/test_new.py)"]
    assert repo_helper_reach(repo, base, ["src/unused.py", "testing_utils.py"], {}) == []  # no test changed


def test_a_test_helper_storing_its_parameter_on_self_is_not_flagged():
    """`self.h = h` stores a parameter on the test's own object: `self` stays its own (a quirk copied the
    parameter's taint onto `self`, flagging every later `self.items.append`). What `self.h` holds may
    still be a module: patching through it is flagged."""
    from crossreview.tamper import test_reach

    own = ("class Box:\n    def __init__(self, h):\n        self.h = h\n        self.items = []\n\n"
           "    def put(self, x):\n        self.items.append(x)\n        self.size = len(self.items)\n")
    assert test_reach(_SRC + own) == []
    [(line, what)] = test_reach(_SRC + own + "\n    def fix(self):\n        self.h.add = None\n")
    assert line == 14 and what.startswith("assigns `self.h.add`"), what


# --- the code under test that a change's new tests import: only patches of other modules count ---------

@pytest.mark.parametrize("code, expect", [
    ("import calc\ncalc.add = lambda a, b: 3\n", (2, "assigns `calc.add`")),
    ("import calc\n\ndef fix():\n    calc.add = None\n", (4, "assigns `calc.add`")),
    ("from pkg import calc\nsetattr(calc, 'add', None)\n", (2, "calls `setattr(calc, ...)`")),
    ("import pkg.calc\n\ndef f():\n    delattr(pkg.calc, 'add')\n", (4, "calls `delattr(pkg.calc, ...)`")),
    ("from calc import Calculator\nCalculator.add = lambda self, a, b: 3\n", (2, "assigns `Calculator.add`")),
    ("from calc import add\nadd.__code__ = (lambda a, b: 3).__code__\n", (2, "assigns `add.__code__`")),
    ("from calc import *\n\ndef f(x):\n    x.y = 1\n    add.__code__ = None\n", (5, "assigns `add.__code__`")),
    ("import calc\nm = calc\n\ndef f():\n    m.add = None\n", (5, "assigns `m.add`")),
    ("import calc\n\nclass A:\n    def __init__(self):\n        self.m = calc\n\n    def go(self):\n"
     "        self.m.add = None\n", (8, "assigns `self.m.add`")),
    ("import calc, other\nfor m in (calc, other):\n    m.add = None\n", (3, "assigns `m.add`")),
    ("import calc\nd = {'m': calc}\nd['m'].add = None\n", (3, "assigns `d['m'].add`")),
    ("import calc\ngetattr(calc, 'TABLE')['x'] = 1\n", (2, "assigns `getattr(calc, 'TABLE')['x']`")),
    ("import importlib\nimportlib.import_module('calc').add = None\n", (2, "assigns `importlib.import_module")),
    ("import sys\nsys.modules['calc'] = None\n", (2, "assigns `sys.modules['calc']`")),
    ("import sys\n\ndef f():\n    sys.modules.update(calc=None)\n", (4, "calls `sys.modules.update(...)`")),
    ("import sys\nsys.modules['calc'].add = None\n", (2, "assigns `sys.modules['calc'].add`")),
    ("import builtins\nbuiltins.len = lambda x: 0\n", (2, "assigns `builtins.len`")),
    ("__builtins__['len'] = None\n", (1, "assigns `__builtins__['len']`")),
    ("from unittest import mock\nmock.patch('calc.add', lambda a, b: 3).start()\n", (2, "`mock.patch(...)`")),
    ("from unittest import mock\n\n@mock.patch('calc.add', lambda a, b: 3)\ndef run(t):\n    t()\n",
     (3, "`mock.patch(...)`")),
    ("import calc\nfrom unittest.mock import patch\n\ndef faked():\n    with patch.object(calc, 'add'):\n"
     "        yield\n", (5, "`patch.object(...)`")),
    ("def fake(monkeypatch):\n    monkeypatch.setattr('calc.add', lambda a, b: 3)\n",
     (2, "`monkeypatch.setattr(...)`")),
    ("import calc\n\ndef fake(mp):\n    mp.setattr(calc, 'add', lambda a, b: 3)\n", (4, "`mp.setattr(...)`")),
    ("from unittest import mock\nmock.patch.multiple('calc', add=None).start()\n", (2, "`mock.patch.multiple(...)`")),
    ("exec('import calc; calc.add = None')\n", (1, "calls `exec(...)`")),
    # another module's containers changed through their methods, as `calc.TABLE[k] = v` would
    ("import calc\ncalc.TABLE.update({'add': None})\n", (2, "calls `calc.TABLE.update(...)`")),
    ("import calc\n\ndef f(x):\n    calc.REGISTRY.append(x)\n", (4, "calls `calc.REGISTRY.append(...)`")),
    ("from pkg import calc\ncalc.CACHE.clear()\n", (2, "calls `calc.CACHE.clear(...)`")),
    ("import calc\ncalc.__dict__.update(add=None)\n", (2, "calls `calc.__dict__.update(...)`")),
    ("import calc\ncalc.SEEN.add(1)\ncalc.TABLE.__setitem__('k', 1)\n", (3, "calls `calc.TABLE.__setitem__(...)`")),
    ("import calc\nm = calc\n\ndef f():\n    m.TABLE.setdefault('k', 1)\n", (5, "calls `m.TABLE.setdefault(...)`")),
    ("import calc\n\nclass A:\n    def __init__(self):\n        self.m = calc\n\n    def go(self):\n"
     "        self.m.ITEMS.extend([1])\n", (8, "calls `self.m.ITEMS.extend(...)`")),
    # the class of an imported object, and the namespace of an imported module
    ("from calc import thing\ntype(thing).size = 3\n", (2, "assigns `type(thing).size`")),
    ("from calc import thing\nthing.__class__.size = 3\n", (2, "assigns `thing.__class__.size`")),
    ("import calc\nvars(calc)['add'] = None\n", (2, "assigns `vars(calc)['add']`")),
    ("import calc\ncalc.__dict__['add'] = None\n", (2, "assigns `calc.__dict__['add']`")),
], ids=lambda v: v[:30] if isinstance(v, str) else None)
def test_the_code_under_test_that_patches_another_module_is_found(code, expect):
    from crossreview.tamper import module_patches

    found = module_patches(code, {"src.calc2", "calc2"})
    line, what = expect
    assert any(f[0] == line and what in f[1] for f in found), found


@pytest.mark.parametrize("code", [
    "def f(items):\n    items.append(1)\n    items[0] = 2\n",
    "class B:\n    def __init__(self, h):\n        self.h = h\n        self.h.size = 1\n\n"
    "    @classmethod\n    def make(cls):\n        cls.count = 1\n        setattr(cls, 'made', True)\n",
    "_CACHE = {}\nCOUNT = 0\n\n\ndef f(k):\n    global COUNT\n    COUNT += 1\n    _CACHE[k] = 1\n"
    "    globals()['LAST'] = k\n",
    "import calc\n\n\ndef f(calc):\n    calc.add = None\n",  # the parameter hides the module
    "import calc\n\n\ndef f():\n    t = calc.Thing()\n    t.size = 3\n    setattr(t, 'name', 'x')\n",
    "import sys\nenv = {'err': sys.stderr}\nenv['k'] = 1\nsetattr(sys.modules[__name__], 'X', 1)\n",
    # a module's functions, its own globals, parameters, locals and objects may be changed by method
    "import calc, pkg.db\nfrom calc import Thing\ncalc.update(1)\npkg.db.insert(2)\n_SEEN = set()\n"
    "_SEEN.add(1)\n\n\ndef f(items, box):\n    items.append(1)\n    box.rows.clear()\n    d = {}\n"
    "    d.update(a=1)\n    t = calc.Thing()\n    t.items.append(1)\n    type(t).__name__\n"
    "    type(box).size = 1\n",
    "from unittest import mock\n\ndef f():\n    with mock.patch('src.calc2.helper'):\n        pass\n",  # itself
    "import os\n\n\ndef f(obj, name, value):\n    setattr(obj, name, value)\n    path = os.path.join('a', 'b')\n",
    "import httpx\n\n\ndef rename(client):\n    httpx.patch('https://x/items/1')\n    client.patch('users')\n",
    # a framework's objects used as a framework means them to be (Flask-SQLAlchemy, Flask's config)
    "from .ext import db\nfrom .app import app\napp.config.update(SECRET_KEY='x')\n\n\ndef save(row):\n"
    "    db.session.add(row)\n    db.session.remove()\n    app.extensions.setdefault('x', 1)\n",
], ids=["parameter", "self-and-cls", "own-globals", "shadowed-import", "own-objects", "own-containers",
        "methods-of-its-own", "patches-itself", "setattr-parameter", "http-patch", "framework-state"])
def test_ordinary_code_under_test_is_not_flagged(code):
    from crossreview.tamper import module_patches

    assert module_patches(code, {"src.calc2", "calc2"}) == []
    assert module_patches("def broken(:\n") is None


def test_new_code_under_test_that_a_new_test_imports_is_judged_by_what_it_patches():
    """The most common change, a function plus its test, is not escalated for what a function does to
    its own arguments, objects and globals; a patch of another module in the same file still is."""
    from crossreview.tamper import helper_reach, is_test_support

    before = "def add(a, b):\n    return a + b\n"
    grown = before + ("\n\ndef fill(items):\n    items.append(1)\n    return items\n\n\n"
                      "class Counter:\n    def __init__(self, start):\n        self.start = start\n"
                      "        self.seen = []\n\n    def see(self, x):\n        self.seen.append(x)\n\n\n"
                      "_TOTALS = {}\n\n\ndef remember(k, v):\n    _TOTALS[k] = v\n")
    tests = {"tests/test_more.py": (None, "import sys\nsys.path.insert(0, 'src')\nimport calc\n\n\n"
                                          "def test_fill():\n    assert calc.fill([]) == [1]\n")}
    assert helper_reach(tests, {"src/calc.py": (before, grown)}) == []
    assert helper_reach(tests, {"src/calc.py": (None, grown)}) == []
    patched = grown + "\n\nimport math\nmath.floor = lambda x: 0\n"
    [why] = helper_reach(tests, {"src/calc.py": (before, patched)})
    line = patched.splitlines().index("math.floor = lambda x: 0") + 1
    assert why == (f"src/calc.py:{line}: assigns `math.floor`, part of another module it imports, which stays "
                   "changed for the tests that run after it (imported by tests/test_more.py)"), why
    # a module named for the tests is a test helper, read as a test file: its functions' parameters may be
    # the module under test
    assert is_test_support("testing_utils.py") and is_test_support("src/fixtures/db.py")
    assert not is_test_support("src/calc.py") and not is_test_support("src/contest.py")
    fixer = "def fix(mod):\n    mod.add = None\n"
    assert helper_reach(tests, {"src/calc.py": (None, fixer)}) == []
    assert len(helper_reach({"tests/test_a.py": (None, "import testing_utils\n")},
                            {"testing_utils.py": (None, fixer)})) == 1


def test_a_function_of_the_code_under_test_handed_a_module_by_a_new_test_is_flagged():
    """`def fix(mod): mod.add = ...` is harmless until a caller hands it a module: a patch split between
    src/compat.py and the test that calls `compat.fix(calc)`."""
    from crossreview.tamper import helper_reach, modules_handed_to, parameter_patchers

    compat = ("def fix(mod):\n    mod.add = lambda a, b: 3\n\n\ndef fill(items):\n    items.append(1)\n"
              "    items[0] = 2\n\n\nclass Box:\n    def put(self, x):\n        self.x = x\n")
    assert parameter_patchers(compat) == {"fix": (2, "`fix` assigns `mod.add` on its parameter")}
    assert modules_handed_to("import calc as c\nfrom x import compat\ncompat.fix(mod=c.sub)\n", {"fix"}) \
        == [(3, "fix", "c.sub")]
    head = "import sys\nsys.path.insert(0, 'src')\nimport calc, compat\n\n"
    modules = {"src/compat.py": (None, compat)}
    [why] = helper_reach({"tests/test_a.py": (None, head + "\ndef test_x():\n    compat.fix(calc)\n")}, modules)
    assert why == ("src/compat.py:2: `fix` assigns `mod.add` on its parameter, and tests/test_a.py:7 hands it "
                   "`calc`, which it imports (imported by tests/test_a.py)"), why
    # what it makes, or a list, is no module
    ordinary = head + "\ndef test_x():\n    compat.fix(object())\n    compat.fill([])\n    compat.Box().put(calc)\n"
    assert helper_reach({"tests/test_a.py": (None, ordinary)}, modules) == []
    # the call can sit in another followed module
    through = {**modules, "src/setup_all.py": (None, "import calc\nfrom compat import fix\n\nfix(calc)\n")}
    [why] = helper_reach({"tests/test_a.py": (None, "import setup_all\n")}, through)
    assert "src/setup_all.py:4 hands it `calc`" in why, why
    # or an alias of the module it imports
    assert modules_handed_to("import calc\nfrom compat import fix\nm = calc\nn = m\nfix(n)\n", {"fix"}) \
        == [(5, "fix", "n")]
    assert modules_handed_to("import calc\nfrom compat import fix\nm = calc.Thing()\nfix(m)\n", {"fix"}) == []
    aliased = head + "\ndef test_x():\n    m = calc\n    compat.fix(m)\n"
    [why] = helper_reach({"tests/test_a.py": (None, aliased)}, modules)
    assert "tests/test_a.py:8 hands it `m`" in why, why
    # the base is trusted: an old function called the old way in an edited module is not the change's doing
    old = "import calc\n\n\ndef fix(mod):\n    mod.add = None\n\n\nfix(calc)\n"
    edited = {"src/compat.py": (old, old + "\n\ndef sub(a, b):\n    return a - b\n")}
    assert helper_reach({"tests/test_a.py": (None, "import compat\n")}, edited) == []
