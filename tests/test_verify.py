"""crossreview.verify: JUnit parsing, the verifier command, and real pytest runs."""

from __future__ import annotations

import shlex
import time
from pathlib import Path

import pytest

from crossreview.models import Task
from crossreview.verify import build_command, parse_junit, run_tests
from crossreview.worktrees import TESTS_DIRNAME

# --- parse_junit ------------------------------------------------------------------

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites name="pytest tests">
  <testsuite name="pytest" errors="1" failures="1" skipped="1" tests="5">
    <testcase classname=".crossreview-tests.test_math" name="test_add" time="0.001"/>
    <testcase classname=".crossreview-tests.test_math" name="test_sub" time="0.001">
      <failure message="assert 1 == 2">def test_sub():\n&gt;  assert 1 == 2</failure>
    </testcase>
    <testcase classname=".crossreview-tests.test_math.TestDiv" name="test_zero" time="0.001">
      <error message="failed on setup with &quot;fixture 'db' not found&quot;">trace</error>
    </testcase>
    <testcase classname=".crossreview-tests.test_math" name="test_later" time="0.000">
      <skipped type="pytest.skip" message="not yet">skip reason</skipped>
    </testcase>
    <testcase classname="other.test_x" name="test_params[1-2]" time="0.000"/>
  </testsuite>
</testsuites>
"""


def test_parse_junit_outcomes():
    outs = parse_junit(JUNIT)
    assert [(o.name, o.outcome) for o in outs] == [
        (".crossreview-tests.test_math::test_add", "passed"),
        (".crossreview-tests.test_math::test_sub", "failed"),
        (".crossreview-tests.test_math.TestDiv::test_zero", "error"),
        (".crossreview-tests.test_math::test_later", "skipped"),
        ("other.test_x::test_params[1-2]", "passed"),
    ]
    assert outs[1].message == "assert 1 == 2"
    assert "fixture 'db' not found" in outs[2].message
    assert outs[3].message == "not yet"
    assert outs[0].message == ""


def test_parse_junit_strips_prefix_from_classnames_only_where_present():
    outs = parse_junit(JUNIT, prefix=".crossreview-tests.")
    assert [o.name for o in outs] == [
        "test_math::test_add",
        "test_math::test_sub",
        "test_math.TestDiv::test_zero",
        "test_math::test_later",
        "other.test_x::test_params[1-2]",
    ]


def test_parse_junit_failure_without_message_uses_text_and_truncates():
    xml = (
        '<testsuite><testcase classname="t" name="a"><failure>'
        + "x" * 2000
        + '</failure></testcase><testcase name="bare"/></testsuite>'
    )
    outs = parse_junit(xml)
    assert outs[0].outcome == "failed" and outs[0].message == "x" * 500
    assert outs[1].name == "bare" and outs[1].outcome == "passed"


def test_parse_junit_failure_wins_over_a_later_skip():
    xml = '<testsuite><testcase classname="t" name="a"><failure message="boom"/><skipped/></testcase></testsuite>'
    assert [(o.outcome, o.message) for o in parse_junit(xml)] == [("failed", "boom")]


def test_parse_junit_empty_suite():
    assert parse_junit('<testsuites><testsuite tests="0"/></testsuites>') == []


def test_parse_junit_collection_error_name_has_no_prefix():
    # pytest reports a module that fails to import as a testcase with an empty
    # classname and the module's dotted path as its name
    xml = (
        '<testsuites><testsuite><testcase classname="" name=".crossreview-tests.test_bad" time="0">'
        '<error message="collection failure">ImportError</error></testcase></testsuite></testsuites>'
    )
    outs = parse_junit(xml, prefix=".crossreview-tests.")
    assert [(o.name, o.outcome) for o in outs] == [("test_bad", "error")]


# --- build_command ---------------------------------------------------------------


def test_build_command_adds_junit_for_pytest(tmp_path):
    junit = tmp_path / "out dir" / "junit.xml"
    cmd = build_command("python -m pytest -q {tests}", TESTS_DIRNAME, junit)
    argv = shlex.split(cmd)
    assert argv[:4] == ["python", "-m", "pytest", "-q"]
    assert TESTS_DIRNAME in argv
    assert f"--junitxml={junit}" in argv  # quoted: the space survives the shell


def test_build_command_quotes_the_tests_path(tmp_path):
    cmd = build_command("python -m pytest {tests}", "my tests; rm -rf x", tmp_path / "j.xml")
    argv = shlex.split(cmd)
    assert "my tests; rm -rf x" in argv


def test_build_command_leaves_non_pytest_commands_alone(tmp_path):
    cmd = build_command("bash {tests}/run.sh", TESTS_DIRNAME, tmp_path / "j.xml")
    assert cmd == f"bash {TESTS_DIRNAME}/run.sh"
    assert "junit" not in cmd


def test_build_command_keeps_a_users_junitxml(tmp_path):
    cmd = build_command("pytest {tests} --junitxml=mine.xml", TESTS_DIRNAME, tmp_path / "j.xml")
    assert cmd.count("--junitxml") == 1 and "mine.xml" in cmd


# --- run_tests on real pytest ----------------------------------------------------


def make_task(tmp_path: Path, tests: dict[str, str], command: str = "python -m pytest -q {tests}",
              timeout: float = 60) -> Task:
    tdir = tmp_path / "task"
    (tdir / "tests").mkdir(parents=True)
    for name, text in tests.items():
        (tdir / "tests" / name).write_text(text)
    (tdir / "repo").mkdir()
    return Task(
        id="t", path=tdir, instruction="x", repo_path=tdir / "repo",
        verifier_command=command, verifier_timeout=timeout,
    )


@pytest.fixture
def worktree(tmp_path) -> Path:
    wt = tmp_path / "wt"
    wt.mkdir()
    (wt / "calc.py").write_text("def add(a, b):\n    return a + b\n\ndef sub(a, b):\n    return a + b  # bug\n")
    return wt


def test_run_tests_all_pass(tmp_path, worktree):
    task = make_task(tmp_path, {"test_calc.py": "from calc import add\n\ndef test_add():\n    assert add(2, 3) == 5\n"
                                "\ndef test_add_neg():\n    assert add(-1, 1) == 0\n"})
    report = run_tests(task, worktree)
    assert report.exit_code == 0 and not report.timed_out
    assert [(o.name, o.outcome) for o in report.outcomes] == [
        ("test_calc::test_add", "passed"),
        ("test_calc::test_add_neg", "passed"),
    ]
    assert report.all_passed and report.passed == report.total == 2
    assert report.seconds > 0
    # pytest's own summary also counts crossreview's canary (one test that must fail, not counted here)
    assert "3 passed" in report.output and "the canary test" in report.output
    # the tests were copied from the task folder into the worktree
    assert (worktree / TESTS_DIRNAME / "test_calc.py").is_file()


def test_run_tests_some_fail_named_per_test(tmp_path, worktree):
    task = make_task(tmp_path, {
        "test_calc.py": "from calc import add, sub\n\n"
        "def test_add():\n    assert add(2, 3) == 5\n\n"
        "def test_sub():\n    assert sub(5, 3) == 2\n\n"
        "class TestMore:\n    def test_sub_zero(self):\n        assert sub(1, 0) == 1\n",
    })
    report = run_tests(task, worktree)
    got = {o.name: o.outcome for o in report.outcomes}
    assert got == {
        "test_calc::test_add": "passed",
        "test_calc::test_sub": "failed",
        "test_calc.TestMore::test_sub_zero": "passed",
    }
    failed = next(o for o in report.outcomes if o.outcome == "failed")
    assert "assert 8 == 2" in failed.message
    assert report.exit_code == 1 and not report.all_passed
    assert report.passed == 2 and report.total == 3


def test_run_tests_collection_error(tmp_path, worktree):
    task = make_task(tmp_path, {
        "test_ok.py": "def test_ok():\n    assert True\n",
        "test_bad.py": "from calc import multiply\n\ndef test_mul():\n    assert multiply(2, 3) == 6\n",
    })
    report = run_tests(task, worktree)
    errors = [o for o in report.outcomes if o.outcome == "error"]
    assert len(errors) == 1
    assert "test_bad" in errors[0].name
    assert report.exit_code == 2
    assert not report.all_passed
    assert "multiply" in report.output


def test_verifier_without_junit_judged_by_exit_code(tmp_path, worktree):
    ok = make_task(tmp_path / "ok", {"test_a.py": ""}, command="python -c 'import sys; sys.exit(0)' {tests}")
    report = run_tests(ok, worktree)
    assert [(o.name, o.outcome) for o in report.outcomes] == [("verifier", "passed")]
    assert report.exit_code == 0 and report.all_passed

    bad = make_task(tmp_path / "bad", {"test_a.py": ""}, command="python -c 'import sys; sys.exit(4)' {tests}")
    report = run_tests(bad, worktree)
    assert [(o.name, o.outcome) for o in report.outcomes] == [("verifier", "failed")]
    assert report.outcomes[0].message == "exit code 4"
    assert report.exit_code == 4 and not report.all_passed


def test_verifier_gets_the_tests_path(tmp_path, worktree):
    cmd = "python -c 'import os, sys; sys.exit(0 if os.path.isfile(sys.argv[1] + \"/check.txt\") else 9)' {tests}"
    task = make_task(tmp_path, {"check.txt": "x"}, command=cmd)
    assert run_tests(task, worktree).all_passed


def _process_gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")  # a zombie runs nothing


def test_hung_verifier_is_killed(tmp_path, worktree, unsandboxed):
    pidfile = tmp_path / "pytest.pid"
    task = make_task(
        tmp_path,
        {"test_hang.py": (
            "import os, time\n\n"
            "def test_hang():\n"
            f"    open({str(pidfile)!r}, 'w').write(str(os.getpid()))\n"
            "    time.sleep(60)\n"
        )},
        timeout=2,
    )
    started = time.monotonic()
    report = run_tests(task, worktree)
    elapsed = time.monotonic() - started
    assert report.timed_out is True
    assert report.exit_code is None
    assert not report.all_passed
    assert elapsed < 15
    assert "killed after 2s" in report.output
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while not _process_gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _process_gone(pid), f"the verifier's pytest (pid {pid}) is still running"


def test_tests_come_from_the_task_not_the_worktree(tmp_path, worktree):
    task = make_task(tmp_path, {"test_calc.py": "from calc import sub\n\ndef test_sub():\n    assert sub(5, 3) == 2\n"})
    # the agent planted its own, friendlier tests where crossreview copies the real ones
    planted = worktree / TESTS_DIRNAME
    planted.mkdir()
    (planted / "test_calc.py").write_text("def test_sub():\n    assert True\n")
    (planted / "test_extra.py").write_text("def test_free():\n    assert True\n")
    (planted / "conftest.py").write_text("import pytest\n")
    report = run_tests(task, worktree)
    assert [(o.name, o.outcome) for o in report.outcomes] == [("test_calc::test_sub", "failed")]
    assert sorted(p.name for p in planted.iterdir()) == ["test_calc.py"]
    assert "assert sub(5, 3) == 2" in (planted / "test_calc.py").read_text()


def test_tests_copied_over_a_planted_file(tmp_path, worktree):
    task = make_task(tmp_path, {"test_one.py": "def test_one():\n    assert True\n"})
    (worktree / TESTS_DIRNAME).write_text("not a folder")
    report = run_tests(task, worktree)
    assert [o.name for o in report.outcomes] == ["test_one::test_one"] and report.all_passed


def test_run_tests_from_another_source(tmp_path, worktree):
    task = make_task(tmp_path, {"test_calc.py": "def test_a():\n    assert True\n"})
    holdout = tmp_path / "holdout"
    holdout.mkdir()
    (holdout / "test_hold.py").write_text("from calc import sub\n\ndef test_h():\n    assert sub(1, 1) == 0\n")
    report = run_tests(task, worktree, source=holdout, dirname=".crossreview-holdout")
    assert [(o.name, o.outcome) for o in report.outcomes] == [("test_hold::test_h", "failed")]
    assert not (worktree / TESTS_DIRNAME).exists()


def test_verifier_runs_from_the_worktree_root(tmp_path, worktree):
    task = make_task(tmp_path, {"test_cwd.py": (
        "import os\n\ndef test_cwd():\n"
        f"    assert os.getcwd() == {str(worktree)!r}\n"
    )})
    report = run_tests(task, worktree)
    assert report.all_passed, report.output
