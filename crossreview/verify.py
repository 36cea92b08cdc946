"""Run a task's tests on a candidate and collect per-test outcomes from JUnit XML.

The tests are copied from the task folder (never from the candidate's
worktree) into a folder the repository cannot already have, after the agent
is done, and run from the worktree root with the task's verifier command,
inside the sandbox (no network, writes only in the worktree and the JUnit
folder, the task's solution/ and holdout/ masked).
Outcomes come from the JUnit XML pytest writes to a path outside the
worktree, not from scraping its text output.

A candidate's code runs inside the same pytest process as its tests, so it
could try to change what pytest reports. Two checks make that visible:

- a pytest run that writes no JUnit XML (``os._exit(0)`` at import, a fake
  ``pytest`` module) is an error, never a pass by exit code;
- a canary test file is copied in beside the task's tests: one test that
  must fail and one that checks ``assert`` and ``unittest`` assertions
  still raise. If the must-fail test is reported passed, an assertion does
  not raise, or the canary never ran, the outcomes were tampered with and the
  report says so (``TestReport.tampering``). The canary is not counted.
  A verifier that names no ``{tests}`` (the gate's default ``python -m
  pytest -q``, which collects the repository's own tests) gets the canary
  too: a small plugin (``-p``, from the JUnit folder) adds its tests after
  the ones pytest collected from the configured paths or ``testpaths``.
  A ``conftest.py``'s hooks apply only to tests in its folder, so when the
  change adds or edits one below the root, a copy of the canary (names of
  its own) goes into that folder as well and is checked the same way.
"""

from __future__ import annotations

import re
import secrets
import shlex
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from . import tamper
from .models import Task, TestOutcome, TestReport
from .sandbox import run_confined, verifier_policy
from .worktrees import TESTS_DIRNAME, copy_tests

_OUTPUT_TAIL = 4000
VERIFIER_ENV = {
    # The pytest plugins installed beside crossreview (langsmith, anyio,
    # hypothesis...) have no business in a candidate's test run, and cost
    # seconds per run; a task that needs one loads it with `-p NAME`.
    "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
}
_CANARY_WORDS = ("inputs", "edges", "values", "behaviour", "cases", "basics", "extras", "limits", "parsing",
                 "results", "errors", "formats", "regressions", "types", "examples", "corner_cases", "outputs")
CANARY_SOURCE = '''\
def {must_fail}():
    __tracebackhide__ = True
    assert {a} + {b} == {c}


def {asserts}():
    import unittest

    case = unittest.TestCase()
    checks = [
        lambda: case.assertEqual({a}, {b}),
        lambda: case.assertTrue(False),
        lambda: case.assertIn({a}, []),
        lambda: case.assertRaises(ValueError, lambda: None),
        lambda: case.fail("x"),
    ]
    for i, check in enumerate(checks):
        try:
            check()
        except AssertionError:
            continue
        raise RuntimeError("unittest assertion %d did not raise" % i)
    try:
        assert {a} == {b}
    except AssertionError:
        pass
    else:
        raise RuntimeError("an assert statement did not raise")
'''


@dataclass(frozen=True)
class Canary:
    """The canary test file of one test run, its names drawn at random.

    Nothing in its names or text says what it is: a candidate that rewrites
    every outcome but the canary's would first have to tell it from the
    task's own tests, which it was not shown.
    """

    module: str
    must_fail: str
    asserts: str
    a: int
    b: int

    def source(self) -> str:
        """The test file's text."""
        return CANARY_SOURCE.format(must_fail=self.must_fail, asserts=self.asserts, a=self.a, b=self.b,
                                    c=self.a + self.b + 1 + secrets.randbelow(9))


def new_canary(taken: set[str] = frozenset()) -> Canary:
    """A canary with names like a task's tests, none of them in ``taken`` (the tests folder's modules)."""
    pick = secrets.choice
    while True:
        module = f"test_{pick(_CANARY_WORDS)}_{10 + secrets.randbelow(90)}"
        first, second = pick(_CANARY_WORDS), pick(_CANARY_WORDS)
        a = 10 + secrets.randbelow(90)
        b = a + 1 + secrets.randbelow(50)  # never equal: `assert a == b` must raise
        if module not in taken and first != second:
            return Canary(module, f"test_{first}", f"test_{second}", a, b)


_NO_CANARY_FLAGS = re.compile(r"(^|\s)(-x|--exitfirst|--maxfail|-k|-m|--lf|--last-failed|--ff|--sw|--stepwise|--deselect|--co|--collect-only|-p\s*no:python)\b")


def build_command(template: str, tests_rel: str, junit_path: Path, plugin: str | None = None) -> str:
    """The verifier command with {tests} filled in and JUnit XML requested from pytest.

    ``plugin``: a module pytest loads with ``-p`` (the canary's, for a verifier without {tests}).
    """
    cmd = template.replace("{tests}", shlex.quote(tests_rel))
    if wants_junit(template):
        # --rootdir: test names relative to the worktree, not to the fence
        # config crossreview puts above all worktrees.
        cmd += f" --junitxml={shlex.quote(str(junit_path))} -p no:cacheprovider --rootdir=."
        if plugin:
            cmd += f" -p {shlex.quote(plugin)}"
    return cmd


def wants_junit(template: str) -> bool:
    """Whether crossreview asks the verifier (pytest) for JUnit XML."""
    return "pytest" in template and "--junitxml" not in template and "--junit-xml" not in template


def canary_applies(template: str) -> bool:
    """The canary runs when pytest is given the whole tests folder and nothing deselects or stops early."""
    return (
        wants_junit(template)
        and re.search(r"(^|\s)\{tests\}/?(\s|$)", template) is not None
        and not _NO_CANARY_FLAGS.search(template.split("pytest", 1)[1])  # pytest's flags, not python's -m
    )


def canary_by_plugin(template: str) -> bool:
    """A pytest run that names no {tests} (it collects the repository's own tests, as the gate's default
    verifier does) gets the canary through a plugin, when nothing deselects or stops early."""
    return (
        wants_junit(template)
        and "{tests}" not in template
        and not _NO_CANARY_FLAGS.search(template.split("pytest", 1)[1])
    )


CANARY_PLUGIN_SOURCE = '''\
from pathlib import Path

import pytest

_PATHS = [Path(p) for p in {paths!r}]
_EARLY = set()
_SESSION = []


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session, config, items):
    # A copy beside a conftest.py may have been collected already, mid-run: it moves to the end with the rest.
    items[:] = [i for i in items if Path(i.path).resolve() not in _PATHS]
    musts, others = [], []
    for path in _PATHS:
        # each module defines its must-fail test first
        first, *rest = pytest.Module.from_parent(session, path=path).collect()
        musts.append(first)
        others.extend(rest)
    # the tests that must fail go last: a configured -x / --maxfail then stops after them, not before the others
    items.extend(others + musts)
    _EARLY.update(i.nodeid for i in musts[:-1])
    _SESSION.append(session)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_logreport(report):
    # A must-fail test before the last one must not trip -x / --maxfail, so the later copies still run: the
    # session counts it, but its limit grows by one first (only canaries come after it). pytest will not unset
    # a session's shouldfail once set, and the session's own hook is tryfirst, hence a wrapper.
    if report.failed and report.nodeid in _EARLY and _SESSION:
        option = _SESSION[0].config.option
        if getattr(option, "maxfail", 0):
            option.maxfail += 1
    yield
'''
"""Adds the canaries' tests after everything collected and selected. (Appending a path to the
collection arguments does not work: under the rootdir, a dot-folder, it is merged away.)"""


def conftest_folders(worktree: Path, changed: list[str] | tuple[str, ...]) -> list[Path]:
    """Folders below the root of ``worktree`` holding a conftest.py among the ``changed`` files.

    A conftest.py's hooks reach only the tests in and under its folder; the root's reach the canary
    wherever it is. A folder that leads outside the worktree (through a symbolic link) is left out:
    crossreview writes the canary there.
    """
    root = worktree.resolve()
    out: list[Path] = []
    for raw in changed:
        rel = Path(raw)
        if rel.name != "conftest.py" or len(rel.parts) < 2 or rel.is_absolute() or ".." in rel.parts:
            continue
        folder = worktree / rel.parent
        if (folder / "conftest.py").is_file() and folder.resolve() == root / rel.parent and folder not in out:
            out.append(folder)
    return out


def _module_stems(root: Path, limit: int = 200_000) -> set[str]:
    """Names of the Python modules under ``root`` (not .git), so the canary's name collides with none."""
    import os

    stems: set[str] = set()
    for n, (folder, dirs, files) in enumerate(os.walk(root)):
        dirs[:] = [d for d in dirs if d != ".git"]
        stems.update(f[:-3] for f in files if f.endswith(".py"))
        if n > limit:
            break
    return stems


def parse_junit(xml_text: str, prefix: str = "") -> list[TestOutcome]:
    """Per-test outcomes from a JUnit XML document (pytest's flavour, any family).

    ``prefix`` (the folder the tests were copied to) is dropped from names, so
    a test is called the same in every candidate's report.
    """
    root = ET.fromstring(xml_text)
    outcomes: list[TestOutcome] = []
    for case in root.iter("testcase"):
        classname = case.get("classname") or ""
        raw_name = case.get("name", "?")
        if prefix and classname.startswith(prefix):
            classname = classname[len(prefix):]
        elif prefix and not classname and raw_name.startswith(prefix):
            raw_name = raw_name[len(prefix):]  # a collection error names the module only
        name = f"{classname}::{raw_name}" if classname else raw_name
        outcome, message = "passed", ""
        for child in case:
            if child.tag == "failure":
                outcome, message = "failed", child.get("message") or (child.text or "")
                break
            if child.tag == "error":
                outcome, message = "error", child.get("message") or (child.text or "")
                break
            if child.tag == "skipped":
                outcome, message = "skipped", child.get("message") or ""
        outcomes.append(TestOutcome(name=name, outcome=outcome, message=message[:500]))
    return outcomes


def _in_module(name: str, module: str) -> bool:
    # JUnit names the test "<folder>.<module>::<test>" or "<module>.<test>", by pytest's flavour.
    return re.search(rf"(^|[./:]){re.escape(module)}([.:]|$)", name) is not None


def check_canary(outcomes: list[TestOutcome], canary: Canary) -> tuple[list[TestOutcome], list[str]]:
    """Split the canary's outcomes off; return (the task's outcomes, tampering found)."""
    mine = [o for o in outcomes if _in_module(o.name, canary.module)]
    rest = [o for o in outcomes if not _in_module(o.name, canary.module)]
    found = {}
    for o in mine:
        for test in (canary.must_fail, canary.asserts):
            if o.name.endswith("::" + test) or o.name.endswith("." + test):
                found[test] = o
    problems = []
    must_fail, asserts = found.get(canary.must_fail), found.get(canary.asserts)
    if must_fail is None and asserts is None:
        if any(o.outcome in ("error", "failed") for o in rest) and not mine:
            # pytest stops before running anything when a test module fails to
            # import, and a configured -x / --maxfail stops at a failure before
            # the canary: the candidate's tests fail anyway; nothing to hide here.
            return rest, []
        if any(o.outcome == "error" for o in mine):
            problems.append("crossreview's canary test could not even be imported: something in the candidate "
                            "breaks or replaces how tests are collected")
        else:
            problems.append("crossreview's canary test did not run: the candidate changes which tests are "
                            "collected, or ends the test run early")
    else:
        if must_fail is None or must_fail.outcome != "failed":
            got = must_fail.outcome if must_fail else "missing"
            problems.append(f"a canary test that must fail was reported {got}: something in the candidate "
                            "rewrites test outcomes")
        if asserts is None or asserts.outcome != "passed":
            why = (asserts.message.splitlines() or [""])[0][:200] if asserts else "missing"
            problems.append(f"assertions do not work in the candidate's test run ({why})")
    return rest, problems


def run_tests(
    task: Task,
    worktree: Path,
    source: Path | None = None,
    dirname: str = TESTS_DIRNAME,
    changed: list[str] | tuple[str, ...] = (),
) -> TestReport:
    """Copy ``source`` (default: the task's tests/) into ``worktree`` and run the verifier.

    ``changed``: the files the candidate's diff touches; a conftest.py among them gets a copy of the
    canary beside it when the verifier collects the repository's own tests.
    """
    source = source or task.tests_dir
    dest = copy_tests(source, worktree, dirname)
    by_plugin = canary_by_plugin(task.verifier_command)
    if canary_applies(task.verifier_command):
        spec = new_canary({p.stem for p in dest.rglob("*.py")})
    elif by_plugin:
        # pytest collects the repository's own tests: the canary's module name must be none of theirs
        spec = new_canary(_module_stems(worktree))
    else:
        spec = None
    canary = dest / f"{spec.module}.py" if spec is not None else None
    if canary is not None:
        canary.write_text(spec.source())
    copies: list[tuple[Canary, Path]] = []  # the canary beside each conftest.py the change touches
    if by_plugin and spec is not None:
        taken = _module_stems(worktree)
        for folder in conftest_folders(worktree, changed):
            extra = new_canary(taken)
            taken.add(extra.module)
            copies.append((extra, folder / f"{extra.module}.py"))
            copies[-1][1].write_text(extra.source())
    tampering: list[str] = []
    pointer = tamper.git_pointer(worktree)
    try:
        with tempfile.TemporaryDirectory(prefix="crossreview-junit-") as tmp:
            junit = Path(tmp) / "junit.xml"
            env, plugin = dict(VERIFIER_ENV), None
            if by_plugin and canary is not None:
                plugin = f"{spec.module}_{secrets.token_hex(4)}"
                paths = [str(c.resolve()) for c in [canary, *(path for _, path in copies)]]
                Path(tmp, plugin + ".py").write_text(CANARY_PLUGIN_SOURCE.format(paths=paths))
                env["PYTHONPATH"] = str(Path(tmp).resolve())
            cmd = build_command(task.verifier_command, dirname, junit, plugin)
            proc = run_confined(
                cmd, cwd=worktree, timeout=task.verifier_timeout, shell=True, env=env,
                policy=verifier_policy(task, worktree, Path(tmp)),
            )
            exit_code = proc.returncode
            outcomes: list[TestOutcome] = []
            if junit.is_file():
                try:
                    outcomes = parse_junit(junit.read_text(errors="replace"), prefix=dirname + ".")
                except ET.ParseError as exc:
                    outcomes = [TestOutcome(name="junit.xml", outcome="error", message=f"unreadable JUnit XML: {exc}")]
                    tampering.append(f"pytest's JUnit XML is unreadable ({exc}): the report was damaged")
                else:
                    if canary is not None:
                        outcomes, tampering = check_canary(outcomes, spec)
                        for extra, path in copies:
                            outcomes, found = check_canary(outcomes, extra)
                            where = path.parent.relative_to(worktree).as_posix()
                            tampering += [f"{where}/conftest.py: {problem} (the canary beside it)"
                                          for problem in found]
                        real_failures = any(o.outcome in ("failed", "error") for o in outcomes)
                        if not tampering and exit_code == 1 and not real_failures:
                            exit_code = 0  # the one failure was the canary's, as it must be
            elif proc.timed_out:
                pass
            elif wants_junit(task.verifier_command):
                # pytest always writes the report it was asked for; a run without
                # one ended inside the candidate's code (os._exit at import, a
                # fake pytest module, a crash) and proves nothing, whatever its
                # exit code. Exit code 0 without a report is a lie.
                outcomes = [TestOutcome(
                    name="junit.xml", outcome="error",
                    message=f"pytest wrote no JUnit XML (exit code {proc.returncode}): the test run did not finish",
                )]
                if proc.returncode == 0:
                    tampering.append(
                        "the test run exited 0 without pytest's report: something in the candidate stops or "
                        "replaces pytest"
                    )
            else:
                # A verifier that is not pytest is judged by its exit code alone.
                outcomes = [
                    TestOutcome(
                        name="verifier",
                        outcome="passed" if proc.returncode == 0 else "failed",
                        message="" if proc.returncode == 0 else f"exit code {proc.returncode}",
                    )
                ]
    finally:
        if canary is not None:
            canary.unlink(missing_ok=True)
        for _, path in copies:
            path.unlink(missing_ok=True)
        # The tests ran the candidate's code in the worktree: before crossreview
        # runs git there again, its .git must be the one crossreview made.
        fixed = pointer and tamper.restore_git_pointer(worktree, pointer)
        if fixed:
            tampering.append(f"{fixed}, while its tests ran")
    output = (proc.stdout + proc.stderr)[-_OUTPUT_TAIL:]
    if canary is not None and not tampering and not proc.timed_out:
        output += ("\n[crossreview] the canary test (one that must fail, beside the task's tests) failed as it "
                   "must and is not counted")
    if proc.timed_out:
        output += f"\n[crossreview] verifier killed after {task.verifier_timeout:g}s"
    return TestReport(
        outcomes=outcomes,
        exit_code=exit_code,
        timed_out=proc.timed_out,
        seconds=round(proc.seconds, 3),
        output=output,
        tampering=tampering,
    )
