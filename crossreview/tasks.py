"""Find task folders, load them into ``Task`` models, and explain what is wrong.

A task folder is any folder holding ``task.toml``. Every problem is reported
as a ``TaskError`` naming the file, the key and the fix; one broken task never
stops the others from loading.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .llm.settings import ModelSettings, Price
from .models import Task, TaskError, TaskFile

TASK_FILE = "task.toml"
SUITE_FILE = "crossreview.toml"
TASK_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_SKIP_DIRS = {".git", "node_modules", "__pycache__", ".venv", "venv", ".crossreview", ".tox"}


@dataclass
class Suite:
    """The tasks found under some paths, and those that failed to load."""

    tasks: list[Task] = field(default_factory=list)
    errors: list[TaskError] = field(default_factory=list)


def find_task_dirs(paths: list[Path]) -> list[Path]:
    """Every folder holding task.toml at or below ``paths``, in a stable order."""
    found: list[Path] = []
    seen: set[Path] = set()
    for root in paths:
        root = root.resolve()
        if (root / TASK_FILE).is_file():
            candidates = [root]
        else:
            candidates = sorted(_walk_for_tasks(root))
        for d in candidates:
            if d not in seen:
                seen.add(d)
                found.append(d)
    return found


def _walk_for_tasks(root: Path, seen: set[Path] | None = None):
    # Symlinked folders are followed once each: a link back up the tree (a loop) must not recurse forever.
    seen = set() if seen is None else seen
    try:
        real = root.resolve()
        if not root.is_dir() or real in seen:
            return
        seen.add(real)
        children = sorted(root.iterdir())
    except OSError:
        return  # unreadable, or a link loop the OS refuses to resolve: not a place tasks live
    for child in children:
        try:
            if not child.is_dir() or child.name in _SKIP_DIRS or child.name.startswith("."):
                continue
            is_task = (child / TASK_FILE).is_file()
        except OSError:
            continue
        if is_task:
            yield child  # a task's own subfolders are its repo and tests, not tasks
        else:
            yield from _walk_for_tasks(child, seen)


def _describe_validation_error(exc: ValidationError) -> list[tuple[str, str]]:
    out = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        kind = err["type"]
        if kind == "extra_forbidden":
            section_model = _section_for(err["loc"][:-1])
            allowed = ", ".join(section_model.model_fields) if section_model else ""
            msg = f"unknown key {err['loc'][-1]!r}" + (f"; expected one of: {allowed}" if allowed else "")
        else:
            msg = _type_mistake(err) or f"{err['msg']} (got {err.get('input')!r})"
        out.append((loc, msg))
    return out


_EXPECTED = {"float_type": "a number", "int_type": "a whole number", "bool_type": "true or false"}
_INTEGER = re.compile(r"[+-]?[0-9][0-9_]*")
_DECIMAL = re.compile(r"[+-]?[0-9][0-9_]*(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}


def _type_mistake(err: dict) -> str | None:
    """The message for a number or a boolean written as another TOML type, or None for any other error.

    Files are validated strictly: TOML has real numbers and booleans, so
    ``timeout_sec = "10"`` is a mistake to point out, not one to guess
    around (lax validation would read it as 10, and "yes" as true).
    """
    expected = _EXPECTED.get(err["type"])
    if expected is None or not err["loc"] or not isinstance(err["loc"][-1], str):
        return None
    key, value = str(err["loc"][-1]), err.get("input")
    if isinstance(value, str):
        got = f"the string {_toml_string(value)}"
    elif isinstance(value, bool):
        got = "true" if value else "false"
    elif isinstance(value, (int, float)):
        got = repr(value)
    else:
        got = _toml_kind(value)
    fix = None
    text = value.strip() if isinstance(value, str) else None
    if err["type"] == "bool_type":
        word = text.lower() if text is not None else str(value) if isinstance(value, int) else None
        fix = "true" if word in _TRUE else "false" if word in _FALSE else None
        if fix is None:
            return f"expected true or false, got {got}; write {key} = true or {key} = false"
    elif text is not None and _INTEGER.fullmatch(text):
        fix = str(int(text.replace("_", "")))  # re-spelt: "010" would be a TOML error of its own
    elif text is not None and err["type"] == "float_type" and _DECIMAL.fullmatch(text):
        fix = repr(float(text.replace("_", "")))
    elif err["type"] == "int_type" and isinstance(value, float) and value.is_integer():
        fix = str(int(value))
    if fix is None:
        return f"expected {expected}, got {got}; write {key} = <{expected}>" + (", without quotes" if text else "")
    return f"expected {expected}, got {got}; write {key} = {fix}"


def _toml_string(value: str) -> str:
    """``value`` as a TOML basic string, so the message shows what the file says (on one line)."""
    return json.dumps(value, ensure_ascii=False)


def _toml_kind(value: Any) -> str:
    return "a table" if isinstance(value, dict) else "an array" if isinstance(value, list) else type(value).__name__


def _section_for(loc: tuple) -> type[BaseModel] | None:
    model: type[BaseModel] = TaskFile
    for part in loc:
        info = model.model_fields.get(str(part))
        if info is None:
            return None
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
        else:
            return None
    return model


def _read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file; anything wrong with its text is a TOMLDecodeError (bad bytes, absurd nesting)."""
    with path.open("rb") as fh:
        data = fh.read()
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise tomllib.TOMLDecodeError(f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except RecursionError:
        raise tomllib.TOMLDecodeError("arrays or tables nested too deeply") from None


def load_task(task_dir: Path) -> Task | list[TaskError]:
    """Load one task folder, or return every error found in it."""
    task_dir = task_dir.resolve()
    toml_path = task_dir / TASK_FILE
    errors: list[TaskError] = []

    def err(file: Path, message: str, fld: str | None = None) -> None:
        errors.append(TaskError(path=task_dir, file=file, field=fld, message=message))

    try:
        raw = _read_toml(toml_path)
    except tomllib.TOMLDecodeError as exc:
        err(toml_path, f"not valid TOML: {exc}; fix the syntax (see the task.toml example in the README)")
        return errors
    except (OSError, UnicodeDecodeError) as exc:
        err(toml_path, f"cannot be read: {exc}")
        return errors
    try:
        spec = TaskFile.model_validate(raw, strict=True)  # TOML has types: "10" is no number (see _type_mistake)
    except ValidationError as exc:
        for loc, msg in _describe_validation_error(exc):
            err(toml_path, msg, loc)
        return errors

    if not re.fullmatch(r"1(\.[0-9]+){0,2}", spec.version.strip()):
        # A later format may give the same keys other meanings: reading it as 1.x would run the task wrongly.
        err(toml_path, f"version {spec.version!r} is not a task.toml format crossreview reads; "
            "write version = \"1.0\" (the format in the README)", "version")

    task_id = spec.task.id or task_dir.name
    if not TASK_ID_RE.match(task_id):
        err(
            toml_path,
            f"task id {task_id!r} must be letters, digits, '.', '_' or '-' (it names git branches)",
            "task.id",
        )

    instruction_file = task_dir / "instruction.md"
    instruction = ""
    if not instruction_file.is_file():
        err(instruction_file, "missing: write the prompt every agent gets in instruction.md")
    else:
        try:
            instruction = instruction_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            err(instruction_file, f"cannot be read as UTF-8 text: {exc}")
        else:
            if not instruction.strip():
                err(instruction_file, "is empty: write the prompt every agent gets")

    outside = []
    for name in ("tests", "solution", "holdout"):
        sub = task_dir / name
        if not sub.is_symlink():
            continue
        try:
            where = "outside the task folder" if task_dir not in sub.resolve(strict=True).parents else None
        except (OSError, RuntimeError):  # dangling, or a loop of links
            where = "which leads nowhere"
        if where:
            outside.append(sub)
            err(sub, f"is a link to {os.readlink(sub)!r}, {where}: crossreview copies {name}/ into worktrees "
                "and reads nothing of the host through a task folder; put the files in the task folder")
    tests_dir = task_dir / "tests"
    if tests_dir in outside:
        pass  # reported above
    elif not tests_dir.is_dir():
        err(tests_dir, "missing: add the acceptance tests the candidates must pass in tests/")
    elif not _has_tests(tests_dir, spec.verifier.command):
        err(
            tests_dir,
            "has no tests: add test_*.py files (pytest collects only those) or change [verifier] command",
        )

    repo_path, repo_is_folder = _resolve_repo(task_dir, spec, toml_path, err)

    if "{tests}" not in spec.verifier.command:
        # A command that never sees the tests folder cannot be checking it.
        err(
            toml_path,
            "must mention {tests}, where the task's tests are copied (e.g. \"python -m pytest -q {tests}\")",
            "verifier.command",
        )

    if errors:
        return errors
    return Task(
        id=task_id,
        path=task_dir,
        instruction=instruction,
        tags=spec.task.tags,
        metadata=spec.metadata,
        agent_timeout=spec.agent.timeout_sec,
        verifier_command=spec.verifier.command,
        verifier_timeout=spec.verifier.timeout_sec,
        tests_visible=spec.verifier.tests_visible,
        repo_path=repo_path,
        repo_ref=spec.repo.ref,
        repo_is_folder=repo_is_folder,
    )


def _has_tests(tests_dir: Path, command: str) -> bool:
    files = [p for p in tests_dir.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    if "pytest" in command:
        return any(p.suffix == ".py" and (p.name.startswith("test_") or p.stem.endswith("_test")) for p in files)
    return bool(files)


def _resolve_repo(task_dir: Path, spec: TaskFile, toml_path: Path, err) -> tuple[Path, bool]:
    try:
        return _resolve_repo_path(task_dir, spec, toml_path, err)
    except (OSError, ValueError) as exc:  # a NUL byte, a name too long, a loop of links
        err(toml_path, f"{spec.repo.path!r} cannot be used as a path: {exc}", "repo.path")
        return task_dir / "repo", True


def _resolve_repo_path(task_dir: Path, spec: TaskFile, toml_path: Path, err) -> tuple[Path, bool]:
    repo_path = (task_dir / spec.repo.path).resolve()
    if not repo_path.exists():
        err(
            toml_path if spec.repo.path != "repo" else repo_path,
            f"{spec.repo.path!r} does not exist: create repo/ with the task's starting files, "
            "or set [repo] path to an existing git repository",
            "repo.path",
        )
        return repo_path, True
    if not repo_path.is_dir():
        err(toml_path, f"{spec.repo.path!r} is not a folder", "repo.path")
        return repo_path, True
    inside = repo_path == task_dir or task_dir in repo_path.parents
    is_git = (repo_path / ".git").exists() or _is_bare_repository(repo_path)
    if not is_git and not inside:
        # A task folder must not have crossreview snapshot a folder of the host (a home, ~/.ssh,
        # /etc) into its worktrees: a plain folder is the task's own, or a repository the user names.
        err(
            toml_path,
            f"{spec.repo.path!r} leads to {repo_path}, outside the task folder, and is not a git repository: "
            "put the starting files in the task's repo/ folder, or point [repo] path at a git repository",
            "repo.path",
        )
        return repo_path, True
    if inside and is_git:
        # A repository that came with the task folder is not one the user runs git in: its
        # config (filters, fsmonitor) must not run. It is snapshotted as files, its .git left out.
        is_git = False
    if not is_git:
        if spec.repo.ref != "HEAD":
            why = ("a git repository inside the task folder is used as plain files (its .git is left out)"
                   if inside and (repo_path / ".git").exists() else "it is a plain folder")
            err(toml_path, f"ref {spec.repo.ref!r} needs [repo] path to be a git repository outside the task "
                f"folder; {why}: remove ref, or point [repo] path at the repository", "repo.ref")
        nested = _nested_git(repo_path)
        if nested is not None:
            err(nested, "is a git repository inside the task's starting files: git snapshots it as a bare "
                "submodule pointer, so its files would be missing from every worktree; delete this .git "
                "(keep the files)")
        return repo_path, True
    if spec.repo.ref.startswith("-") or "\0" in spec.repo.ref:
        err(toml_path, f"ref {spec.repo.ref!r} is not a commit name (it must not start with '-')", "repo.ref")
        return repo_path, False
    proc = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", spec.repo.ref + "^{commit}"],
        cwd=repo_path,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        err(toml_path, f"ref {spec.repo.ref!r} is not a commit in {repo_path}", "repo.ref")
    return repo_path, False


def _is_bare_repository(path: Path) -> bool:
    """A bare repository (``git clone --bare``): worktrees can be made from it like from any other."""
    return (path / "HEAD").is_file() and (path / "objects").is_dir() and (path / "refs").is_dir()


def _nested_git(root: Path) -> Path | None:
    """The first ``.git`` below (not at) ``root``, links not followed; None when there is none."""
    for folder, dirs, files in os.walk(root):
        if folder != str(root) and (".git" in dirs or ".git" in files):
            return Path(folder) / ".git"
        dirs[:] = [d for d in dirs if d != ".git"]
    return None


def load_suite(paths: list[Path]) -> Suite:
    """Load every task under ``paths``; broken ones go to ``Suite.errors``."""
    suite = Suite()
    ids: dict[str, Path] = {}
    for d in find_task_dirs(paths):
        loaded = load_task(d)
        if isinstance(loaded, list):
            suite.errors.extend(loaded)
            continue
        if loaded.id in ids:
            suite.errors.append(
                TaskError(
                    path=d,
                    file=d / TASK_FILE,
                    field="task.id",
                    message=f"id {loaded.id!r} is already used by {ids[loaded.id]}; give each task its own id",
                )
            )
            continue
        ids[loaded.id] = d
        suite.tasks.append(loaded)
    return suite


# --- suite defaults: crossreview.toml or [tool.crossreview] -----------------


class GateConfig(BaseModel):
    """``[gate]``: how ``crossreview gate`` judges a pull request (read from the base branch only)."""

    model_config = ConfigDict(extra="forbid")

    verifier: str = "python -m pytest -q"
    """Run from the root of the pull request's tree; pytest's JUnit XML gives per-test outcomes."""
    verifier_timeout_sec: float = Field(default=600, gt=0)
    agent_timeout_sec: float = Field(default=900, gt=0)
    attempts: int = Field(default=0, ge=0)
    """How many of the agents also solve the task themselves from the base (their attempts are reviewed alongside)."""
    task: str | None = None
    """A task folder (relative to the repository root) whose instruction and tests stand for the pull request's task."""
    task_from_body: bool = False
    """Let a `crossreview-task: DIR` line in the pull request's body pick the task folder (when ``task`` is unset).
    Off by default: the task's tests then replace the verifier, so a pull request could pick an easy one."""
    label: str = Field(default="crossreview:needs-human", min_length=1, max_length=50)
    """The label put on a pull request that needs a human, and taken off when the agents agree."""
    comment: bool = True
    """Keep one comment on the pull request with the decision (and the packet, when split)."""


class SuiteConfig(BaseModel):
    """Defaults for a suite run; command-line flags win over these."""

    model_config = ConfigDict(extra="forbid")

    agents: list[str] = Field(default_factory=list)
    reviewers: list[str] = Field(default_factory=list)
    policy: str | None = None
    jobs: int | None = Field(default=None, ge=1)
    ledger: str | None = None
    calibration: str | None = None
    """Policy file of the calibrated and cascade policies (relative to the suite folder)."""
    # Models (see crossreview/llm/settings.py and docs/models.md).
    models: dict[str, ModelSettings] = Field(default_factory=dict)
    prices: dict[str, Price] = Field(default_factory=dict)
    temperature: float | None = Field(default=None, ge=0, le=2)
    review_rules: list[str] = Field(default_factory=list)
    on_injection: Literal["reject", "concern"] = "reject"
    # Budgets: per suite run, and per task run.
    max_cost: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    max_tokens: int | None = Field(default=None, gt=0)
    max_task_cost: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    max_task_tokens: int | None = Field(default=None, gt=0)
    # The sandbox (see crossreview/sandbox.py and docs/security.md).
    sandbox: Literal["auto", "required", "off"] | None = None
    sandbox_env: list[str] = Field(default_factory=list)
    """Variable names passed to every agent, verifier and reviewer command (never secrets)."""
    sandbox_readable: list[str] = Field(default_factory=list)
    sandbox_writable: list[str] = Field(default_factory=list)
    network: dict[str, list[str]] = Field(default_factory=dict)
    """Agent name -> the key variables it may see; those agents (and their reviewers) get network."""
    gate: GateConfig = Field(default_factory=GateConfig)


@dataclass
class LoadedConfig:
    """A suite config and the folder it came from ({suite} in command templates)."""

    config: SuiteConfig
    source: Path | None
    suite_dir: Path


class ConfigError(Exception):
    """A crossreview.toml or [tool.crossreview] that cannot be used."""


def load_suite_config(paths: list[Path]) -> LoadedConfig:
    """Find the suite config for ``paths``: crossreview.toml, else pyproject's [tool.crossreview]."""
    start = paths[0].resolve() if paths else Path.cwd()
    if start.is_file():
        start = start.parent
    if (start / TASK_FILE).is_file():
        start = start.parent  # a single task: its suite is the folder around it
    for d in [start, *start.parents]:
        found = load_config_at(d)
        if found.source is not None:
            return found
        if (d / ".git").exists():
            break  # stop at the repository root
    return LoadedConfig(SuiteConfig(), None, start)


def load_config_at(d: Path) -> LoadedConfig:
    """The config in folder ``d`` itself (crossreview.toml, else pyproject's [tool.crossreview]); never looks up."""
    f = d / SUITE_FILE
    if f.is_file():
        return LoadedConfig(_parse_config(f, None), f, d)
    pp = d / "pyproject.toml"
    if pp.is_file():
        try:
            tool = _read_toml(pp).get("tool")
            section = tool.get("crossreview") if isinstance(tool, dict) else None
        except (tomllib.TOMLDecodeError, OSError) as exc:
            section = None
            # Someone else's broken pyproject is not ours to judge; one that holds our settings
            # must not be skipped silently (the run would go on with the defaults instead).
            if _mentions_crossreview(pp):
                raise ConfigError(f"{pp}: not valid TOML, so its [tool.crossreview] settings cannot be read: {exc}") from None
        if section is not None:
            return LoadedConfig(_parse_config(pp, section), pp, d)
    return LoadedConfig(SuiteConfig(), None, d)


def _mentions_crossreview(path: Path) -> bool:
    try:
        return re.search(rb"^\s*\[+\s*tool\s*\.\s*[\"']?crossreview", path.read_bytes(), re.M) is not None
    except OSError:
        return False


def _parse_config(path: Path, section: dict | None) -> SuiteConfig:
    where = f"{path} [tool.crossreview]" if section is not None else str(path)
    if section is None:
        try:
            section = _read_toml(path)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{where}: not valid TOML: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"{where}: cannot be read: {exc}") from None
    if not isinstance(section, dict):
        raise ConfigError(f"{where}: expected a table of settings, got {type(section).__name__}")
    try:
        return SuiteConfig.model_validate(section, strict=True)  # as task.toml: "10" is no number
    except ValidationError as exc:
        lines = []
        for e in exc.errors():
            key = ".".join(str(p) for p in e["loc"])
            if e["type"] == "extra_forbidden":
                section = (SuiteConfig if len(e["loc"]) == 1 else GateConfig if e["loc"][0] == "gate"
                           else Price if e["loc"][0] == "prices" else ModelSettings)
                lines.append(f"{where}: unknown key {key!r}; expected one of: {', '.join(section.model_fields)}")
            else:
                shown = key if key.isprintable() else repr(key)  # a key with a newline in it stays on its line
                said = _type_mistake(e) or f"{e['msg']} (got {e.get('input')!r})"
                lines.append(f"{where}: {shown}: {said}")
        raise ConfigError("\n".join(lines)) from None
