"""Run a task's tests on a candidate and collect per-test outcomes from JUnit XML.

The tests are copied from the task folder (never from the candidate's
worktree) into a folder the repository cannot already have, after the agent
is done, and run from the worktree root with the task's verifier command.
Outcomes come from the JUnit XML pytest writes to a path outside the
worktree, not from scraping its text output.
"""

from __future__ import annotations

import shlex
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

from .models import Task, TestOutcome, TestReport
from .sandbox import run_confined
from .worktrees import TESTS_DIRNAME, copy_tests

_OUTPUT_TAIL = 4000
VERIFIER_ENV = {
    # The pytest plugins installed beside crossreview (langsmith, anyio,
    # hypothesis...) have no business in a candidate's test run, and cost
    # seconds per run; a task that needs one loads it with `-p NAME`.
    "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
}


def build_command(template: str, tests_rel: str, junit_path: Path) -> str:
    """The verifier command with {tests} filled in and JUnit XML requested from pytest."""
    cmd = template.replace("{tests}", shlex.quote(tests_rel))
    if "pytest" in cmd and "--junitxml" not in cmd and "--junit-xml" not in cmd:
        # --rootdir: test names relative to the worktree, not to the fence
        # config crossreview puts above all worktrees.
        cmd += f" --junitxml={shlex.quote(str(junit_path))} -p no:cacheprovider --rootdir=."
    return cmd


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


def run_tests(
    task: Task,
    worktree: Path,
    source: Path | None = None,
    dirname: str = TESTS_DIRNAME,
) -> TestReport:
    """Copy ``source`` (default: the task's tests/) into ``worktree`` and run the verifier."""
    source = source or task.tests_dir
    copy_tests(source, worktree, dirname)
    with tempfile.TemporaryDirectory(prefix="crossreview-junit-") as tmp:
        junit = Path(tmp) / "junit.xml"
        cmd = build_command(task.verifier_command, dirname, junit)
        proc = run_confined(cmd, cwd=worktree, timeout=task.verifier_timeout, shell=True, env=VERIFIER_ENV)
        outcomes: list[TestOutcome] = []
        if junit.is_file():
            try:
                outcomes = parse_junit(junit.read_text(errors="replace"), prefix=dirname + ".")
            except ET.ParseError as exc:
                outcomes = [TestOutcome(name="junit.xml", outcome="error", message=f"unreadable JUnit XML: {exc}")]
        elif not proc.timed_out:
            # A verifier that writes no JUnit XML is judged by its exit code alone.
            outcomes = [
                TestOutcome(
                    name="verifier",
                    outcome="passed" if proc.returncode == 0 else "failed",
                    message="" if proc.returncode == 0 else f"exit code {proc.returncode}",
                )
            ]
    output = (proc.stdout + proc.stderr)[-_OUTPUT_TAIL:]
    if proc.timed_out:
        output += f"\n[crossreview] verifier killed after {task.verifier_timeout:g}s"
    return TestReport(
        outcomes=outcomes,
        exit_code=proc.returncode,
        timed_out=proc.timed_out,
        seconds=round(proc.seconds, 3),
        output=output,
    )
