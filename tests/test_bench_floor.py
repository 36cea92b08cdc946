"""bench/floor.py: the overhead benchmark's floor does the real work it claims to (no timing here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.floor import floor_run
from bench.run import trivial_task, write


@pytest.mark.parametrize("secure", [True, False], ids=["stack+security", "stack"])
def test_floor_runs_each_task_with_an_oracle_that_passes_and_a_noop_that_fails(tmp_path: Path, secure: bool):
    suite = tmp_path / "suite"
    for name in ("t1", "t2"):
        trivial_task(suite, name)
    floor_run(suite, 2, secure=secure)  # raises SystemExit when an outcome is not oracle pass, noop fail


@pytest.mark.parametrize("secure", [True, False], ids=["stack+security", "stack"])
def test_floor_stops_when_the_tests_do_not_say_what_the_task_expects(tmp_path: Path, secure: bool):
    suite = tmp_path / "suite"
    task = trivial_task(suite, "wrong")
    write(task / "solution" / "mod.py", "def ok():\n    return False\n")  # the oracle's tests now fail
    with pytest.raises(SystemExit, match="wrong: unexpected outcomes"):
        floor_run(suite, 1, secure=secure)
