"""Does a candidate change how its tests are collected or run?

A candidate is code nobody has reviewed yet, and it is tested by running it.
One that adds a conftest.py, a pytest configuration, a sitecustomize module,
a .pth file or a module shadowing pytest (or the stdlib module pytest needs),
or edits the tests it was shown, may be faking its own results. Such a
candidate is never accepted automatically: the consensus policy escalates it
with the reasons found here.

``detect_tampering`` is pure: it looks at the candidate's changed file names
and, for the two files where only a section matters (pyproject.toml,
setup.cfg), at their text before and after. The helpers at the bottom do the
reading (git, the worktree) for the graph.
"""

from __future__ import annotations

import configparser
import filecmp
import fnmatch
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Mapping

PYTEST_CONFIG_FILES = {"pytest.ini", ".pytest.ini", "pytest.toml", ".pytest.toml", "tox.ini"}
SECTIONED_CONFIG_FILES = {"pyproject.toml", "setup.cfg"}
STARTUP_MODULES = {"sitecustomize", "usercustomize"}
TEST_RUNNER_MODULES = {"pytest", "_pytest", "py", "pluggy", "iniconfig", "packaging", "exceptiongroup", "tomli",
                       "pygments", "colorama", "xdist", "hypothesis", "coverage", "pytest_cov"}
"""Top-level names a test run imports from the worktree root (``python -m pytest`` puts it first on sys.path)."""


def _shadowed(top: str) -> str | None:
    name = top[:-3] if top.endswith(".py") else top
    if not name.isidentifier():
        return None
    if name in TEST_RUNNER_MODULES:
        return f"shadows `{name}`, which the test run imports (the worktree comes first on sys.path)"
    if name in sys.stdlib_module_names and name not in STARTUP_MODULES:
        return f"shadows the standard library module `{name}` (the worktree comes first on sys.path)"
    return None


def _pytest_sections_of_pyproject(text: str | None) -> object:
    if text is None:
        return None
    try:
        data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, ValueError):
        return "<not valid TOML>"
    tool = data.get("tool") if isinstance(data, dict) else None
    return tool.get("pytest") if isinstance(tool, dict) else None


def _pytest_sections_of_setup_cfg(text: str | None) -> object:
    if text is None:
        return None
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    try:
        parser.read_string(text)
    except (configparser.Error, ValueError):
        return "<not valid INI>"
    return {s: dict(parser.items(s)) for s in parser.sections() if s in ("tool:pytest", "pytest")}


def pytest_section_changed(name: str, before: str | None, after: str | None) -> bool:
    """True when the pytest part of pyproject.toml / setup.cfg differs between ``before`` and ``after``."""
    read = _pytest_sections_of_pyproject if name == "pyproject.toml" else _pytest_sections_of_setup_cfg
    return read(before) != read(after)


def detect_tampering(
    files: list[str],
    configs: Mapping[str, tuple[str | None, str | None]] | None = None,
    visible_test_edits: list[str] | tuple[str, ...] = (),
) -> list[str]:
    """Reasons the candidate changing ``files`` may change how its tests run; [] when none.

    ``configs`` maps a changed pyproject.toml / setup.cfg to its (before,
    after) text (None: absent); one not given is reported, since its pytest
    section cannot be checked. ``visible_test_edits`` are the tests the
    candidate was shown and changed (they are thrown away before testing,
    but trying is reason enough for a human to look).
    """
    configs = configs or {}
    reasons: list[str] = []
    for raw in files:
        path = PurePosixPath(raw)
        name = path.name
        parts = path.parts
        if not parts:
            continue
        if name == "conftest.py":
            reasons.append(f"{raw}: adds or changes a conftest.py, which pytest runs before the tests")
        elif name in PYTEST_CONFIG_FILES:
            reasons.append(f"{raw}: changes pytest's configuration file")
        elif name in SECTIONED_CONFIG_FILES:
            if raw not in configs:
                reasons.append(f"{raw}: changed; its pytest section could not be checked")
            elif pytest_section_changed(name, *configs[raw]):
                section = "[tool.pytest...]" if name == "pyproject.toml" else "[tool:pytest]"
                reasons.append(f"{raw}: changes the pytest configuration ({section})")
        elif name.endswith(".py") and name[:-3] in STARTUP_MODULES:
            reasons.append(f"{raw}: {name[:-3]} runs at interpreter start-up, before pytest")
        elif name.endswith(".pth"):
            reasons.append(f"{raw}: a .pth file runs code at interpreter start-up")
        elif name.startswith("pytest_") and name.endswith(".py") and len(parts) == 1:
            reasons.append(f"{raw}: a pytest plugin module at the repository root")
        elif name == ".gitattributes":
            # `*.py binary` turns the diff the reviewers read into base85: the code goes unseen.
            reasons.append(f"{raw}: changes how git shows files (it can make code diff as binary), "
                           "so the reviewers may not have seen the change")
        top = parts[0]
        if len(parts) == 1 and top.endswith(".py"):
            why = _shadowed(top)
        elif len(parts) > 1 and (top in TEST_RUNNER_MODULES or (len(parts) == 2 and name == "__init__.py")):
            why = _shadowed(top)  # a package (namespace folders never shadow a real module)
        else:
            why = None
        if why:
            reasons.append(f"{raw}: {why}")
    for test in visible_test_edits:
        reasons.append(f"{test}: edits the task's tests it was shown (the task's own copy was run instead)")
    seen: set[str] = set()
    return [r for r in reasons if not (r in seen or seen.add(r))]


TEST_DIR_NAMES = {"tests", "test", "testing"}


@dataclass(frozen=True)
class PytestLayout:
    """Where a repository's pytest configuration (on the base) says its tests are, beyond the defaults."""

    python_files: tuple[str, ...] = ()
    """Globs of test module names (pytest's ``python_files``)."""
    testpaths: tuple[str, ...] = ()
    """Folders pytest collects from (``testpaths``): every file in them belongs to the tests."""


def looks_like_test(raw: str, layout: PytestLayout = PytestLayout()) -> bool:
    """A test module by pytest's default names (``test_*.py``, ``*_test.py``) or the base's ``python_files``,
    or any file in a tests folder or in one of the base's ``testpaths``."""
    path = PurePosixPath(raw)
    name = path.name
    if name.endswith(".py") and (name.startswith("test_") or name[:-3].endswith("_test")):
        return True
    if any(fnmatch.fnmatch(name, glob) for glob in layout.python_files):
        return True
    if any(path.is_relative_to(PurePosixPath(d)) for d in layout.testpaths if d not in ("", ".")):
        return True
    return any(part in TEST_DIR_NAMES for part in path.parts[:-1])


def _words(value: object) -> tuple[str, ...]:
    """An ini value (whitespace-separated) or a TOML list, as strings."""
    if isinstance(value, str):
        return tuple(value.split())
    if isinstance(value, list):
        return tuple(str(v) for v in value)
    return ()


def parse_test_layout(files: Mapping[str, str]) -> PytestLayout:
    """The ``python_files`` and ``testpaths`` of pytest's configuration, from config file texts by name
    (pytest.ini, pyproject.toml, tox.ini, setup.cfg; the first that configures pytest wins, as in pytest)."""
    for name in ("pytest.ini", ".pytest.ini", "pyproject.toml", "tox.ini", "setup.cfg"):
        text = files.get(name)
        if text is None:
            continue
        section: Mapping[str, object] | None = None
        if name == "pyproject.toml":
            try:
                section = tomllib.loads(text).get("tool", {}).get("pytest", {}).get("ini_options")
            except tomllib.TOMLDecodeError:
                continue
        else:
            cp = configparser.ConfigParser(interpolation=None)
            try:
                cp.read_string(text)
            except configparser.Error:
                continue
            key = "tool:pytest" if name == "setup.cfg" else "pytest"
            section = dict(cp[key]) if cp.has_section(key) else None
        if section is not None:
            return PytestLayout(_words(section.get("python_files")),
                              tuple(p.strip("/") for p in _words(section.get("testpaths"))))
    return PytestLayout()


def base_test_layout(worktree: Path, base_commit: str) -> PytestLayout:
    """The test layout the base commit's pytest configuration gives (a change's own edits to it are
    tampering already; the base says where the tests are)."""
    texts = {}
    for name in ("pytest.ini", ".pytest.ini", "pyproject.toml", "tox.ini", "setup.cfg"):
        text = _base_text(worktree, base_commit, name)
        if text is not None:
            texts[name] = text
    return parse_test_layout(texts)


def _base_text(worktree: Path, base_commit: str, rel: str) -> str | None:
    proc = subprocess.run(
        ["git", "cat-file", "blob", f"{base_commit}:{rel}"], cwd=worktree, capture_output=True,
        env={"GIT_CONFIG_NOSYSTEM": "1", "PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/nonexistent"},
    )
    return proc.stdout.decode("utf-8", "replace") if proc.returncode == 0 else None


def _top_level_bindings(tree) -> dict[str, int]:
    """How often each name is bound at a module's top level (def, class, assignment, import)."""
    import ast

    counts: dict[str, int] = {}

    def bind(name: str) -> None:
        counts[name] = counts.get(name, 0) + 1

    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bind(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                for n in ast.walk(t):
                    if isinstance(n, ast.Name):
                        bind(n.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                bind((alias.asname or alias.name).split(".")[0])
        else:
            bind("<statement>")  # anything else at the top (if, for, with...) may rebind anything
    return counts


def only_adds_tests(before: str, after: str) -> bool:
    """True when ``after`` is ``before`` with lines added and nothing it had changed, removed or shadowed.

    Added test functions are new tests, as a new test file is; an added
    definition that re-binds a name the file already had (a second
    ``def test_x``) silently replaces the old test, so it is an edit.
    """
    import ast
    import difflib

    old, new = before.splitlines(), after.splitlines()
    ops = difflib.SequenceMatcher(None, old, new, autojunk=False).get_opcodes()
    if any(tag in ("replace", "delete") for tag, *_ in ops):
        return False
    try:
        tree = ast.parse(after)
        a, b = _top_level_bindings(ast.parse(before)), _top_level_bindings(tree)
    except (SyntaxError, ValueError):
        return False
    if b.get("<statement>", 0) > a.get("<statement>", 0):
        return False  # an added if/for/exec... at the top may rebind an existing test
    if any(b.get(name, 0) > a.get(name, 0) for name in _APPLIES_TO_EVERY_TEST):
        return False  # a new pytestmark (skip?) or setup_module acts on the old tests too
    for node in tree.body:  # an autouse fixture, new or not, wraps every test of the file
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and b.get(node.name, 0) > a.get(node.name, 0):
            if any("autouse" in ast.dump(d) for d in node.decorator_list):
                return False
    return all(b.get(name, 0) == n for name, n in a.items())


_APPLIES_TO_EVERY_TEST = {"pytestmark", "setup_module", "teardown_module", "setup_function", "teardown_function",
                          "setUpModule", "tearDownModule", "setup", "teardown", "load_tests"}


def repo_test_edits(files: list[str], texts: Mapping[str, tuple[str | None, str | None]]) -> list[str]:
    """Reasons for the repository's own tests a candidate changed or deleted.

    ``texts`` maps each changed test file to its (before, after) text (None:
    absent). Where the verifier runs the repository's own tests (no
    ``{tests}``: the gate's default), those tests are the judge: a change
    that edits, deletes or shadows one can make itself pass. New tests (a new
    file, or test functions added to a Python test file without touching or
    shadowing what it had) are fine.
    """
    reasons = []
    for raw in files:
        if raw not in texts:  # repo_test_texts holds exactly the changed files that belong to the tests
            continue
        before, after = texts[raw]
        if before is None:
            continue  # a new file: new tests
        if after is None:
            reasons.append(f"{raw}: deletes a test of the repository, whose own tests the verifier runs")
        elif not (raw.endswith(".py") and only_adds_tests(before, after)):
            reasons.append(f"{raw}: changes a test of the repository, whose own tests the verifier runs "
                           "(adding tests is fine; changing or shadowing existing ones is for a human to check)")
    return reasons


def repo_test_texts(worktree: Path, base_commit: str, files: list[str]) -> dict[str, tuple[str | None, str | None]]:
    """(before, after) text of each changed file that belongs to the tests (None where absent): by
    pytest's default names, or as the base's pytest configuration lays them out."""
    out: dict[str, tuple[str | None, str | None]] = {}
    layout = base_test_layout(worktree, base_commit) if files else PytestLayout()
    for rel in files:
        if not looks_like_test(rel, layout):
            continue
        before = _base_text(worktree, base_commit, rel)
        target = worktree / rel
        try:
            after = (target.read_text(encoding="utf-8", errors="replace")
                     if target.is_file() and not target.is_symlink() else ("" if target.is_symlink() else None))
        except OSError:
            after = ""
        out[rel] = (before, after)
    return out


# --- reading what the pure function needs (used by the graph) -------------------


def visible_test_edits(task_tests: Path, worktree_tests: Path) -> list[str]:
    """Files of the task's visible tests the agent changed, deleted or added, relative to tests/."""
    ignore = {"__pycache__", ".pytest_cache"}

    def files(root: Path) -> dict[str, Path]:
        out: dict[str, Path] = {}
        if not root.is_dir():
            return out
        for p in root.rglob("*"):
            if p.is_symlink() or p.is_file():
                rel = p.relative_to(root)
                if ignore & set(rel.parts) or p.suffix == ".pyc":
                    continue
                out[rel.as_posix()] = p
        return out

    given, now = files(task_tests), files(worktree_tests)
    changed = []
    for rel in sorted(set(given) | set(now)):
        a, b = given.get(rel), now.get(rel)
        if a is None or b is None or b.is_symlink():
            changed.append(rel)
        else:
            try:
                if not filecmp.cmp(a, b, shallow=False):
                    changed.append(rel)
            except OSError:
                changed.append(rel)
    return changed


def config_texts(worktree: Path, base_commit: str, files: list[str]) -> dict[str, tuple[str | None, str | None]]:
    """(before, after) text of each changed pyproject.toml / setup.cfg (None where absent)."""
    out: dict[str, tuple[str | None, str | None]] = {}
    for rel in files:
        if PurePosixPath(rel).name not in SECTIONED_CONFIG_FILES:
            continue
        proc = subprocess.run(
            ["git", "cat-file", "blob", f"{base_commit}:{rel}"], cwd=worktree, capture_output=True,
            env={"GIT_CONFIG_NOSYSTEM": "1", "PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/nonexistent"},
        )
        before = proc.stdout.decode("utf-8", "replace") if proc.returncode == 0 else None
        target = worktree / rel
        try:
            after = target.read_text(encoding="utf-8", errors="replace") if target.is_file() and not target.is_symlink() else None
        except OSError:
            after = None
        out[rel] = (before, after)
    return out


def git_pointer(worktree: Path) -> str | None:
    """The text of the worktree's ``.git`` file, or None if it is not a plain file."""
    dot = worktree / ".git"
    if dot.is_symlink() or not dot.is_file():
        return None
    try:
        return dot.read_text()
    except OSError:
        return None


def restore_git_pointer(worktree: Path, expected: str) -> str | None:
    """Put the worktree's ``.git`` pointer back if the agent replaced it; returns the reason, or None.

    A ``.git`` an agent wrote could carry a git config whose hooks or
    fsmonitor crossreview's own git commands would run, outside any sandbox.
    """
    if git_pointer(worktree) == expected:
        return None
    dot = worktree / ".git"
    if dot.is_symlink() or dot.is_file():
        dot.unlink()
    elif dot.is_dir():
        import shutil

        shutil.rmtree(dot)
    dot.write_text(expected)
    return ".git: replaced the worktree's link to its repository (restored before crossreview ran git there)"
