"""Git worktrees for candidates: create, diff, reset, keep, remove, collect garbage.

A task whose repository is a plain folder (``repo/``) is snapshotted into a
bare repository under the state directory (``.crossreview/repos/<task>.git``)
using the folder itself as the work tree, so nothing is copied; a task that
points at an existing git repository uses it directly. Every candidate gets a
worktree on its own branch from the same base commit.

Diffs are taken with a temporary index so a candidate's own index is never
touched and new and deleted files are included.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import git

from .models import Task

TESTS_DIRNAME = ".crossreview-tests"
HOLDOUT_DIRNAME = ".crossreview-holdout"
WORK_BRANCH_PREFIX = "crossreview/work"
_ENV = {
    "GIT_AUTHOR_NAME": "crossreview",
    "GIT_AUTHOR_EMAIL": "crossreview@localhost",
    "GIT_COMMITTER_NAME": "crossreview",
    "GIT_COMMITTER_EMAIL": "crossreview@localhost",
    "GIT_TERMINAL_PROMPT": "0",
}
_thread_locks: dict[str, threading.Lock] = {}
_thread_locks_guard = threading.Lock()


class WorktreeError(Exception):
    """A git operation on a candidate's worktree failed."""


@dataclass
class DiffInfo:
    """A candidate's change against the base commit."""

    text: str
    files: list[str]
    added: int
    removed: int


@contextmanager
def repo_lock(state_dir: Path, repo_dir: Path):
    """Serialize worktree and ref changes on one repository, across threads and processes.

    git itself takes lock files for refs and worktree metadata and fails
    (rather than waits) when two writers meet; this makes them wait instead.
    """
    key = hashlib.sha1(str(repo_dir.resolve()).encode()).hexdigest()[:16]
    with _thread_locks_guard:
        tlock = _thread_locks.setdefault(key, threading.Lock())
    lock_dir = state_dir / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with tlock, open(lock_dir / f"{key}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@dataclass
class _GitCmd:
    """A git command bound to a repository (GIT_DIR) or a working directory."""

    git: git.Git
    env: dict[str, str]


def _git(git_dir: Path | None = None, work_tree: Path | None = None, cwd: Path | None = None) -> _GitCmd:
    env = {}
    if git_dir is not None:
        env["GIT_DIR"] = str(git_dir)
    if work_tree is not None:
        env["GIT_WORK_TREE"] = str(work_tree)
    return _GitCmd(git.Git(str(cwd or work_tree or git_dir or ".")), env)


def _run(g: _GitCmd, *args: str, env: dict[str, str] | None = None, **kw) -> str:
    try:
        return g.git.execute(["git", *args], env={**_ENV, **g.env, **(env or {})}, **kw)
    except git.GitCommandError as exc:
        raise WorktreeError(f"git {' '.join(args)} failed: {str(exc.stderr).strip() or exc}") from None


@dataclass
class BaseRepo:
    """Where a task's worktrees come from."""

    git_dir: Path
    commit: str

    def git(self) -> _GitCmd:
        """A git command bound to this repository."""
        return _git(git_dir=self.git_dir)


def prepare_base(task: Task, state_dir: Path) -> BaseRepo:
    """The repository and base commit for ``task``'s worktrees (snapshotting repo/ if needed)."""
    if not task.repo_is_folder:
        repo = git.Repo(task.repo_path)
        commit = repo.commit(task.repo_ref).hexsha
        return BaseRepo(Path(repo.git_dir).resolve(), commit)
    git_dir = (state_dir / "repos" / f"{task.id}.git").resolve()
    with repo_lock(state_dir, git_dir):
        if not (git_dir / "HEAD").exists():
            git_dir.parent.mkdir(parents=True, exist_ok=True)
            git.Repo.init(git_dir, bare=True)
            (git_dir / "info").mkdir(exist_ok=True)
            (git_dir / "info" / "exclude").write_text("__pycache__/\n*.pyc\n.pytest_cache/\n")
        g = _git(git_dir=git_dir, work_tree=task.repo_path)
        index = git_dir / "snapshot-index"
        env = {"GIT_INDEX_FILE": str(index)}
        _run(g, "add", "-A", "--", ".", env=env)
        tree = _run(g, "write-tree", env=env)
        head = _run(_git(git_dir=git_dir), "rev-parse", "--verify", "--quiet", "HEAD", with_exceptions=False)
        if head:
            head_tree = _run(_git(git_dir=git_dir), "rev-parse", f"{head}^{{tree}}")
            if head_tree == tree:
                return BaseRepo(git_dir, head)
            commit = _run(_git(git_dir=git_dir), "commit-tree", tree, "-p", head, "-m", f"snapshot of {task.id}/repo")
        else:
            commit = _run(_git(git_dir=git_dir), "commit-tree", tree, "-m", f"snapshot of {task.id}/repo")
        _run(_git(git_dir=git_dir), "update-ref", "HEAD", commit)
        return BaseRepo(git_dir, commit)


def work_branch(run: str, task_id: str, agent: str) -> str:
    """The branch a candidate's worktree is on while the run lasts."""
    return f"{WORK_BRANCH_PREFIX}/{run}/{task_id}/{agent}"


def kept_branch(run: str, task_id: str) -> str:
    """The branch an accepted candidate is kept on after the run."""
    return f"crossreview/{run}/{task_id}"


def create_worktree(state_dir: Path, base: BaseRepo, path: Path, branch: str) -> Path:
    """A fresh worktree at ``path`` on ``branch`` at the base commit (replacing any old one)."""
    with repo_lock(state_dir, base.git_dir):
        if path.exists() or (path.parent / f".{path.name}.owner").exists():
            _remove_locked(base, path, None)  # a leftover of a crashed attempt
        path.parent.mkdir(parents=True, exist_ok=True)
        # -B resets the branch if a killed run left it behind; --force takes
        # over a worktree record whose folder is gone.
        _run(base.git(), "worktree", "add", "--force", "--quiet", "-B", branch, str(path), base.commit)
        _write_owner(path)
    return path


def _write_owner(path: Path) -> None:
    # The owner file lets `gc` tell a live run's worktree from a killed one's.
    owner = path.parent / f".{path.name}.owner"
    owner.write_text(json.dumps({"pid": os.getpid()}))


def remove_worktree(state_dir: Path, base: BaseRepo, path: Path, branch: str | None) -> None:
    """Remove the worktree at ``path`` and its branch; quiet if either is already gone."""
    remove_worktrees(state_dir, base, [path], [branch] if branch else [])


def remove_worktrees(state_dir: Path, base: BaseRepo, paths: list[Path], branches: list[str]) -> None:
    """Remove several worktrees and branches with one prune and one branch deletion."""
    for path in paths:
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)
        (path.parent / f".{path.name}.owner").unlink(missing_ok=True)
    with repo_lock(state_dir, base.git_dir):
        g = base.git()
        _run(g, "worktree", "prune", with_exceptions=False)
        if branches:
            _run(g, "branch", "-D", "--quiet", *branches, with_exceptions=False)


def _remove_locked(base: BaseRepo, path: Path, branch: str | None) -> None:
    g = base.git()
    if path.exists():
        _run(g, "worktree", "remove", "--force", "--force", str(path), with_exceptions=False)
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)
    owner = path.parent / f".{path.name}.owner"
    owner.unlink(missing_ok=True)
    _run(g, "worktree", "prune", with_exceptions=False)
    if branch:
        _run(g, "branch", "-D", branch, with_exceptions=False)


def take_diff(path: Path, base_commit: str) -> DiffInfo:
    """The candidate's change at ``path`` against ``base_commit``, new and deleted files included.

    Uses a throwaway index so the worktree's own index stays as the agent left
    it, and leaves out the folders crossreview copies tests into.
    """
    g = _git(cwd=path)
    with tempfile.TemporaryDirectory(prefix="crossreview-index-") as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        _run(g, "read-tree", base_commit, env=env)
        _run(
            g,
            "add",
            "-A",
            "--",
            ".",
            f":(exclude){TESTS_DIRNAME}",
            f":(exclude){HOLDOUT_DIRNAME}",
            env=env,
        )
        text = _diff_text(g, base_commit, env)
        # -z: names come out as they are, not C-quoted ("caf\303\251.py").
        numstat = _run(g, "diff", "--cached", "--numstat", "-z", "--no-renames", base_commit, env=env)
    files, added, removed = [], 0, 0
    for record in numstat.split("\0"):
        parts = record.split("\t", 2)
        if len(parts) != 3:
            continue
        a, r, name = parts
        files.append(name.strip("\n"))
        added += int(a) if a.isdigit() else 0
        removed += int(r) if r.isdigit() else 0
    return DiffInfo(text=text, files=files, added=added, removed=removed)


def _diff_text(g: _GitCmd, base_commit: str, env: dict[str, str]) -> str:
    # GitPython strips trailing newlines by default; a patch needs its last one.
    return _run(
        g, "diff", "--cached", "--binary", "--no-color", "--no-ext-diff", "--no-renames", base_commit,
        env=env, strip_newline_in_stdout=False,
    )


def reset_to(path: Path, base_commit: str, diff: str) -> None:
    """Make the worktree at ``path`` exactly base + ``diff``, whatever is in it now.

    Tests then run on exactly the change the reviewers read, not on anything
    an agent left behind after its diff was taken.
    """
    g = _git(cwd=path)
    _run(g, "reset", "--hard", "--quiet", base_commit)
    _run(g, "clean", "-ffdxq")
    if diff.strip():
        apply_diff(path, diff)


def apply_diff(path: Path, diff: str) -> None:
    """Apply a patch made by ``take_diff`` to the worktree at ``path``."""
    with tempfile.NamedTemporaryFile("w", suffix=".patch", delete=False) as fh:
        fh.write(diff)
        patch = fh.name
    try:
        _run(_git(cwd=path), "apply", "--binary", "--whitespace=nowarn", patch)
    finally:
        os.unlink(patch)


def keep_branch(state_dir: Path, base: BaseRepo, branch: str, diff: str, message: str) -> str:
    """Commit base + ``diff`` onto ``branch`` without needing a worktree; returns the commit."""
    g = base.git()
    with tempfile.TemporaryDirectory(prefix="crossreview-keep-") as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        _run(g, "read-tree", base.commit, env=env)
        if diff.strip():
            patch = Path(tmp) / "candidate.patch"
            patch.write_text(diff)
            _run(g, "apply", "--cached", "--binary", str(patch), env=env)
        tree = _run(g, "write-tree", env=env)
        commit = _run(g, "commit-tree", tree, "-p", base.commit, "-m", message)
    with repo_lock(state_dir, base.git_dir):
        _run(g, "update-ref", f"refs/heads/{branch}", commit)
    return commit


def copy_tests(src: Path, worktree: Path, dirname: str = TESTS_DIRNAME) -> Path:
    """Copy a task's tests (from the task folder, never the worktree) into ``worktree``."""
    dest = worktree / dirname
    if dest.is_symlink() or dest.is_file():
        dest.unlink()
    elif dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


def worktrees_root(state_dir: Path) -> Path:
    """Where candidate worktrees live; fenced so pytest never climbs out of it."""
    root = state_dir / "worktrees"
    root.mkdir(parents=True, exist_ok=True)
    fence = root / "pytest.ini"
    if not fence.exists():
        # pytest looks upwards for its config; this stops it here, so the
        # project crossreview runs in cannot change how candidates are tested.
        fence.write_text("[pytest]\n")
    return root


def ensure_state_dir(state_dir: Path) -> Path:
    """Create the state directory, ignored by git so it never shows in the user's status."""
    state_dir.mkdir(parents=True, exist_ok=True)
    ignore = state_dir / ".gitignore"
    if not ignore.exists():
        ignore.write_text("*\n")
    return state_dir


@dataclass
class Orphan:
    """A worktree left behind by a process that no longer runs."""

    path: Path
    pid: int | None


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def find_orphans(state_dir: Path) -> list[Orphan]:
    """Worktrees under ``state_dir`` whose owning process is gone."""
    root = state_dir / "worktrees"
    if not root.is_dir():
        return []
    orphans = []
    for owner in root.glob("*/*/.*.owner"):
        try:
            pid = json.loads(owner.read_text()).get("pid")
        except (OSError, ValueError):
            pid = None
        if not _pid_alive(pid):
            orphans.append(Orphan(owner.parent / owner.name[1:-len(".owner")], pid))
    return orphans


def repos_with_work_branches(state_dir: Path, extra: list[Path]) -> list[Path]:
    """Git dirs that may hold crossreview work branches: snapshots and known task repos."""
    dirs = sorted((state_dir / "repos").glob("*.git")) if (state_dir / "repos").is_dir() else []
    return dirs + [d for d in extra if d.exists()]


def gc(state_dir: Path, git_dirs: list[Path], keep_runs: set[str] = frozenset()) -> tuple[int, int]:
    """Remove orphaned worktrees and work branches of runs not in ``keep_runs``.

    Returns (worktrees removed, branches removed). Work branches of live
    processes' runs are never touched.
    """
    removed_trees = 0
    live_runs = set(keep_runs)
    root = state_dir / "worktrees"
    for owner in root.glob("*/*/.*.owner") if root.is_dir() else []:
        try:
            pid = json.loads(owner.read_text()).get("pid")
        except (OSError, ValueError):
            pid = None
        if _pid_alive(pid):
            live_runs.add(owner.parent.parent.name)
    for orphan in find_orphans(state_dir):
        run = orphan.path.parent.parent.name
        if run in live_runs:
            continue
        shutil.rmtree(orphan.path, ignore_errors=True)
        (orphan.path.parent / f".{orphan.path.name}.owner").unlink(missing_ok=True)
        removed_trees += 1
    removed_branches = 0
    for git_dir in git_dirs:
        g = _git(git_dir=git_dir)
        with repo_lock(state_dir, git_dir):
            _run(g, "worktree", "prune", with_exceptions=False)
            refs = _run(g, "for-each-ref", "--format=%(refname:short)", f"refs/heads/{WORK_BRANCH_PREFIX}/")
            for ref in refs.splitlines():
                run = ref[len(WORK_BRANCH_PREFIX) + 1 :].split("/", 1)[0]
                if run in live_runs:
                    continue
                _run(g, "branch", "-D", ref, with_exceptions=False)
                removed_branches += 1
    if root.is_dir():
        for run_dir in root.iterdir():
            if run_dir.is_dir() and run_dir.name not in live_runs:
                shutil.rmtree(run_dir, ignore_errors=True)
    return removed_trees, removed_branches
