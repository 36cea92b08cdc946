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

Where the verifier runs the repository's own tests (the gate), those tests
are the judge: ``repo_test_edits`` flags a change that edits or deletes one,
or whose new tests reach beyond themselves (``test_reach``: a new test file
that patches the code under test for the tests that run after it),
``helper_reach`` one whose tests import a module it adds or edits outside the
tests that does the same (``module_patches``: for the code under test, only
patches of other modules), and ``shadowing_modules`` one that adds a second
module of a name the repository has. ``judge_files`` lists every test and
pytest configuration file a change touches, flagged or not, for the human.
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


# --- test code a change adds: does it reach beyond its own tests? ---------------
#
# Where the verifier runs the repository's own tests, a change's new tests run in the same pytest process
# as the tests that judge it. A new test file that replaces ``calc.add`` at import (or in a test that runs
# first, or through a patcher nothing stops) makes a broken ``add`` pass tests it never touched. What a
# test does to itself and undoes when it ends (the ``monkeypatch`` fixture, ``with mock.patch(...)``,
# ``@mock.patch``) cannot reach them, so those stay allowed. This is a reading of the code, not a proof:
# it catches what a test file has to write to mend the code under test in plain sight, and the reasons
# say where. A module outside the tests that the change edits and its tests import is read the same way
# if it is named as test support, and by a narrower rule if it is the code under test (``helper_reach``).

_PER_TEST_FIXTURES = {"self", "cls", "tmp_path", "tmpdir", "capsys", "capfd", "capsysbinary", "capfdbinary",
                      "caplog", "recwarn", "monkeypatch", "mocker"}
"""Parameters whose objects are made for one test: changing them reaches nothing else."""
_SCOPED_PATCHERS = {"monkeypatch", "mocker"}
"""Fixtures that undo every patch they made when the test ends."""
_MUTATING_METHODS = {"append", "extend", "insert", "update", "setdefault", "pop", "popitem", "clear", "remove",
                     "discard", "__setitem__", "__delitem__", "__setattr__", "__delattr__"}
_REFLECTIVE_CALLS = {"getattr", "vars", "globals", "locals", "__import__", "import_module", "reload"}
"""Calls whose result is (or reaches) a module or another file's object, whatever the arguments."""
_RUNS_BUILT_CODE = {"exec", "eval", "compile", "__import__"}
_LONG_LIVED_SCOPES = {"session", "package"}


def _dotted(node) -> str | None:
    """``a.b.c`` for a Name/Attribute chain, else None."""
    import ast

    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id, *reversed(parts)])
    return None


def _call_name(call) -> str:
    """The last name of what a call calls (``mock.patch.object(...)`` -> ``object``)."""
    import ast

    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else (func.id if isinstance(func, ast.Name) else "")


def _is_patch_call(node) -> bool:
    """``patch(...)``, ``mock.patch(...)``, ``patch.object/dict/multiple(...)``, ``MonkeyPatch()`` and
    ``MonkeyPatch.context()``: a patch that lasts until something undoes it."""
    import ast

    if not isinstance(node, ast.Call):
        return False
    dotted = _dotted(node.func) or ""
    parts = dotted.split(".")
    return (parts[-1] in ("patch", "MonkeyPatch") or parts[-2:] == ["MonkeyPatch", "context"]
            or (len(parts) > 1 and parts[-2] == "patch" and parts[-1] in ("object", "dict", "multiple")))


def _fixture_scope(func) -> str | None:
    """The ``scope=`` of a ``@pytest.fixture(...)`` decorator ("function" when none; "?" when not a literal)."""
    import ast

    for d in func.decorator_list:
        target = d.func if isinstance(d, ast.Call) else d
        if (_dotted(target) or "").split(".")[-1] != "fixture":
            continue
        for kw in d.keywords if isinstance(d, ast.Call) else ():
            if kw.arg == "scope":
                return kw.value.value if isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, str) else "?"
        return "function"
    return None


def _bound(target, containers: bool = False) -> list[str]:
    """The names an assignment target binds: ``x`` and ``a.b`` themselves, never the receiver ``a`` of
    ``a.b`` (storing on ``self`` does not make ``self`` another module's object). ``containers``: the
    container of ``d[k] = ...`` too (a test file's rule: a dict holding a module reaches beyond it)."""
    import ast

    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, ast.Attribute):
        dotted = _dotted(target)
        return [dotted] if dotted else []
    if isinstance(target, (ast.Tuple, ast.List)):
        return [n for e in target.elts for n in _bound(e, containers)]
    if isinstance(target, ast.Starred):
        return _bound(target.value, containers)
    if isinstance(target, ast.Subscript) and containers:
        return _bound(target.value, containers)
    return []  # d[k] = calc: d holds a module, but d is the module's own object (see _Patches.holds)


class _Reach:
    """Finds where test code changes something it did not make for itself (see above)."""

    def __init__(self, tree) -> None:
        import ast

        self.ast = ast
        self.tree = tree
        self.modules: set[str] = set()  # names bound by `import x`: calling x.update() is a function call
        self.tainted: set[str] = {"__builtins__"}
        self.findings: list[tuple[int, str]] = []
        self._taint()

    # what reaches beyond this file: imported names, what pytest passes in, and aliases of either
    def _taint(self) -> None:
        ast = self.ast
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    name = alias.asname or alias.name.split(".")[0]
                    self.tainted.add(name)
                    self.modules.add(name)
            elif isinstance(node, ast.ImportFrom):
                self.tainted.update(alias.asname or alias.name for alias in node.names if alias.name != "*")
        fixtures = {f.name: f for f in ast.walk(self.tree)
                    if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)) and _fixture_scope(f) is not None}
        by_pytest: set[str] = set()  # parameters of tests and fixtures: pytest passes them fixtures
        for node in ast.walk(self.tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                # pytest calls tests and fixtures with fixtures (or @mock.patch's mocks): only a fixture of
                # this file that hands out a module reaches beyond. A helper's parameters are whatever its
                # caller passes, a module included.
                called_by_pytest = not isinstance(node, ast.Lambda) and (
                    node.name.startswith("test") or _fixture_scope(node) is not None
                    or any(_is_patch_call(d) for d in node.decorator_list))
                a = node.args
                for arg in [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg]:
                    if arg is None or arg.arg in _PER_TEST_FIXTURES:
                        continue
                    if called_by_pytest:
                        by_pytest.add(arg.arg)
                    else:
                        self.tainted.add(arg.arg)
        changed = True
        while changed:  # aliases of aliases (m = calc; n = m), fixtures that return one
            changed = False
            for name, fixture in fixtures.items():
                hands_out = any(isinstance(n, (ast.Return, ast.Yield)) and n.value is not None and self.refers(n.value)
                                for n in ast.walk(fixture))
                if hands_out and name in by_pytest and name not in self.tainted:
                    self.tainted.add(name)
                    changed = True
            for node in ast.walk(self.tree):
                pairs = []
                if isinstance(node, ast.Assign):
                    pairs = [(t, node.value) for t in node.targets]
                elif isinstance(node, (ast.AnnAssign, ast.AugAssign, ast.NamedExpr)) and node.value is not None:
                    pairs = [(node.target, node.value)]
                elif isinstance(node, (ast.For, ast.AsyncFor, ast.comprehension)):
                    pairs = [(node.target, node.iter)]
                elif isinstance(node, (ast.With, ast.AsyncWith)):
                    pairs = [(i.optional_vars, i.context_expr) for i in node.items if i.optional_vars is not None]
                for target, value in pairs:
                    if not self.refers(value):
                        continue
                    # `self.h = h` makes `self.h` an alias, not `self` (a test's own object), nor the key
                    # of `d[k] = calc`
                    for name in _bound(target, containers=True):
                        if name not in self.tainted:
                            self.tainted.add(name)
                            changed = True

    def refers(self, node) -> bool:
        """Whether ``node`` evaluates to (a part of) something this file did not make for itself."""
        ast = self.ast
        if isinstance(node, ast.Name):
            return node.id in self.tainted
        if isinstance(node, ast.Attribute):
            return _dotted(node) in self.tainted or self.refers(node.value)
        if isinstance(node, (ast.Subscript, ast.Starred)):
            return self.refers(node.value)
        if isinstance(node, ast.Call):
            # the result of an ordinary call (calc.Thing()) is a new object; getattr(calc, "x") is not
            return _call_name(node) in _REFLECTIVE_CALLS
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            return any(self.refers(e) for e in node.elts)
        if isinstance(node, ast.Dict):
            return any(self.refers(v) for v in node.values)
        if isinstance(node, ast.IfExp):
            return self.refers(node.body) or self.refers(node.orelse)
        if isinstance(node, ast.BoolOp):
            return any(self.refers(v) for v in node.values)
        if isinstance(node, ast.NamedExpr):
            return self.refers(node.value)
        return False

    def find(self) -> list[tuple[int, str]]:
        """(line, what) for each place the code reaches beyond its own tests."""
        self._visit(self.tree.body, where="import", scoped_names=set())
        seen: set[tuple[int, str]] = set()
        return sorted(f for f in self.findings if not (f in seen or seen.add(f)))

    def _flag(self, node, what: str) -> None:
        self.findings.append((getattr(node, "lineno", 0), what))

    def _visit(self, body, where: str, scoped_names: set[str], patching: bool = False) -> None:
        """``where``: "import" (module or class body: runs while pytest collects, before any test),
        "test" (a test or a fixture that ends with its test) or "session" (a fixture that outlives it)."""
        for stmt in body:
            self._statement(stmt, where, scoped_names, patching)

    def _statement(self, stmt, where: str, scoped_names: set[str], patching: bool) -> None:
        ast = self.ast
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if stmt.name in _SCOPED_PATCHERS:
                self._flag(stmt, f"defines its own `{stmt.name}` fixture, so `{stmt.name}` no longer undoes its "
                                 "patches when a test ends")
            for d in stmt.decorator_list:  # @mock.patch(...) lasts for the call of what it decorates
                self._expressions(d, where, scoped_names, patching, decorator=True)
            for default in [*stmt.args.defaults, *stmt.args.kw_defaults]:
                if default is not None:
                    self._expressions(default, where, scoped_names, patching)
            scope = _fixture_scope(stmt)
            inner = "session" if (where == "session" or scope in _LONG_LIVED_SCOPES or scope == "?") else "test"
            self._visit(stmt.body, inner, scoped_names, patching)
            return
        if isinstance(stmt, ast.ClassDef):
            for d in stmt.decorator_list:
                self._expressions(d, where, scoped_names, patching, decorator=True)
            self._visit(stmt.body, where, scoped_names, patching)  # a class body runs at import
            return
        if isinstance(stmt, (ast.With, ast.AsyncWith)):
            names, opens_patch = set(scoped_names), False
            for item in stmt.items:
                if _is_patch_call(item.context_expr) or self._scoped_patcher_call(item.context_expr, scoped_names):
                    opens_patch = True
                    self._patch_here(item.context_expr, where, scoped=True)
                    for arg in [*item.context_expr.args, *(k.value for k in item.context_expr.keywords)]:
                        self._expressions(arg, where, scoped_names, patching)
                    opened = _dotted(item.context_expr.func) or ""
                    if isinstance(item.optional_vars, ast.Name) and opened.endswith("MonkeyPatch.context"):
                        names.add(item.optional_vars.id)  # `with MonkeyPatch.context() as mp`: mp undoes on exit
                else:
                    self._expressions(item.context_expr, where, scoped_names, patching)
                if item.optional_vars is not None:
                    self._expressions(item.optional_vars, where, scoped_names, patching)
            self._visit(stmt.body, where, names, patching or opens_patch)
            return
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            if patching:
                self._flag(stmt, "imports a module while a patch is active: what the module takes from the "
                                 "patched code it keeps after the patch is undone")
            if any(alias.name.split(".")[0] == "ctypes" for alias in stmt.names) or (
                    isinstance(stmt, ast.ImportFrom) and (stmt.module or "").split(".")[0] == "ctypes"):
                self._flag(stmt, "imports ctypes, which can rewrite any object in the test run")
            return
        if isinstance(stmt, ast.Assign):
            for t in stmt.targets:
                if isinstance(t, ast.Name) and t.id == "pytest_plugins":
                    self._flag(stmt, "sets `pytest_plugins`, which loads plugins into the whole test run")
        for child in ast.iter_child_nodes(stmt):
            if isinstance(child, ast.stmt):
                self._statement(child, where, scoped_names, patching)
            else:
                self._expressions(child, where, scoped_names, patching)

    def _scoped_patcher_call(self, node, scoped_names: set[str]) -> bool:
        """``mocker.patch(...)`` / ``monkeypatch.context()``: a fixture that undoes it when the test ends."""
        root = _dotted(node.func).split(".")[0] if isinstance(node, self.ast.Call) and _dotted(node.func) else ""
        return root in _SCOPED_PATCHERS or root in scoped_names

    def _patch_here(self, node, where: str, scoped: bool) -> None:
        what = _dotted(node.func) or "patch"
        if where == "import":
            self._flag(node, f"patches with `{what}(...)` at import, while pytest collects the repository's tests")
        elif where == "session":
            self._flag(node, f"patches with `{what}(...)` in a session- or package-scoped fixture, which stays "
                             "for the tests that run after this file's")
        elif not scoped:
            self._flag(node, f"starts a patch with `{what}(...)` that nothing undoes (use it in a `with` or as a "
                             "decorator, or use the `monkeypatch` fixture)")

    def _expressions(self, node, where: str, scoped_names: set[str], patching: bool, decorator: bool = False) -> None:
        ast = self.ast
        for sub in ast.walk(node):
            if isinstance(sub, (ast.Attribute, ast.Subscript)) and isinstance(sub.ctx, (ast.Store, ast.Del)):
                receiver = sub.value
                if self.refers(receiver):
                    verb = "deletes" if isinstance(sub.ctx, ast.Del) else "assigns"
                    shown = ast.unparse(sub)[:80]
                    self._flag(sub, f"{verb} `{shown}`, which stays changed for the tests that run after it "
                                    "(the `monkeypatch` fixture would undo it when the test ends)")
            elif isinstance(sub, ast.Call):
                name, dotted = _call_name(sub), _dotted(sub.func) or ""
                if isinstance(sub.func, ast.Name) and name in ("setattr", "delattr") and sub.args and (
                        self.refers(sub.args[0]) or not isinstance(sub.args[0], ast.Name)):
                    self._flag(sub, f"calls `{name}({ast.unparse(sub.args[0])[:40]}, ...)` on something it did not "
                                    "make, which stays changed for the tests that run after it")
                elif (isinstance(sub.func, ast.Name) and name in _RUNS_BUILT_CODE | {"reload"}) \
                        or dotted.endswith("importlib.reload"):
                    self._flag(sub, f"calls `{name}(...)`: code it builds or reloads at run time cannot be checked")
                elif self._scoped_patcher_call(sub, scoped_names):  # mocker.patch(...): undone with its test
                    if where == "import" or where == "session":
                        self._patch_here(sub, where, scoped=True)
                elif _is_patch_call(sub):
                    if not (decorator and where != "session"):
                        self._patch_here(sub, where, scoped=False)
                elif isinstance(sub.func, ast.Attribute) and name in _MUTATING_METHODS:
                    receiver = sub.func.value
                    bare_module = isinstance(receiver, ast.Name) and receiver.id in self.modules
                    if self.refers(receiver) and not bare_module and _dotted(receiver) != "sys.path":
                        self._flag(sub, f"calls `{ast.unparse(sub.func)[:80]}(...)`, which changes another module's "
                                        "state for the tests that run after it")


def test_reach(source: str, lines: set[int] | None = None) -> list[tuple[int, str]] | None:
    """Where test code changes something beyond its own tests, as (line, what); None when it is not Python.

    Flagged: assigning or deleting an attribute or item of an imported module or object (or an alias of
    one, or a fixture's value), ``setattr``/``delattr`` on one, calling a mutating method on module state
    (``sys.modules.update``; ``sys.path`` is allowed), a mock patch or ``MonkeyPatch()`` that nothing
    undoes, any patch at import or in a session- or package-scoped fixture, imports while a patch is
    active, ``exec``/``eval``/``compile``/``__import__``/``reload``, ``ctypes``, ``pytest_plugins``, and
    a redefined ``monkeypatch``/``mocker`` fixture. Allowed: the ``monkeypatch`` and ``mocker`` fixtures,
    ``with mock.patch(...)``, ``@mock.patch(...)`` and changes to what the test made itself (``self.x``).
    ``lines``: report only findings on these lines (the lines a change added to an existing file).
    """
    import ast

    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return None
    found = _Reach(tree).find()
    return [f for f in found if lines is None or f[0] in lines]


def _added_lines(before: str, after: str) -> set[int]:
    """1-based numbers of the lines of ``after`` that ``before`` did not have."""
    import difflib

    ops = difflib.SequenceMatcher(None, before.splitlines(), after.splitlines(), autojunk=False).get_opcodes()
    return {j + 1 for tag, _, _, j1, j2 in ops if tag in ("insert", "replace") for j in range(j1, j2)}


_MAX_REACH_PER_FILE = 3


def _reach_reasons(raw: str, found: list[tuple[int, str]]) -> list[str]:
    reasons = [f"{raw}:{line}: {what}" for line, what in found[:_MAX_REACH_PER_FILE]]
    if len(found) > _MAX_REACH_PER_FILE:
        reasons.append(f"{raw}: and {len(found) - _MAX_REACH_PER_FILE} more places like these")
    return reasons


def repo_test_edits(files: list[str], texts: Mapping[str, tuple[str | None, str | None]]) -> list[str]:
    """Reasons for the repository's own tests a candidate changed or deleted.

    ``texts`` maps each changed test file to its (before, after) text (None:
    absent). Where the verifier runs the repository's own tests (no
    ``{tests}``: the gate's default), those tests are the judge: a change
    that edits, deletes or shadows one can make itself pass. New tests (a new
    file, or test functions added to a Python test file without touching or
    shadowing what it had) are fine, as long as their code does not reach
    beyond their own tests (``test_reach``): a new test that patches the code
    under test for the tests that run after it is an edit of the judge.
    """
    reasons = []
    for raw in files:
        if raw not in texts:  # repo_test_texts holds exactly the changed files that belong to the tests
            continue
        before, after = texts[raw]
        if before is None:
            # A new file: new tests, unless its code reaches into what the repository's tests check.
            found = test_reach(after) if raw.endswith(".py") and after else None
            reasons += _reach_reasons(raw, found or [])
        elif after is None:
            reasons.append(f"{raw}: deletes a test of the repository, whose own tests the verifier runs")
        elif not (raw.endswith(".py") and only_adds_tests(before, after)):
            reasons.append(f"{raw}: changes a test of the repository, whose own tests the verifier runs "
                           "(adding tests is fine; changing or shadowing existing ones is for a human to check)")
        else:
            # Tests appended to an existing file: the added lines are held to what a new file is.
            reasons += _reach_reasons(raw, test_reach(after, _added_lines(before, after)) or [])
    return reasons


# --- modules outside the tests that a change's tests import ---------------------------------------
#
# The patch need not sit in the test file: a new test can import a module the change adds or edits
# outside the tests (``testing_utils.py``, ``src/compat.py``), and that module's code runs in the same
# pytest process (at import, or when the test calls it). ``repo_test_edits`` reads only the tests, so
# ``imported_changes`` follows the tests' imports to the change's other Python files and ``helper_reach``
# judges them (below: a test helper as a test file, the code under test by a narrower rule). Only files
# the change touches are read: the base is trusted.

_DYNAMIC_IMPORTS = {"import_module", "__import__", "importorskip"}
"""Calls that import the module a string names (``importlib.import_module("testing_utils")``)."""


def _module_index(paths) -> dict[str, set[str]]:
    """Every dotted name each .py path may be imported by, to the paths: ``src/lib/helpers.py`` answers to
    ``helpers``, ``lib.helpers`` and ``src.lib.helpers``, since a test can put any folder on sys.path."""
    index: dict[str, set[str]] = {}
    for path in paths:
        parts = list(PurePosixPath(path[:-3]).parts)
        if parts and parts[-1] == "__init__":
            parts.pop()  # a package's __init__.py is the package
        for i in range(len(parts)):
            index.setdefault(".".join(parts[i:]), set()).add(path)
    return index


def _imported_names(tree, path: str) -> tuple[set[str], set[str]]:
    """(dotted module names a file imports, paths its relative imports name), each with the packages an
    import runs on the way (``import a.b.c`` runs ``a``, ``a.b`` and ``a.b.c``)."""
    import ast

    names: set[str] = set()
    relative: set[str] = set()

    def absolute(dotted: str) -> None:
        parts = dotted.split(".")
        names.update(".".join(parts[: i + 1]) for i in range(len(parts)) if parts[i])

    def from_folder(level: int, module: str, imported: list[str]) -> None:
        folder = PurePosixPath(path).parent
        for _ in range(level - 1):
            if folder == PurePosixPath("."):
                return  # above the repository: nothing of the change's
            folder = folder.parent
        relative.add(str(folder / "__init__.py"))
        here = folder
        for part in [p for p in module.split(".") if p]:
            here = here / part
            relative.update({f"{here}.py", str(here / "__init__.py")})
        for name in imported:  # `from . import helpers`: a name may be a submodule
            relative.update({str(here / f"{name}.py"), str(here / name / "__init__.py")})

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                absolute(alias.name)
        elif isinstance(node, ast.ImportFrom):
            imported = [a.name for a in node.names if a.name != "*"]
            if node.level:
                from_folder(node.level, node.module or "", imported)
            elif node.module:
                absolute(node.module)
                names.update(f"{node.module}.{n}" for n in imported)
        elif (isinstance(node, ast.Call) and _call_name(node) in _DYNAMIC_IMPORTS and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            target = node.args[0].value
            level = len(target) - len(target.lstrip("."))
            if level:
                from_folder(level, target.lstrip("."), [])
            else:
                absolute(target)
    return names, {str(PurePosixPath(p)) for p in relative}


def imported_changes(sources: Mapping[str, str], starts) -> dict[str, list[str]]:
    """The changed Python files the test files ``starts`` import, directly or through each other, each
    with the chain of files that leads to it (the test first); a start is not in the answer.

    ``sources`` maps every .py file the change adds or edits to its text. Imports are read, never run:
    ``import x``, ``from x import y`` (``y`` may be a submodule), relative imports, the packages an
    import runs (``__init__.py``) and ``import_module("x")`` with a literal name. A name is matched
    against every folder (``helpers`` is ``src/lib/helpers.py`` as well), since a test can put any
    folder on sys.path: this reads more than Python would import, never less. Files not in
    ``sources`` (the base's) are not followed through.
    """
    import ast

    index = _module_index(sources)
    known = set(sources)
    chains: dict[str, list[str]] = {s: [] for s in starts if s in sources}
    queue = list(chains)
    # Breadth first, each file once (by its shortest chain): at most one turn per changed file.
    for _ in range(len(sources)):
        if not queue:
            break
        path = queue.pop(0)
        try:
            tree = ast.parse(sources[path])
        except (SyntaxError, ValueError):
            continue  # not Python: nothing it imports
        names, relative = _imported_names(tree, path)
        reached = set().union(*(index.get(n, set()) for n in names)) | (relative & known)
        for target in sorted(reached - set(chains)):
            chains[target] = [*chains[path], path]
            queue.append(target)
    return {p: chain for p, chain in chains.items() if chain}


# A followed module that is the code under test (``src/calc.py`` with a new function a new test calls)
# is not test code: it mutates its parameters, stores them on ``self`` and keeps its own globals, all of
# which ``test_reach`` would flag (there, a helper's parameter may be the module under test). Such a
# module is held to a narrower rule, ``module_patches``: it may change whatever it made or was handed,
# but not the code of the modules it imports. A module whose name says it serves the tests
# (``testing_utils.py``, ``fixtures/db.py``) is still read as a test file.

_TEST_SUPPORT_WORDS = TEST_DIR_NAMES | {"testutils", "fixtures", "conftest"}
"""Words of a file or folder name (split at ``_``, ``-``, ``.``) that mark code written for the tests."""


def is_test_support(raw: str) -> bool:
    """Whether a module outside the tests is named as test support (``testing_utils.py``,
    ``support/fixtures/db.py``): such a module is read as a test file, the rest by ``module_patches``."""
    import re

    path = PurePosixPath(raw)
    names = [*path.parts[:-1], path.stem]
    return any(word in _TEST_SUPPORT_WORDS for name in names for word in re.split(r"[_.\-]+", name.lower()))


_PATCHERS_BY_ARGUMENT = {"setattr", "delattr", "setitem", "delitem"}
"""``monkeypatch.setattr(target, ...)`` and the like: what they change is their first argument."""
_LOOKUPS = {"getattr", "vars"}
"""Calls whose result is part of their first argument."""
_MODULE_FINDERS = {"import_module", "__import__", "reload"}
"""Calls whose result is a module, whatever it is."""
_CONTAINER_CHANGERS = {"update", "append", "extend", "insert", "pop", "clear", "setdefault", "remove", "add",
                       "discard", "__setitem__"}
"""Methods that change a list, dict or set in place (``calc.TABLE.update(...)``)."""
_ENTRY_GETTERS = {"get", "setdefault", "pop"}
"""Methods that hand out an entry of their receiver (``sys.modules.get("calc")``)."""


def _scope_nodes(body) -> tuple[list, list]:
    """(the nodes of one scope, the functions and lambdas it defines): a function's decorators and
    defaults run in the scope that defines it, its body in its own."""
    import ast

    nodes, nested = [], []
    stack = list(reversed(body))
    while stack:  # each node is pushed once: bounded by the size of the tree
        node = stack.pop()
        nodes.append(node)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            nested.append(node)
            outer = [*getattr(node, "decorator_list", []), *node.args.defaults,
                     *(d for d in node.args.kw_defaults if d is not None)]
            stack.extend(reversed(outer))
            continue
        stack.extend(reversed(list(ast.iter_child_nodes(node))))
    return nodes, nested


class _Patches:
    """Finds where a module outside the tests changes the code of a module it imports (see above)."""

    def __init__(self, tree, own: set[str]) -> None:
        import ast

        self.ast = ast
        self.own = own  # the names this module is imported by: patching itself is its own business
        self.dotted: set[str] = set()  # attributes holding an imported object (self.mod = calc), module-wide
        self.holders: set[str] = set()  # names of the module's own containers that hold one ({"m": calc})
        self.scopes: list[tuple[list, set[str], int]] = []  # (nodes, parameters, enclosing scope's index)
        todo = [(tree.body, set(), -1)]
        while todo:  # each function once: bounded by the number of functions
            body, params, parent = todo.pop(0)
            nodes, nested = _scope_nodes(body)
            self.scopes.append((nodes, params, parent))
            here = len(self.scopes) - 1
            for f in nested:
                a = f.args
                names = {x.arg for x in [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg] if x is not None}
                todo.append((f.body if isinstance(f.body, list) else [f.body], names, here))
        self.tainted: list[set[str]] = []
        # `from calc import *` binds names no statement shows: any name the module never binds itself may
        # be one of them (a builtin's attributes are not writable, so builtins need no exception)
        self.star = any(isinstance(n, ast.ImportFrom) and any(a.name == "*" for a in n.names) for n in ast.walk(tree))
        # `import pkg.calc` makes `pkg.calc` a module, not an attribute of one: `pkg.calc.add(x)` is a call
        self.module_paths = {".".join(a.name.split(".")[:k]) for n in ast.walk(tree) if isinstance(n, ast.Import)
                             for a in n.names if a.asname is None for k in range(2, a.name.count(".") + 2)}
        self.bound_here: set[str] = set()
        if self.star:
            for n in ast.walk(tree):
                if isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del)):
                    self.bound_here.add(n.id)
                elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    self.bound_here.add(n.name)
                elif isinstance(n, ast.arg):
                    self.bound_here.add(n.arg)
                elif isinstance(n, (ast.Import, ast.ImportFrom)):
                    self.bound_here.update((a.asname or a.name).split(".")[0] for a in n.names)

    def _imports(self, scope: int) -> set[str]:
        """Names an import statement binds in this scope (the objects of other modules)."""
        ast = self.ast
        out = set()
        for node in self.scopes[scope][0]:
            if isinstance(node, ast.Import):
                out.update(a.asname or a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                out.update(a.asname or a.name for a in node.names if a.name != "*")
        return out

    def _pairs(self, scope: int) -> list:
        """(target, value) of each binding in this scope whose value may alias another module's object."""
        ast = self.ast
        pairs = []
        for node in self.scopes[scope][0]:
            if isinstance(node, ast.Assign):
                pairs += [(t, node.value) for t in node.targets]
            elif isinstance(node, (ast.AnnAssign, ast.NamedExpr)) and node.value is not None:
                pairs.append((node.target, node.value))
            elif isinstance(node, (ast.For, ast.AsyncFor, ast.comprehension)):
                pairs.append((node.target, node.iter))
            elif isinstance(node, (ast.With, ast.AsyncWith)):
                pairs += [(i.optional_vars, i.context_expr) for i in node.items if i.optional_vars is not None]
        return pairs

    def _locals(self, scope: int) -> set[str]:
        """Names a function binds for itself (its parameters, assignments, defs), which hide the module's."""
        ast = self.ast
        nodes, params, parent = self.scopes[scope]
        if parent < 0:
            return set()
        declared = {n for node in nodes if isinstance(node, (ast.Global, ast.Nonlocal)) for n in node.names}
        stored = {n.id for n in nodes if isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del))}
        stored |= {n.name for n in nodes if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
        return (params | stored) - declared

    def _taint(self) -> None:
        """Per scope, the names that hold another module's object: its imports, the enclosing scope's
        (unless a local hides them) and aliases of either (``m = calc``; ``self.m = calc``, module-wide)."""
        ast = self.ast
        pairs = [self._pairs(i) for i in range(len(self.scopes))]
        loops = [{(n.target, n.iter) for n in nodes if isinstance(n, (ast.For, ast.AsyncFor, ast.comprehension))}
                 for nodes, _, _ in self.scopes]
        total = sum(len(p) for p in pairs)
        for _ in range(total + 1):  # each round that goes on adds an alias: at most one per binding
            before = len(self.dotted) + len(self.holders)
            self.tainted = []
            for i, (_, _, parent) in enumerate(self.scopes):
                outer = self.tainted[parent] if parent >= 0 else {"__builtins__"}
                tainted = (outer - self._locals(i)) | self._imports(i)
                for _ in range(len(pairs[i]) + 1):  # likewise within the scope
                    grown = False
                    for target, value in pairs[i]:
                        # a container the module builds is its own, but its items (d["m"], a loop's m,
                        # `a, b = calc, x`) are not
                        unpacks = isinstance(target, (ast.Tuple, ast.List)) or (target, value) in loops[i]
                        if self.refers(value, tainted) or (unpacks and self.holds(value, tainted)):
                            names = [(n, self.dotted if "." in n else tainted) for n in _bound(target)]
                        elif self.holds(value, tainted):
                            names = [(n, self.holders) for n in _bound(target)]
                        else:
                            continue
                        for name, into in names:
                            if name not in into:
                                into.add(name)
                                grown = True
                    if not grown:
                        break
                self.tainted.append(tainted)
            if len(self.dotted) + len(self.holders) == before:
                break

    def refers(self, node, tainted: set[str]) -> bool:
        """Whether ``node`` evaluates to (a part of) an object of another module, in a scope where the
        names ``tainted`` hold one. Parameters, ``self`` and what the module made are not."""
        ast = self.ast
        if isinstance(node, ast.Name):
            return node.id in tainted or (self.star and node.id not in self.bound_here)
        if isinstance(node, ast.Attribute):
            return _dotted(node) in self.dotted or self.refers(node.value, tainted)
        if isinstance(node, ast.Subscript):
            if _dotted(node.value) == "sys.modules" and isinstance(node.slice, ast.Name) \
                    and node.slice.id == "__name__":
                return False  # sys.modules[__name__]: this module itself
            if isinstance(node.value, ast.Call) and _call_name(node.value) in ("globals", "vars") \
                    and not node.value.args:
                return True  # globals()["calc"]: a global looked up by name, an import as likely as not
            return self.refers(node.value, tainted) or self.holds(node.value, tainted)
        if isinstance(node, ast.Starred):
            return self.refers(node.value, tainted)
        if isinstance(node, ast.Call):
            # an ordinary call makes a new object (calc.Thing()); these hand out an existing one
            name = _call_name(node)
            if name in _MODULE_FINDERS:
                return True
            if name in _LOOKUPS and isinstance(node.func, ast.Name):
                return bool(node.args) and self.refers(node.args[0], tainted)
            if name == "type" and isinstance(node.func, ast.Name) and len(node.args) == 1:
                return self.refers(node.args[0], tainted)  # type(obj): the class of an imported object
            if name in _ENTRY_GETTERS and isinstance(node.func, ast.Attribute):
                return self.refers(node.func.value, tainted)
            return False
        if isinstance(node, ast.IfExp):
            return self.refers(node.body, tainted) or self.refers(node.orelse, tainted)
        if isinstance(node, ast.BoolOp):
            return any(self.refers(v, tainted) for v in node.values)
        if isinstance(node, ast.NamedExpr):
            return self.refers(node.value, tainted)
        return False

    def holds(self, node, tainted: set[str]) -> bool:
        """Whether ``node`` is a container of the module's own that holds another module's object
        (``[calc, x]``, ``{"m": calc}``, a name bound to one): changing it is fine, its items are not."""
        ast = self.ast
        if isinstance(node, ast.Name):
            return node.id in self.holders
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            return any(self.refers(e, tainted) or self.holds(e, tainted) for e in node.elts)
        if isinstance(node, ast.Dict):
            return any(self.refers(v, tainted) or self.holds(v, tainted) for v in node.values)
        if isinstance(node, ast.Call) and _call_name(node) in ("list", "tuple", "dict", "zip", "reversed",
                                                                 "sorted", "enumerate", "items", "values"):
            parts = [*node.args, *(k.value for k in node.keywords)]
            if isinstance(node.func, ast.Attribute):
                parts.append(node.func.value)
            return any(self.refers(p, tainted) or self.holds(p, tainted) for p in parts)
        return False

    def _names_other_module(self, target, tainted: set[str], dotted_only: bool) -> bool:
        """Whether a patcher's target is another module's: a string naming one (``"calc.add"``; with
        ``dotted_only``, only a dotted one, as ``monkeypatch.setattr("calc.add", ...)`` takes) or an
        object of one (``calc``, ``sys.modules``)."""
        ast = self.ast
        if isinstance(target, ast.Constant) and isinstance(target.value, str):
            text = target.value.strip()
            if not all(part.isidentifier() for part in text.split(".")) or (dotted_only and "." not in text):
                return False  # not a Python path: `client.patch("/items/1")` is an HTTP PATCH
            return not any(text == own or text.startswith(own + ".") for own in self.own)
        return target is not None and self.refers(target, tainted)

    def find(self) -> list[tuple[int, str]]:
        """(line, what) for each place the module changes another module's code or state."""
        self._taint()
        found: set[tuple[int, str]] = set()
        for i, (nodes, _, _) in enumerate(self.scopes):
            tainted = self.tainted[i]
            for node in nodes:
                what = self._judge(node, tainted)
                if what:
                    found.add((getattr(node, "lineno", 0), what))
        return sorted(found)

    def _judge(self, node, tainted: set[str]) -> str | None:
        """What is wrong with one node, or None."""
        ast = self.ast
        if isinstance(node, (ast.Attribute, ast.Subscript)) and isinstance(node.ctx, (ast.Store, ast.Del)):
            if self.refers(node.value, tainted):
                verb = "deletes" if isinstance(node.ctx, ast.Del) else "assigns"
                return (f"{verb} `{ast.unparse(node)[:80]}`, part of another module it imports, which stays "
                        "changed for the tests that run after it")
            return None
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            if any(a.name.split(".")[0] == "ctypes" for a in node.names) or (
                    isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "ctypes"):
                return "imports ctypes, which can rewrite any object in the test run"
            return None
        if not isinstance(node, ast.Call):
            return None
        name, dotted = _call_name(node), _dotted(node.func) or ""
        first = node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == "target"), None)
        if isinstance(node.func, ast.Name) and name in ("setattr", "delattr"):
            if first is not None and self.refers(first, tainted):
                return f"calls `{name}({ast.unparse(first)[:40]}, ...)` on another module it imports"
            return None
        if isinstance(node.func, ast.Name) and name in ("exec", "eval", "compile"):
            return f"calls `{name}(...)`: code it builds at run time cannot be checked"
        if _is_patch_call(node):
            if name in ("MonkeyPatch", "context"):
                return None  # its setattr(...) calls are the patches
            # mock.patch("calc.add") needs a dotted path; patch.multiple("calc", ...) names a module alone
            if self._names_other_module(first, tainted, dotted_only=name != "multiple"):
                return f"patches another module with `{dotted}(...)` while the tests run"
            return None
        if isinstance(node.func, ast.Attribute) and name in _PATCHERS_BY_ARGUMENT:
            if self._names_other_module(first, tainted, dotted_only=True):
                return f"patches another module with `{dotted or name}(...)` while the tests run"
            return None
        if isinstance(node.func, ast.Attribute) and name in _MUTATING_METHODS:
            receiver = node.func.value
            if not self.refers(receiver, tainted):
                return None
            shown = _dotted(receiver) or ""
            if (shown in ("sys.modules", "__builtins__", "builtins.__dict__") or shown.endswith(".__dict__")
                    or (isinstance(receiver, ast.Call) and _call_name(receiver) == "vars")
                    or name.startswith("__")):
                return (f"calls `{ast.unparse(node.func)[:80]}(...)`, which changes another module's code for "
                        "the tests that run after it")
            # calc.TABLE.update(...), m.REGISTRY.append(x): a container another module holds, changed in
            # place as `calc.TABLE[k] = v` would; not `calc.update(...)` or `pkg.calc.add(...)` (a
            # module's function) nor `calc.Thing().items.append(x)` (an object the module made).
            # Only a module-level table named as a constant: `db.session.add(row)`, `app.config.update(...)`
            # and the like are how ordinary code uses a framework, and flagging them would send most
            # PRs of such projects to a human.
            if (name in _CONTAINER_CHANGERS and isinstance(receiver, ast.Attribute)
                    and receiver.attr.isupper()
                    and shown not in self.dotted and shown not in self.module_paths
                    and self.refers(receiver.value, tainted)):
                return (f"calls `{ast.unparse(node.func)[:80]}(...)`, which changes a container of another "
                        "module it imports for the tests that run after it")
        return None


def module_patches(source: str, own: set[str] | frozenset[str] = frozenset()) -> list[tuple[int, str]] | None:
    """Where a module outside the tests changes another module's code, as (line, what); None when it
    is not Python. ``own``: the dotted names the module is imported by (a patch of itself is allowed).

    Flagged, at import or in any function: assigning or deleting an attribute or item of a name an
    import binds (``calc.add = ...``, ``Thing.method = ...`` after ``from calc import Thing``,
    ``os.environ[...] = ...``) or of an alias of one (``m = calc``, ``self.m = calc``, ``getattr(calc,
    "x")``, ``sys.modules["calc"]``, ``type(obj)``, ``vars(calc)``), changing a container of one in place
    (``calc.TABLE.update(...)``, ``m.REGISTRY.append(x)``, ``calc.__dict__.update(...)``),
    ``setattr``/``delattr`` on one, writes to ``sys.modules`` and
    ``builtins``, ``mock.patch``/``patch.object``/``monkeypatch.setattr`` (started, as a decorator or in
    a ``with``) on another module, ``exec``/``eval``/``compile`` and ``ctypes``. Allowed: changing
    parameters, ``self``/``cls``, local objects and the module's own globals (``append``/``update``...
    on them too), and calling a module's functions (``calc.update(x)``, ``pkg.db.insert(x)``).
    """
    import ast

    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return None
    return _Patches(tree, set(own)).find()


# ``module_patches`` leaves a function's parameters alone: ``def fill(items): items.append(1)`` is what
# the code under test does all day. But ``def fix(mod): mod.add = ...`` in src/compat.py, called by a new
# test as ``compat.fix(calc)``, is a patch split in two, each half harmless on its own. So the functions
# of a followed module that change an attribute of a parameter are named, and a changed test or followed
# module that hands one of them a name it imports is flagged.

def parameter_patchers(source: str) -> dict[str, tuple[int, str]]:
    """The module's top-level functions that change an attribute of a parameter (``mod.add = ...``,
    ``setattr(mod, ...)``, ``del mod.x``; not ``self``/``cls``, not ``items[0] = 1`` or
    ``items.append``), by name, with the first such place as (line, what). {} when not Python."""
    import ast

    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return {}

    def root(node):
        """The name at the bottom of ``a.b[c].d``, and whether an attribute is on the way."""
        through = False
        for _ in range(200):  # a chain's length; deeper ones are not real code
            if isinstance(node, ast.Attribute):
                node, through = node.value, True
            elif isinstance(node, ast.Subscript):
                node = node.value
            else:
                break
        return (node.id if isinstance(node, ast.Name) else None), through

    out: dict[str, tuple[int, str]] = {}
    for func in tree.body:
        if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        a = func.args
        params = {x.arg for x in [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg] if x is not None}
        params -= {"self", "cls"}
        places = []
        for sub in ast.walk(func):
            if isinstance(sub, (ast.Attribute, ast.Subscript)) and isinstance(sub.ctx, (ast.Store, ast.Del)):
                name, through = root(sub)
                if name in params and (through or isinstance(sub, ast.Attribute)):
                    verb = "deletes" if isinstance(sub.ctx, ast.Del) else "assigns"
                    places.append((sub.lineno, f"`{func.name}` {verb} `{ast.unparse(sub)[:60]}` on its parameter"))
            elif (isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name) and sub.func.id in ("setattr", "delattr")
                  and sub.args and root(sub.args[0])[0] in params):
                places.append((sub.lineno, f"`{func.name}` calls `{sub.func.id}({ast.unparse(sub.args[0])[:40]}, ...)` "
                                           "on its parameter"))
        if places:
            out[func.name] = min(places)
    return out


def modules_handed_to(source: str, names) -> list[tuple[int, str, str]]:
    """Where ``source`` calls a function named in ``names`` with a name it imports (``fix(calc)``,
    ``compat.fix(mod=pkg.calc)``), as (line, function, argument). [] when not Python."""
    import ast

    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(a.asname or a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.update(a.asname or a.name for a in node.names if a.name != "*")
    # an alias of an import (`m = calc`, `m: object = pkg.calc`, `m = n = calc`) is handed on as well
    binds = [(t, node.value) for node in ast.walk(tree) if isinstance(node, ast.Assign) for t in node.targets]
    binds += [(node.target, node.value) for node in ast.walk(tree)
              if isinstance(node, (ast.AnnAssign, ast.NamedExpr)) and node.value is not None]
    binds = [(t.id, _dotted(v)) for t, v in binds if isinstance(t, ast.Name) and _dotted(v)]
    for _ in range(len(binds) + 1):  # each round that goes on adds an alias
        grown = {name for name, dotted in binds if name not in imported and dotted.split(".")[0] in imported}
        if not grown:
            break
        imported |= grown
    out = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and _call_name(node) in names):
            continue
        for arg in [*node.args, *(k.value for k in node.keywords)]:
            arg = arg.value if isinstance(arg, ast.Starred) else arg
            dotted = _dotted(arg)
            if dotted and dotted.split(".")[0] in imported:
                out.append((node.lineno, _call_name(node), dotted))
                break
    return sorted(out)


def _own_names(path: str) -> set[str]:
    """The dotted names a .py path may be imported by (as ``_module_index`` gives them)."""
    return {name for name, paths in _module_index([path]).items() if path in paths}


def _new_findings(before: str | None, after: str, find=test_reach) -> list[tuple[int, str]]:
    """``find`` (``test_reach`` or ``module_patches``) of a module the change adds, or of its part the
    change wrote: findings on lines it added or rewrote, and any the base's text did not have (an edited
    import can turn an old line into a patch)."""
    from collections import Counter

    found = find(after) or []
    if before is None:
        return found
    old = Counter(what for _, what in find(before) or [])
    added = _added_lines(before, after)
    out = []
    for line, what in found:
        if old[what] > 0 and line not in added:
            old[what] -= 1
            continue
        out.append((line, what))
    return out


def _imported_by(chain: list[str]) -> str:
    """``imported by tests/test_a.py through support/__init__.py``: the test, then the modules between."""
    return f"imported by {chain[0]}" + (f" through {', '.join(chain[1:])}" if len(chain) > 1 else "")


def helper_reach(tests: Mapping[str, tuple[str | None, str | None]],
                 modules: Mapping[str, tuple[str | None, str | None]]) -> list[str]:
    """Reasons for changed modules outside the tests that reach beyond them, where the change's tests
    import them, named with the test that imports it.

    ``tests`` is ``repo_test_texts``'s answer (the tests a change adds or edits, judged by
    ``repo_test_edits`` themselves); ``modules`` maps every other .py file it adds or edits to its
    (before, after) text (None: absent). A module's code runs in the test run at import, and its
    functions when a test calls them. One named as test support (``is_test_support``:
    ``testing_utils.py``) is held to what a test file is held to (``test_reach``); any other, most
    likely the code under test, to ``module_patches``: it may change its parameters, ``self`` and its
    own globals, not the modules it imports; and none of its functions that change a parameter's
    attributes may be handed an imported name by a changed test or followed module
    (``parameter_patchers``, ``modules_handed_to``). Only what the change wrote counts, for a module the
    base had. A module no changed test imports is not read.
    """
    sources = {p: after for p, (_, after) in {**modules, **tests}.items() if p.endswith(".py") and after is not None}
    starts = [p for p in tests if p in sources]
    reasons = []
    reached = imported_changes(sources, starts)
    for path, chain in sorted(reached.items()):
        if path in tests or path not in modules:
            continue  # a test file: repo_test_edits judged it
        if is_test_support(path):
            found = _new_findings(modules[path][0], sources[path])
        else:  # the code under test, most likely: only patches of other modules count
            own = _own_names(path)
            found = _new_findings(modules[path][0], sources[path], lambda text: module_patches(text, own))
        shown = [f"{path}:{line}: {what} ({_imported_by(chain)})" for line, what in found[:_MAX_REACH_PER_FILE]]
        if len(found) > _MAX_REACH_PER_FILE:
            shown.append(f"{path}: and {len(found) - _MAX_REACH_PER_FILE} more places like these "
                         f"({_imported_by(chain)})")
        reasons += shown
    return reasons + _handed_modules(sources, tests, modules, reached)


def _handed_modules(sources: Mapping[str, str], tests, modules, reached: Mapping[str, list[str]]) -> list[str]:
    """Reasons for a function of a followed module (not test support: ``helper_reach`` read that as a
    test file) that changes its parameter's attributes, where a changed test or followed module hands
    it a name it imports: ``src/compat.py:2: `fix` assigns `mod.add` on its parameter, and
    tests/test_a.py:4 hands it `calc` (imported by tests/test_a.py)``."""
    patchers: dict[str, list[tuple[str, int, str]]] = {}
    for path in sorted(reached):
        if path in tests or path not in modules or is_test_support(path):
            continue
        for name, (line, what) in parameter_patchers(sources[path]).items():
            patchers.setdefault(name, []).append((path, line, what))
    if not patchers:
        return []
    texts = {**modules, **tests}
    added: dict[str, set[int] | None] = {}

    def wrote(path: str, line: int) -> bool:
        """Whether the change wrote this line (the base is trusted: an old call of an old function is not
        the change's doing)."""
        if path not in added:
            before, after = texts.get(path, (None, None))
            added[path] = None if before is None or after is None else _added_lines(before, after)
        return added[path] is None or line in added[path]

    reasons = []
    callers = sorted({*(p for p in tests if p in sources), *reached})
    for caller in callers:
        for call_line, name, arg in modules_handed_to(sources[caller], set(patchers)):
            for path, line, what in patchers[name]:
                if not (wrote(path, line) or wrote(caller, call_line)):
                    continue
                why = (f"{path}:{line}: {what}, and {caller}:{call_line} hands it `{arg}`, which it imports "
                       f"({_imported_by(reached[path])})")
                if why not in reasons:
                    reasons.append(why)
    return reasons


def repo_helper_reach(worktree: Path, base_commit: str, files: list[str],
                      test_texts: Mapping[str, tuple[str | None, str | None]]) -> list[str]:
    """``helper_reach`` for a change in ``worktree`` (its changed ``files``) over ``base_commit``:
    reads the head text of its changed .py files, and the base's text of those its tests import."""
    if not any(t.endswith(".py") and after for t, (_, after) in test_texts.items()):
        return []
    afters: dict[str, str] = {}
    links: set[str] = set()
    for rel in files:
        target = worktree / rel
        if rel in test_texts or not rel.endswith(".py") or not (target.is_file() or target.is_symlink()):
            continue
        if target.is_symlink():
            # its code is wherever it points, maybe outside the change: never read, named if a test imports it
            afters[rel] = ""
            links.add(rel)
            continue
        try:
            afters[rel] = target.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
    sources = {**afters, **{p: a for p, (_, a) in test_texts.items() if p.endswith(".py") and a is not None}}
    reached = imported_changes(sources, [p for p in test_texts if p in sources])
    reasons = [f"{rel}: a symbolic link the change adds or edits, whose code was not read "
               f"({_imported_by(reached[rel])})"
               for rel in sorted(links & set(reached))]
    modules = {rel: (_base_text(worktree, base_commit, rel), text)
               for rel, text in afters.items() if rel in reached and rel not in links}
    return reasons + helper_reach(test_texts, modules)


_NOT_SHADOWING = {"conftest", "__init__", "__main__", "setup"}
"""Module names every folder may have (conftest.py is flagged on its own)."""


def _top_level(path: str, files: set[str]) -> tuple[str, str]:
    """(importable top-level name, the path that provides it) of a .py file: its package's top folder,
    climbing while the folder holding it has an ``__init__.py``, or the module itself."""
    parts = PurePosixPath(path).parts
    i = len(parts) - 1
    while i > 0 and "/".join(parts[:i]) + "/__init__.py" in files:
        i -= 1
    name = parts[i][:-3] if i == len(parts) - 1 else parts[i]
    return name, "/".join(parts[: i + 1])


def shadowing_modules(added: list[str], base_files: set[str], head_files: set[str]) -> list[str]:
    """Reasons for new .py files that bring a second module (or package) of a name the repository has.

    A test the change adds can put that file's folder first on ``sys.path`` and import it: every later
    ``import calc`` of the repository's tests then gets the change's ``calc``, not the code under test.
    A module moved (the base's copy gone at head) is not a second one.
    """
    base: dict[str, set[str]] = {}
    for f in base_files:
        if f.endswith(".py"):
            name, where = _top_level(f, base_files)
            base.setdefault(name, set()).add(where)
    reasons, seen = [], set()
    for raw in sorted(added):
        if not raw.endswith(".py"):
            continue
        name, where = _top_level(raw, head_files)
        if name in _NOT_SHADOWING or name not in base or where in base[name] or where in seen:
            continue
        seen.add(where)  # one reason per new package, not per file in it
        still = sorted(w for w in base[name] if any(h == w or h.startswith(w + "/") for h in head_files))
        if still:
            reasons.append(f"{raw}: a second module named `{name}` beside the repository's {still[0]}; a test "
                           "that puts its folder first on sys.path makes the repository's tests import it "
                           "instead of the code under test")
    return reasons


def tracked_files(worktree: Path, commit: str) -> set[str]:
    """The paths of every file in ``commit`` (git ls-tree), read without running the repository's config."""
    proc = subprocess.run(
        ["git", "ls-tree", "-r", "-z", "--name-only", commit], cwd=worktree, capture_output=True,
        env={"GIT_CONFIG_NOSYSTEM": "1", "PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/nonexistent"},
    )
    return {p for p in proc.stdout.decode("utf-8", "replace").split("\0") if p} if proc.returncode == 0 else set()


def repo_shadowing(worktree: Path, base_commit: str, files: list[str]) -> list[str]:
    """``shadowing_modules`` for a change in ``worktree`` (its changed ``files``) over ``base_commit``."""
    if not any(f.endswith(".py") for f in files):
        return []
    base = tracked_files(worktree, base_commit)
    added = [f for f in files if f not in base and (worktree / f).is_file()]
    gone = {f for f in files if not (worktree / f).exists()}
    return shadowing_modules(added, base, (base - gone) | set(added))


def judge_files(files: list[str], test_texts: Mapping[str, tuple[str | None, str | None]],
                configs: Mapping[str, tuple[str | None, str | None]] | None = None) -> list[str]:
    """The files of a change that decide how it is tested, each as ``"path (how)"``, for the human.

    ``test_texts`` is ``repo_test_texts``'s answer (the repository's tests, where they judge the change;
    {} otherwise) and ``configs`` ``config_texts``'s. Lists every such file, harmless or not, so a
    packet or a pull request comment can say "this change also touches its tests" even when the
    tests alone would have decided; why a file is a problem is in ``Candidate.tampering``.
    """
    out = []
    configs = configs or {}
    for raw in files:
        name = PurePosixPath(raw).name
        if raw in test_texts:
            before, after = test_texts[raw]
            if before is None:
                how = "new"
            elif after is None:
                how = "deleted"
            elif raw.endswith(".py") and only_adds_tests(before, after):
                how = "tests added"
            else:
                how = "changed"
            out.append(f"{raw} ({'conftest.py, ' if name == 'conftest.py' else ''}{how})")
        elif name == "conftest.py":
            out.append(f"{raw} (conftest.py)")
        elif name in PYTEST_CONFIG_FILES or (name in SECTIONED_CONFIG_FILES
                                             and (raw not in configs or pytest_section_changed(name, *configs[raw]))):
            out.append(f"{raw} (pytest configuration)")
    return out


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
