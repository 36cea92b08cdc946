"""crossreview.tasks: finding, loading and validating task folders and suite config."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from crossreview.models import Task, TaskError
from crossreview.tasks import (
    ConfigError,
    find_task_dirs,
    load_suite,
    load_suite_config,
    load_task,
)

GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.invalid",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
}

DEFAULT_TESTS = {"test_it.py": "def test_it():\n    assert True\n"}


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, env=GIT_ENV, check=True, capture_output=True, text=True, timeout=30
    ).stdout.strip()


def make_git_repo(path: Path, files: dict[str, str] | None = None) -> str:
    """A real git repository at ``path`` with one commit; returns the commit."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q")
    for name, text in (files or {"README": "hello\n"}).items():
        (path / name).write_text(text)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "init")
    return git(path, "rev-parse", "HEAD")


def make_task(
    root: Path,
    name: str,
    toml: str | None = "",
    instruction: str | None = "Do the thing.\n",
    tests: dict[str, str] | None = DEFAULT_TESTS,
    repo: dict[str, str] | None = None,
    with_repo: bool = True,
) -> Path:
    """A task folder under ``root``; pass None to leave a part out."""
    d = root / name
    d.mkdir(parents=True)
    if toml is not None:
        (d / "task.toml").write_text(toml)
    if instruction is not None:
        (d / "instruction.md").write_text(instruction)
    if tests is not None:
        (d / "tests").mkdir()
        for fname, text in tests.items():
            (d / "tests" / fname).write_text(text)
    if with_repo:
        (d / "repo").mkdir()
        for fname, text in (repo or {"main.py": "x = 1\n"}).items():
            (d / "repo" / fname).write_text(text)
    return d


def errors_of(task_dir: Path) -> list[TaskError]:
    loaded = load_task(task_dir)
    assert isinstance(loaded, list), f"expected errors, got a task: {loaded!r}"
    assert loaded, "an empty error list is not an error report"
    assert all(isinstance(e, TaskError) for e in loaded)
    return loaded


def only_error(task_dir: Path) -> TaskError:
    errs = errors_of(task_dir)
    assert len(errs) == 1, [str(e) for e in errs]
    return errs[0]


# --- a good task -------------------------------------------------------------


def test_good_task_loads_with_defaults(tmp_path):
    d = make_task(tmp_path, "fizzbuzz", toml='version = "1.0"\n')
    task = load_task(d)
    assert isinstance(task, Task), task
    assert task.id == "fizzbuzz"
    assert task.path == d.resolve()
    assert task.instruction == "Do the thing.\n"
    assert task.verifier_command == "python -m pytest -q {tests}"
    assert task.verifier_timeout == 120
    assert task.agent_timeout == 900
    assert task.tests_visible is False
    assert task.repo_path == (d / "repo").resolve()
    assert task.repo_ref == "HEAD"
    assert task.repo_is_folder is True
    assert task.tags == [] and task.metadata == {}


def test_empty_task_toml_is_enough(tmp_path):
    task = load_task(make_task(tmp_path, "t1", toml=""))
    assert isinstance(task, Task), task
    assert task.id == "t1"


def test_all_sections_are_read(tmp_path):
    toml = """
version = "1.0"
[task]
id = "custom-id"
tags = ["easy", "py"]
[metadata]
author = "me"
[agent]
timeout_sec = 30
[verifier]
command = "python -m pytest -x {tests}"
timeout_sec = 7.5
tests_visible = true
"""
    task = load_task(make_task(tmp_path, "folder_name", toml=toml))
    assert isinstance(task, Task), task
    assert task.id == "custom-id"
    assert task.tags == ["easy", "py"]
    assert task.metadata == {"author": "me"}
    assert task.agent_timeout == 30
    assert task.verifier_command == "python -m pytest -x {tests}"
    assert task.verifier_timeout == 7.5
    assert task.tests_visible is True


# --- each malformed task has its own error -----------------------------------


def test_missing_instruction(tmp_path):
    d = make_task(tmp_path, "t", instruction=None)
    e = only_error(d)
    assert e.file == d.resolve() / "instruction.md"
    assert "missing" in e.message
    assert "instruction.md" in str(e)


def test_empty_instruction(tmp_path):
    d = make_task(tmp_path, "t", instruction="  \n\n\t\n")
    e = only_error(d)
    assert e.file == d.resolve() / "instruction.md"
    assert "empty" in e.message


def test_bad_toml_syntax_names_task_toml(tmp_path):
    d = make_task(tmp_path, "t", toml='[task\nid = "x"\n')
    e = only_error(d)
    assert e.file == d.resolve() / "task.toml"
    assert "task.toml" in str(e)
    assert "TOML" in e.message


def test_unknown_top_level_key_lists_allowed_keys(tmp_path):
    d = make_task(tmp_path, "t", toml='verison = "1.0"\n')
    e = only_error(d)
    assert e.file == d.resolve() / "task.toml"
    assert e.field == "verison"
    assert "unknown key 'verison'" in e.message
    for allowed in ("version", "task", "metadata", "agent", "verifier", "repo"):
        assert allowed in e.message


def test_unknown_verifier_key_lists_verifier_keys(tmp_path):
    d = make_task(tmp_path, "t", toml="[verifier]\ntimeout = 5\n")
    e = only_error(d)
    assert e.file == d.resolve() / "task.toml"
    assert e.field == "verifier.timeout"
    assert "unknown key 'timeout'" in e.message
    expected = e.message.split("expected one of:", 1)[1]
    for allowed in ("command", "timeout_sec", "tests_visible"):
        assert allowed in expected
    assert "repo" not in expected  # the [verifier] keys, not the top-level ones


def test_wrong_type_timeout(tmp_path):
    d = make_task(tmp_path, "t", toml='[verifier]\ntimeout_sec = "soon"\n')
    e = only_error(d)
    assert e.file == d.resolve() / "task.toml"
    assert e.field == "verifier.timeout_sec"
    assert "soon" in e.message
    assert "number" in e.message


@pytest.mark.parametrize(
    "toml, field, said",
    [
        ('[agent]\ntimeout_sec = "10"\n', "agent.timeout_sec",
         'expected a number, got the string "10"; write timeout_sec = 10'),
        ('[verifier]\ntimeout_sec = "2.5"\n', "verifier.timeout_sec",
         'expected a number, got the string "2.5"; write timeout_sec = 2.5'),
        ('[verifier]\ntests_visible = "true"\n', "verifier.tests_visible",
         'expected true or false, got the string "true"; write tests_visible = true'),
        ("[verifier]\ntests_visible = 0\n", "verifier.tests_visible",
         "expected true or false, got 0; write tests_visible = false"),
    ],
    ids=["agent-timeout", "verifier-timeout", "tests-visible-string", "tests-visible-integer"],
)
def test_a_number_or_boolean_written_as_another_type_is_refused_with_the_fix(tmp_path, toml, field, said):
    """TOML has real numbers and booleans: "10" is a mistake to name, not one to read as 10."""
    d = make_task(tmp_path, "t", toml=toml)
    e = only_error(d)
    assert (e.file, e.field, e.message) == (d.resolve() / "task.toml", field, said)
    assert str(e) == f"{d.resolve() / 'task.toml'}: {field}: {said}"


def test_a_task_with_a_quoted_number_does_not_stop_the_suite(tmp_path):
    make_task(tmp_path, "alpha")
    broken = make_task(tmp_path, "broken", toml='[agent]\ntimeout_sec = "10"\n')
    suite = load_suite([tmp_path])
    assert [t.id for t in suite.tasks] == ["alpha"]
    [e] = suite.errors
    assert (e.path, e.field) == (broken.resolve(), "agent.timeout_sec")


def test_negative_timeout(tmp_path):
    d = make_task(tmp_path, "t", toml="[agent]\ntimeout_sec = -5\n")
    e = only_error(d)
    assert e.field == "agent.timeout_sec"
    assert "greater than 0" in e.message
    assert "-5" in e.message


def test_missing_tests_folder(tmp_path):
    d = make_task(tmp_path, "t", tests=None)
    e = only_error(d)
    assert e.file == d.resolve() / "tests"
    assert "missing" in e.message


def test_tests_folder_without_test_files(tmp_path):
    d = make_task(tmp_path, "t", tests={"helpers.py": "X = 1\n", "notes.txt": "hi\n"})
    e = only_error(d)
    assert e.file == d.resolve() / "tests"
    assert "test_*.py" in e.message


def test_missing_repo_folder(tmp_path):
    d = make_task(tmp_path, "t", with_repo=False)
    e = only_error(d)
    assert e.field == "repo.path"
    assert "'repo' does not exist" in e.message
    assert str(d.resolve() / "repo") in str(e)


def test_repo_path_that_does_not_exist_names_task_toml(tmp_path):
    d = make_task(tmp_path, "t", toml='[repo]\npath = "../nowhere"\n')
    e = only_error(d)
    assert e.file == d.resolve() / "task.toml"
    assert e.field == "repo.path"
    assert "nowhere" in e.message


def test_ref_that_is_not_a_commit(tmp_path):
    make_git_repo(tmp_path / "upstream")
    d = make_task(tmp_path, "t", toml='[repo]\npath = "../upstream"\nref = "no-such-branch"\n')
    e = only_error(d)
    assert e.file == d.resolve() / "task.toml"
    assert e.field == "repo.ref"
    assert "'no-such-branch' is not a commit" in e.message


def test_ref_for_a_plain_folder(tmp_path):
    d = make_task(tmp_path, "t", toml='[repo]\nref = "v1.0"\n')
    e = only_error(d)
    assert e.file == d.resolve() / "task.toml"
    assert e.field == "repo.ref"
    assert "git repository" in e.message


def test_verifier_command_without_tests_placeholder(tmp_path):
    d = make_task(tmp_path, "t", toml='[verifier]\ncommand = "python -m pytest -q tests/"\n')
    e = only_error(d)
    assert e.file == d.resolve() / "task.toml"
    assert e.field == "verifier.command"
    assert "{tests}" in e.message


@pytest.mark.parametrize("bad_id", ["has space", "slash/inside", "-leading-dash", "a" * 101, "ünï"])
def test_invalid_task_id(tmp_path, bad_id):
    d = make_task(tmp_path, "t", toml=f'[task]\nid = "{bad_id}"\n')
    e = only_error(d)
    assert e.file == d.resolve() / "task.toml"
    assert e.field == "task.id"
    assert repr(bad_id) in e.message


def test_invalid_folder_name_as_default_id(tmp_path):
    d = make_task(tmp_path, "my task")
    e = only_error(d)
    assert e.field == "task.id"
    assert "'my task'" in e.message


def test_several_problems_are_all_reported(tmp_path):
    d = make_task(tmp_path, "t", instruction=None, tests=None)
    files = {e.file for e in errors_of(d)}
    assert files == {d.resolve() / "instruction.md", d.resolve() / "tests"}


def test_duplicate_ids_across_two_folders(tmp_path):
    make_task(tmp_path, "one", toml='[task]\nid = "same"\n')
    two = make_task(tmp_path, "two", toml='[task]\nid = "same"\n')
    suite = load_suite([tmp_path])
    assert [t.path.name for t in suite.tasks] == ["one"]
    assert len(suite.errors) == 1
    e = suite.errors[0]
    assert e.file == two.resolve() / "task.toml"
    assert e.field == "task.id"
    assert "'same'" in e.message and "one" in e.message


# --- suites ------------------------------------------------------------------


def test_suite_with_one_broken_task_still_loads_the_rest(tmp_path):
    make_task(tmp_path, "alpha")
    broken = make_task(tmp_path, "broken", toml="[task\n")
    make_task(tmp_path, "gamma")
    suite = load_suite([tmp_path])
    assert sorted(t.id for t in suite.tasks) == ["alpha", "gamma"]
    assert len(suite.errors) == 1
    assert suite.errors[0].path == broken.resolve()
    assert suite.errors[0].file == broken.resolve() / "task.toml"


def test_load_suite_of_a_single_task_folder(tmp_path):
    d = make_task(tmp_path, "solo")
    suite = load_suite([d])
    assert [t.id for t in suite.tasks] == ["solo"] and suite.errors == []


def test_repo_path_to_existing_git_repository(tmp_path):
    head = make_git_repo(tmp_path / "project", {"lib.py": "def f(): return 1\n"})
    d = make_task(tmp_path / "suite", "t", toml='[repo]\npath = "../../project"\nref = "HEAD"\n')
    task = load_task(d)
    assert isinstance(task, Task), [str(e) for e in task]
    assert task.repo_is_folder is False
    assert task.repo_path == (tmp_path / "project").resolve()
    assert task.repo_ref == "HEAD"
    # a commit hash is a ref too
    d2 = make_task(tmp_path / "suite", "t2", toml=f'[repo]\npath = "../../project"\nref = "{head}"\n')
    task2 = load_task(d2)
    assert isinstance(task2, Task), [str(e) for e in task2]
    assert task2.repo_ref == head and task2.repo_is_folder is False


def test_find_task_dirs_skips_hidden_and_does_not_descend_into_tasks(tmp_path):
    a = make_task(tmp_path, "a")
    make_task(tmp_path / ".hidden", "h")
    nested = make_task(tmp_path / "group", "nested")
    # a task.toml inside a task's own folders is the task's business, not a task
    (a / "repo" / "task.toml").write_text("")
    make_task(a, "inner")
    (tmp_path / "__pycache__" / "x").mkdir(parents=True)
    (tmp_path / "__pycache__" / "x" / "task.toml").write_text("")
    found = find_task_dirs([tmp_path])
    assert found == [a.resolve(), nested.resolve()]


def test_find_task_dirs_dedupes_and_keeps_order(tmp_path):
    b = make_task(tmp_path, "b")
    a = make_task(tmp_path, "a")
    assert find_task_dirs([b, tmp_path]) == [b.resolve(), a.resolve()]
    assert find_task_dirs([tmp_path / "missing"]) == []


# --- suite config -------------------------------------------------------------


def _isolated_suite(tmp_path: Path) -> Path:
    """A suite folder inside a git repository, so the config search stops there."""
    git(tmp_path, "init", "-q")
    suite = tmp_path / "tasks"
    make_task(suite, "t")
    return suite


def test_no_suite_config_gives_defaults(tmp_path):
    suite = _isolated_suite(tmp_path)
    loaded = load_suite_config([suite])
    assert loaded.source is None
    assert loaded.config.agents == [] and loaded.config.policy is None


def test_crossreview_toml_beside_the_tasks(tmp_path):
    suite = _isolated_suite(tmp_path)
    (suite / "crossreview.toml").write_text(
        'agents = ["oracle", "noop"]\nreviewers = ["tests"]\npolicy = "majority"\njobs = 3\n'
    )
    for start in (suite, suite / "t"):  # the suite, or one task in it
        loaded = load_suite_config([start])
        assert loaded.source == (suite / "crossreview.toml").resolve()
        assert loaded.suite_dir == suite.resolve()
        assert loaded.config.agents == ["oracle", "noop"]
        assert loaded.config.reviewers == ["tests"]
        assert loaded.config.policy == "majority"
        assert loaded.config.jobs == 3


def test_tool_crossreview_in_pyproject(tmp_path):
    suite = _isolated_suite(tmp_path)
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n\n[tool.crossreview]\nagents = ["oracle"]\npolicy = "unanimous"\n'
    )
    loaded = load_suite_config([suite])
    assert loaded.source == (tmp_path / "pyproject.toml").resolve()
    assert loaded.suite_dir == tmp_path.resolve()
    assert loaded.config.agents == ["oracle"]
    assert loaded.config.policy == "unanimous"


def test_pyproject_without_section_is_passed_over(tmp_path):
    suite = _isolated_suite(tmp_path)
    (suite / "pyproject.toml").write_text('[project]\nname = "x"\n')
    (tmp_path / "crossreview.toml").write_text('policy = "majority"\n')
    loaded = load_suite_config([suite])
    assert loaded.source == (tmp_path / "crossreview.toml").resolve()
    assert loaded.config.policy == "majority"


def test_unknown_key_in_crossreview_toml(tmp_path):
    suite = _isolated_suite(tmp_path)
    (suite / "crossreview.toml").write_text('agent = ["oracle"]\n')
    with pytest.raises(ConfigError) as info:
        load_suite_config([suite])
    msg = str(info.value)
    assert str((suite / "crossreview.toml").resolve()) in msg
    assert "unknown key 'agent'" in msg
    assert "agents" in msg.split("expected one of:", 1)[1]


def test_unknown_key_in_pyproject_section(tmp_path):
    suite = _isolated_suite(tmp_path)
    (tmp_path / "pyproject.toml").write_text("[tool.crossreview]\npolicyy = \"majority\"\n")
    with pytest.raises(ConfigError) as info:
        load_suite_config([suite])
    msg = str(info.value)
    assert str((tmp_path / "pyproject.toml").resolve()) in msg
    assert "[tool.crossreview]" in msg
    assert "'policyy'" in msg


def test_bad_value_in_suite_config(tmp_path):
    suite = _isolated_suite(tmp_path)
    (suite / "crossreview.toml").write_text("jobs = 0\n")
    with pytest.raises(ConfigError) as info:
        load_suite_config([suite])
    assert "jobs" in str(info.value) and "crossreview.toml" in str(info.value)


@pytest.mark.parametrize(
    "text, said",
    [
        ('jobs = "2"\n', 'jobs: expected a whole number, got the string "2"; write jobs = 2'),
        ("jobs = 2.0\n", "jobs: expected a whole number, got 2.0; write jobs = 2"),
        ('max_cost = "5"\n', 'max_cost: expected a number, got the string "5"; write max_cost = 5'),
        ('max_task_tokens = "100"\n', 'max_task_tokens: expected a whole number, got the string "100"; '
                                       'write max_task_tokens = 100'),
        ('temperature = "0.2"\n', 'temperature: expected a number, got the string "0.2"; write temperature = 0.2'),
        ('[gate]\nverifier_timeout_sec = "60"\n', 'gate.verifier_timeout_sec: expected a number, got the string '
                                                  '"60"; write verifier_timeout_sec = 60'),
        ('[gate]\ncomment = "no"\n', 'gate.comment: expected true or false, got the string "no"; write comment = false'),
        ('[models."openai/x"]\ntimeout = "60"\n', 'models.openai/x.timeout: expected a number, got the string '
                                                   '"60"; write timeout = 60'),
        ('[prices."m"]\ninput_cost_per_token = "0"\noutput_cost_per_token = 0\n',
         'prices.m.input_cost_per_token: expected a number, got the string "0"; write input_cost_per_token = 0'),
    ],
    ids=["jobs", "jobs-float", "max_cost", "max_task_tokens", "temperature", "gate-timeout", "gate-comment",
         "model-timeout", "price"],
)
def test_a_quoted_number_in_crossreview_toml_is_refused_with_the_fix(tmp_path, text, said):
    suite = _isolated_suite(tmp_path)
    (suite / "crossreview.toml").write_text(text)
    with pytest.raises(ConfigError) as info:
        load_suite_config([suite])
    assert str(info.value) == f"{(suite / 'crossreview.toml').resolve()}: {said}"


def test_a_quoted_number_in_tool_crossreview_is_refused_with_the_fix(tmp_path):
    suite = _isolated_suite(tmp_path)
    (tmp_path / "pyproject.toml").write_text('[tool.crossreview]\n[tool.crossreview.gate]\nattempts = "1"\n')
    with pytest.raises(ConfigError) as info:
        load_suite_config([suite])
    assert str(info.value) == (f"{(tmp_path / 'pyproject.toml').resolve()} [tool.crossreview]: gate.attempts: "
                               'expected a whole number, got the string "1"; write attempts = 1')


def test_bad_toml_in_crossreview_toml(tmp_path):
    suite = _isolated_suite(tmp_path)
    (suite / "crossreview.toml").write_text("agents = [\n")
    with pytest.raises(ConfigError, match="crossreview.toml: not valid TOML"):
        load_suite_config([suite])


def test_a_symlink_loop_beside_the_tasks_is_walked_once(tmp_path):
    """Found by the fuzzer: a folder linking back up the tree made the task walk recurse until ELOOP."""
    from crossreview.tasks import find_task_dirs

    suite = tmp_path / "suite"
    make_task(suite, "add")
    (suite / "notes").mkdir()
    (suite / "notes" / "loop").symlink_to(suite / "notes")
    (suite / "back").symlink_to(suite)
    assert find_task_dirs([suite]) == [(suite / "add").resolve()]


@pytest.mark.parametrize("name", ["tests", "solution", "holdout"])
def test_task_folders_linked_out_of_the_task_are_reported(tmp_path, name):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "test_x.py").write_text("def test_x():\n    pass\n")
    d = make_task(tmp_path / "suite", "t", tests=None if name == "tests" else DEFAULT_TESTS)
    (d / name).symlink_to(elsewhere)
    e = only_error(d)
    assert e.file == d.resolve() / name
    assert "outside the task folder" in e.message


def test_task_folder_linked_inside_the_task_is_fine(tmp_path):
    d = make_task(tmp_path / "suite", "t")
    (d / "holdout").symlink_to("tests")
    assert isinstance(load_task(d), Task)


def test_a_git_repository_inside_the_task_folder_is_used_as_plain_files(tmp_path):
    # A task from elsewhere may ship repo/.git: its config (filters, fsmonitor) is not the user's to run.
    d = make_task(tmp_path / "suite", "t")
    make_git_repo(d / "repo")
    task = load_task(d)
    assert isinstance(task, Task) and task.repo_is_folder is True
    d2 = make_task(tmp_path / "suite", "t2", toml='[repo]\nref = "HEAD~1"\n')
    make_git_repo(d2 / "repo")
    e = only_error(d2)
    assert e.field == "repo.ref" and "inside the task folder" in e.message


def test_a_plain_folder_outside_the_task_folder_is_refused(tmp_path):
    (tmp_path / "home" / ".ssh").mkdir(parents=True)
    (tmp_path / "home" / ".ssh" / "id_rsa").write_text("key\n")
    d = make_task(tmp_path / "suite", "t", toml='[repo]\npath = "../../home/.ssh"\n')
    e = only_error(d)
    assert e.file == d.resolve() / "task.toml" and e.field == "repo.path"
    assert "outside the task folder" in e.message and "not a git repository" in e.message
    d2 = make_task(tmp_path / "suite", "t2", with_repo=False)
    (d2 / "repo").symlink_to(tmp_path / "home")
    assert only_error(d2).field == "repo.path"


def test_a_git_repository_nested_in_repo_is_reported(tmp_path):
    # git would snapshot vendor/lib as a submodule pointer: its files would silently be missing.
    d = make_task(tmp_path / "suite", "t", repo={"main.py": "X = 1\n"})
    make_git_repo(d / "repo" / "vendor" / "lib", {"v.py": "V = 1\n"})
    e = only_error(d)
    assert e.file == d.resolve() / "repo" / "vendor" / "lib" / ".git"
    assert "missing from every worktree" in e.message


@pytest.mark.parametrize("version, ok", [("1.0", True), ("1", True), ("1.1", True), ("2.0", False), ("0.9", False),
                                         ("latest", False)])
def test_task_toml_version_other_than_1_x_is_reported(tmp_path, version, ok):
    d = make_task(tmp_path, "t", toml=f'version = "{version}"\n')
    if ok:
        assert isinstance(load_task(d), Task)
    else:
        e = only_error(d)
        assert e.field == "version" and repr(version) in e.message and e.file == d.resolve() / "task.toml"


def test_a_broken_pyproject_holding_our_settings_is_an_error_not_skipped(tmp_path):
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "pyproject.toml").write_text('[tool.crossreview\nagents = ["noop", "noop"]\n')
    with pytest.raises(ConfigError, match=r"pyproject\.toml: not valid TOML.*\[tool\.crossreview\]"):
        load_suite_config([suite])
    # Someone else's broken pyproject is not ours to judge.
    (suite / "pyproject.toml").write_text("[tool.black\nline-length = 99\n")
    assert load_suite_config([suite]).source is None


def test_a_bare_repository_is_used_as_a_git_repository(tmp_path):
    # It was taken for a plain folder, and the snapshot would have held git's own files (HEAD, objects/...).
    make_git_repo(tmp_path / "project")
    git(tmp_path, "clone", "-q", "--bare", "project", "project.git")
    d = make_task(tmp_path / "suite", "t", toml='[repo]\npath = "../../project.git"\n')
    task = load_task(d)
    assert isinstance(task, Task), [str(e) for e in task]
    assert task.repo_is_folder is False and task.repo_path == (tmp_path / "project.git").resolve()
