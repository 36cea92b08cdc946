"""Git worktrees for candidates: create, diff, reset, keep, remove, collect garbage.

A task whose repository is a plain folder (``repo/``) is snapshotted into a
bare repository under the state directory (``.crossreview/repos/<task>.git``)
using the folder itself as the work tree, so nothing is copied; a task that
points at an existing git repository uses it directly. Every candidate gets a
worktree at the same base commit, on a detached HEAD: a branch per candidate
would cost git a process to make and one to delete, and would show in the
user's own repository for nothing (only the accepted candidate is kept, on a
branch of its own).

Diffs are taken with a temporary index so a candidate's own index is never
touched and new and deleted files are included.
"""

from __future__ import annotations

import fcntl
import functools
import glob
import hashlib
import io
import json
import os
import shutil
import tempfile
import threading
import time
import zlib
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


@functools.lru_cache(maxsize=4)
def _git_executable(path_var: str | None) -> str:
    """git's absolute path on ``path_var`` (else plain "git", for GitPython to report as missing).

    Resolved once per PATH: started as plain "git", every one of a task run's
    ~16 git processes walks PATH with failing execs first (a dozen entries on
    pyenv or CI images).
    """
    return shutil.which("git", path=path_var) or "git"


_NO_REPO_CODE = ("-c", "core.fsmonitor=false", "-c", "core.hooksPath=/dev/null")
"""A repository's own config may name programs git runs on its own (an fsmonitor, hooks);
crossreview's git commands run neither, whoever wrote that config."""


def _run(g: _GitCmd, *args: str, env: dict[str, str] | None = None, **kw) -> str:
    try:
        return g.git.execute([_git_executable(os.environ.get("PATH")), *_NO_REPO_CODE, *args],
                             env={**_ENV, **g.env, **(env or {})}, **kw)
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
    """The repository and base commit for ``task``'s worktrees (snapshotting repo/ if needed).

    A folder whose files have not changed since its last snapshot (same
    names, sizes, modes, mtimes, ctimes and inodes; see ``folder_fingerprint``)
    reuses that snapshot without running git at all.
    """
    if not task.repo_is_folder:
        repo = git.Repo(task.repo_path)
        commit = repo.commit(task.repo_ref).hexsha
        return BaseRepo(Path(repo.git_dir).resolve(), commit)
    git_dir = (state_dir / "repos" / f"{task.id}.git").resolve()
    with repo_lock(state_dir, git_dir):
        fresh = not (git_dir / "HEAD").exists()
        if fresh:
            git_dir.parent.mkdir(parents=True, exist_ok=True)
            _init_snapshot_repo(git_dir)
            (git_dir / "info").mkdir(exist_ok=True)
            (git_dir / "info" / "exclude").write_text(_SNAPSHOT_EXCLUDE)
        # The fingerprint is taken before git reads the folder: a file changed
        # while (or after) git reads it changes the fingerprint, so a stale
        # snapshot is never reused.
        fingerprint = folder_fingerprint(task.repo_path)
        cache = {} if fresh else _read_snapshot_cache(git_dir)
        head = None if fresh else _head_commit(git_dir)
        if (
            fingerprint is not None
            and head is not None
            and cache.get("fingerprint") == fingerprint
            and cache.get("repo") == str(task.repo_path.resolve())
            and cache.get("commit") == head
            and cache.get("snapshot") == _SNAPSHOT_KIND
        ):
            return BaseRepo(git_dir, head)
        g = _git(git_dir=git_dir, work_tree=task.repo_path)
        index = git_dir / "snapshot-index"
        env = {"GIT_INDEX_FILE": str(index)}
        # --force: every file of repo/ is a starting file, whatever the folder's own .gitignore says
        # (a task's data/ or *.csv must not silently go missing); only compiled leftovers stay out.
        _run(g, "add", "-A", "--force", "--", ".", *_SNAPSHOT_EXCLUDE_PATHSPECS, env=env)
        if fresh:
            commit = _first_snapshot_commit(g, git_dir, env, task.id)
            _write_snapshot_cache(git_dir, task.repo_path, fingerprint, commit, _loose_commit_tree(git_dir, commit))
            return BaseRepo(git_dir, commit)
        tree = _run(g, "write-tree", env=env)
        bare = _git(git_dir=git_dir)
        if not fresh:
            if head is None:  # a ref git packed, or an older state folder: ask git
                head = _run(bare, "rev-parse", "--verify", "--quiet", "HEAD", with_exceptions=False) or None
            if head is not None:
                head_tree = cache.get("tree") if cache.get("commit") == head else None
                head_tree = head_tree or _run(bare, "rev-parse", f"{head}^{{tree}}")
                if head_tree == tree:
                    _write_snapshot_cache(git_dir, task.repo_path, fingerprint, head, tree)
                    return BaseRepo(git_dir, head)
        parents = ["-p", head] if head else []
        commit = _run(bare, "commit-tree", tree, *parents, "-m", f"snapshot of {task.id}/repo")
        _run(bare, "update-ref", "HEAD", commit)
        _write_snapshot_cache(git_dir, task.repo_path, fingerprint, commit, tree)
        return BaseRepo(git_dir, commit)


_EMPTY_REPO = ".init-template"
"""A bare repository ``git init`` made once per state folder; each task's snapshot repository starts as a copy."""


def _init_snapshot_repo(git_dir: Path) -> None:
    """Make the empty bare repository ``git_dir``: a copy of one ``git init`` made earlier in the same folder.

    Every task of a first run needs one, and a copy of a dozen small files
    costs a fraction of a git process. The copy is exactly what ``git init``
    writes here (the user's ``init.*`` settings included), since git made it.
    """
    template = git_dir.parent / _EMPTY_REPO
    if not (template / "HEAD").is_file():
        tmp = git_dir.parent / f"{_EMPTY_REPO}.{os.getpid()}.{threading.get_ident()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        # No templates: sample hooks are never run and only cost time to copy.
        _run(_git(cwd=git_dir.parent), "init", "--bare", "--quiet", "--template=", str(tmp))
        try:
            os.rename(tmp, template)
        except OSError:  # another task run made it first
            shutil.rmtree(tmp, ignore_errors=True)
    # Copied aside and renamed into place: a crash mid-copy must not leave a
    # folder with a HEAD (which says "a repository is here") but no config.
    staging = git_dir.with_name(f"{git_dir.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(template, staging)
    if git_dir.exists():  # a partial repository of an older version's crash (no HEAD: see the caller)
        shutil.rmtree(git_dir)
    os.rename(staging, git_dir)


_QUIET_COMMIT = (
    # The user's global git config must not sign, hook or spawn maintenance in
    # crossreview's own snapshot repositories.
    "-c", "maintenance.auto=false", "-c", "gc.auto=0", "-c", "core.hooksPath=/dev/null",
    "-c", "commit.gpgSign=false",
)


def _first_snapshot_commit(g: "_GitCmd", git_dir: Path, env: dict[str, str], task_id: str) -> str:
    """Commit the staged folder as a fresh snapshot repository's first commit; return it.

    One ``git commit`` instead of write-tree, commit-tree and update-ref: a
    task run is short, and every git process costs it milliseconds.
    """
    _run(g, *_QUIET_COMMIT, "commit", "--quiet", "--no-verify", "--allow-empty", "-m", f"snapshot of {task_id}/repo",
         env=env)
    head = _head_commit(git_dir)
    return head or _run(_git(git_dir=git_dir), "rev-parse", "--verify", "HEAD")


def _loose_commit_tree(git_dir: Path, commit: str) -> str | None:
    """The tree of a commit git just wrote as a loose object, read from the object file (None if not loose)."""
    try:
        raw = zlib.decompress((git_dir / "objects" / commit[:2] / commit[2:]).read_bytes())
    except (OSError, zlib.error):
        return None
    header, _, body = raw.partition(b"\0")
    if not header.startswith(b"commit ") or not body.startswith(b"tree "):
        return None
    tree = body[5:45].decode("ascii", "replace")
    return tree if all(c in "0123456789abcdef" for c in tree) else None


_SNAPSHOT_EXCLUDE = "__pycache__/\n*.pyc\n.pytest_cache/\n"
_SNAPSHOT_EXCLUDE_PATHSPECS = (
    ":(exclude,glob)**/__pycache__/**", ":(exclude,glob)**/*.pyc", ":(exclude,glob)**/.pytest_cache/**",
)
"""What ``_SNAPSHOT_EXCLUDE`` leaves out, for ``git add --force`` (which ignores exclude files)."""
_SNAPSHOT_KIND = "force"
"""How snapshots are taken; a cached snapshot taken otherwise (before .gitignore'd files were included) is redone."""
_SNAPSHOT_CACHE = "crossreview-snapshot.json"
RACY_SECONDS = 2.0
"""A folder with a file changed less than this long before its fingerprint is taken is not cached.

File times are coarse (a clock tick on ext4, up to 2 s elsewhere): a file
rewritten within the same tick as the fingerprint could keep its times and
size. Git has the same problem and the same cure ("racy git")."""


def folder_fingerprint(root: Path) -> str | None:
    """A hash of every file's name, type, size, mode, mtime, ctime and inode under ``root``.

    Any write to a file changes its ctime, which no program can set back, so
    a changed, added, deleted, renamed or re-linked file changes the
    fingerprint. None when a file changed too recently to tell (see
    ``RACY_SECONDS``) or the folder cannot be read: the caller snapshots.
    """
    limit = time.time_ns() - int(RACY_SECONDS * 1e9)
    digest = hashlib.sha256()
    stack = [(root, "")]
    try:
        while stack:
            folder, rel = stack.pop()
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
            for entry in entries:
                name = entry.name
                if name in ("__pycache__", ".pytest_cache") or name.endswith(".pyc"):
                    continue  # what the snapshot leaves out (info/exclude)
                st = entry.stat(follow_symlinks=False)
                if st.st_mtime_ns > limit or st.st_ctime_ns > limit:
                    return None
                path = f"{rel}{name}"
                if entry.is_dir(follow_symlinks=False):
                    digest.update(f"d\0{path}\0".encode("utf-8", "surrogateescape"))
                    stack.append((Path(entry.path), path + "/"))
                else:
                    digest.update(
                        f"f\0{path}\0{st.st_mode}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\0{st.st_ino}\0{st.st_dev}\0"
                        .encode("utf-8", "surrogateescape")
                    )
    except OSError:
        return None
    return digest.hexdigest()


def _head_commit(git_dir: Path) -> str | None:
    """HEAD's commit read from the ref file (None when git packed it or HEAD is unborn)."""
    try:
        head = (git_dir / "HEAD").read_text().strip()
        if head.startswith("ref: "):
            head = (git_dir / head[5:]).read_text().strip()
    except OSError:
        return None
    return head if len(head) == 40 and all(c in "0123456789abcdef" for c in head) else None


def _read_snapshot_cache(git_dir: Path) -> dict:
    try:
        data = json.loads((git_dir / _SNAPSHOT_CACHE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_snapshot_cache(git_dir: Path, repo: Path, fingerprint: str | None, commit: str, tree: str | None) -> None:
    path = git_dir / _SNAPSHOT_CACHE
    if fingerprint is None:
        path.unlink(missing_ok=True)
        return
    tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps({"repo": str(repo.resolve()), "fingerprint": fingerprint, "commit": commit, "tree": tree,
                               "snapshot": _SNAPSHOT_KIND}))
    os.replace(tmp, path)


def work_branch(run: str, task_id: str, agent: str) -> str:
    """The branch older versions put a candidate's worktree on (worktrees are detached now); ``gc`` still removes them."""
    return f"{WORK_BRANCH_PREFIX}/{run}/{task_id}/{agent}"


def kept_branch(run: str, task_id: str) -> str:
    """The branch an accepted candidate is kept on after the run."""
    return f"crossreview/{run}/{task_id}"


def create_worktree(state_dir: Path, base: BaseRepo, path: Path) -> Path:
    """A fresh worktree at ``path`` at the base commit, HEAD detached (replacing any old one)."""
    with repo_lock(state_dir, base.git_dir):
        if path.exists() or (path.parent / f".{path.name}.owner").exists():
            _remove_locked(base, path, None)  # a leftover of a crashed attempt
        for _ in range(3):  # a task run finishing beside us may remove the run's empty folder meanwhile
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                break
            except FileNotFoundError:
                continue
        if not _add_worktree_record(state_dir, base, path):
            # Under the lock although no shared ref changes: git 2.39's `worktree add`
            # reads every other worktree's record and dies on one half-written by a
            # concurrent add ("failed to read .../commondir"). --force takes over a
            # worktree record whose folder is gone.
            _run(base.git(), "worktree", "add", "--force", "--quiet", "--detach", "--no-checkout", str(path),
                 base.commit)
        _write_owner(path)
    # The checkout (what `worktree add` would run as its own child process)
    # touches only this worktree, so the agents of a task check out at once
    # and the lock is held for the record alone.
    _run(_git(cwd=path), "reset", "--hard", "--quiet", "--no-recurse-submodules")
    _save_seed_index(path)
    return path


def is_snapshot_repo(state_dir: Path, git_dir: Path) -> bool:
    """True for a bare repository crossreview made itself (``repos/<task>.git``) in the plain layout git 2.x writes.

    Only there does crossreview write worktree records, commits and refs
    without a git process (see ``_add_worktree_record``, ``keep_branch``): it
    knows such a repository's whole config. A user's own repository, or one
    using newer storage (reftable, per-worktree config), always goes through git.
    """
    try:
        if Path(git_dir).resolve().parent != (Path(state_dir) / "repos").resolve():
            return False
        config = (Path(git_dir) / "config").read_text().lower()
    except OSError:
        return False
    return "refstorage" not in config and "worktreeconfig" not in config and "objectformat" not in config


def _add_worktree_record(state_dir: Path, base: BaseRepo, path: Path) -> bool:
    """Write what ``git worktree add --detach --no-checkout PATH COMMIT`` writes, without running git.

    Two git processes fewer per agent (``worktree add`` starts ``update-ref``
    as a child), and both were serialized under the repository lock, so a
    task run of N agents waited for N of them in a row. The record is the
    documented layout (gitrepository-layout(5), "worktrees/<id>"): ``gitdir``
    naming the worktree's ``.git`` file, ``commondir``, and a detached
    ``HEAD``; the reflog git would also start is left out (nobody reads it).
    Written in the order a crash can leave harmlessly: a record whose
    ``gitdir`` names no ``.git`` file yet is what ``git worktree prune``
    removes. False (nothing written) where git must do it: not a snapshot
    repository crossreview made, or the name is taken.
    """
    if not is_snapshot_repo(state_dir, base.git_dir):
        return False
    records = base.git_dir / "worktrees"
    records.mkdir(exist_ok=True)
    path.mkdir()
    real = Path(os.path.realpath(path))
    for n in range(100):  # git's own naming: the folder's name, then name1, name2, ...
        record = records / f"{path.name}{n or ''}"
        try:
            record.mkdir()
            break
        except FileExistsError:
            continue
    else:
        path.rmdir()
        return False
    (record / "commondir").write_text("../..\n")
    (record / "HEAD").write_text(f"{base.commit}\n")
    (record / "gitdir").write_text(f"{real / '.git'}\n")
    (path / ".git").write_text(f"gitdir: {os.path.realpath(record)}\n")
    return True


def _seed_index(path: Path) -> Path:
    """Where a private copy of a fresh worktree's index is kept (beside it, outside any sandbox's reach)."""
    return path.parent / f".{path.name}.index"


def _save_seed_index(path: Path) -> None:
    """Keep a copy of the index ``worktree add`` just wrote: the base commit, with every file's stat data.

    ``take_diff`` starts from it, so git rehashes only the files the agent
    touched instead of every file of the base. It lives outside the worktree
    and outside the sandbox's writable (and visible) folders, so the agent
    cannot change it; the copy keeps the index's mtime, so git's check for
    racily-clean entries works as it does on the original.
    """
    seed = _seed_index(path)
    seed.unlink(missing_ok=True)
    try:
        text = (path / ".git").read_text()
        gitdir = Path(text.split(":", 1)[1].strip()) if text.startswith("gitdir:") else None
        if gitdir is not None:
            shutil.copy2(gitdir / "index", seed)
    except (OSError, IndexError):
        seed.unlink(missing_ok=True)  # take_diff falls back to reading the base tree


def _write_owner(path: Path) -> None:
    # The owner file lets `gc` tell a live run's worktree from a killed one's.
    owner = path.parent / f".{path.name}.owner"
    owner.write_text(json.dumps({"pid": os.getpid()}))


def remove_worktree(state_dir: Path, base: BaseRepo, path: Path, branch: str | None = None) -> None:
    """Remove the worktree at ``path`` (and ``branch``, if given); quiet if either is already gone."""
    remove_worktrees(state_dir, base, [path], [branch] if branch else [])


def remove_worktrees(state_dir: Path, base: BaseRepo, paths: list[Path], branches: list[str] = ()) -> None:
    """Remove several worktrees, their records in the repository, and ``branches`` (one git call at most)."""
    for path in paths:
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)
        _forget_sidecars(path)
    with repo_lock(state_dir, base.git_dir):
        if not _drop_worktree_records(base.git_dir, paths):
            _run(base.git(), "worktree", "prune", with_exceptions=False)
        if branches:
            _run(base.git(), "branch", "-D", "--quiet", *branches, with_exceptions=False)


def _forget_sidecars(path: Path) -> None:
    """Delete what crossreview keeps beside a worktree: its owner file and private indexes."""
    (path.parent / f".{path.name}.owner").unlink(missing_ok=True)
    _seed_index(path).unlink(missing_ok=True)
    for staged in path.parent.glob(f".{path.name}.staged-*"):
        staged.unlink(missing_ok=True)


def _drop_worktree_records(git_dir: Path, paths: list[Path]) -> bool:
    """Delete the records (``<git dir>/worktrees/<id>``) of removed worktrees at ``paths``.

    What ``git worktree prune`` does for a vanished worktree, without a git
    process: only a record whose ``gitdir`` file names ``<path>/.git`` for one
    of ``paths`` is touched (a worktree's own ``.git`` file is never trusted to
    say where its record is: the agent could have rewritten it). False when
    the records cannot be read: the caller runs ``git worktree prune``.
    """
    wanted = {os.path.realpath(p / ".git") for p in paths if not p.exists()}
    if not wanted:
        return True
    records = Path(git_dir) / "worktrees"
    try:
        entries = list(os.scandir(records)) if records.is_dir() else []
        for entry in entries:
            gitdir = Path(entry.path) / "gitdir"
            try:
                target = gitdir.read_text().strip()
            except FileNotFoundError:
                continue
            if os.path.realpath(target) in wanted and not os.path.islink(entry.path):
                shutil.rmtree(entry.path)
    except OSError:
        return False
    return True


def _remove_locked(base: BaseRepo, path: Path, branch: str | None) -> None:
    g = base.git()
    if path.exists():
        _run(g, "worktree", "remove", "--force", "--force", str(path), with_exceptions=False)
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)
    _forget_sidecars(path)
    _run(g, "worktree", "prune", with_exceptions=False)
    if branch:
        _run(g, "branch", "-D", branch, with_exceptions=False)


def take_diff(path: Path, base_commit: str) -> DiffInfo:
    """The candidate's change at ``path`` against ``base_commit``, new and deleted files included.

    Uses a throwaway index so the worktree's own index stays as the agent left
    it, and leaves out the folders crossreview copies tests into. The
    throwaway index starts as the copy ``create_worktree`` kept of the fresh
    worktree's index (else as the base tree), and one ``git diff`` gives both
    the patch and the per-file counts. The index is kept beside the worktree,
    named for the patch, so ``keep_branch`` can commit exactly this patch
    without staging it again.
    """
    g = _git(cwd=path)
    seed = _seed_index(path)
    with tempfile.TemporaryDirectory(prefix="crossreview-index-") as tmp:
        index = Path(tmp) / "index"
        env = {"GIT_INDEX_FILE": str(index)}
        try:
            shutil.copy2(seed, index)
            _stage_all(g, env)
        except (OSError, WorktreeError):
            # No seed (a worktree made otherwise), or git would not read it:
            # start from the base tree instead, as git knows it.
            index.unlink(missing_ok=True)
            _run(g, "read-tree", base_commit, env=env)
            _stage_all(g, env)
        # GitPython strips trailing newlines by default; a patch needs its last one.
        # -z: names in the counts come out as they are, not C-quoted ("caf\303\251.py").
        out = _run(
            g, "diff", "--cached", "--numstat", "-z", "--patch", "--binary", "--no-color", "--no-ext-diff",
            "--no-renames", base_commit, env=env, strip_newline_in_stdout=False,
        )
        info = _parse_numstat_and_patch(out)
        _keep_staged_index(path, index, info.text)
    return info


def _staged_index(path: Path, diff: str) -> Path:
    """Where ``take_diff`` keeps the index holding base + ``diff`` for the worktree at ``path``."""
    digest = hashlib.sha256(diff.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return path.parent / f".{path.name}.staged-{digest}"


def _keep_staged_index(path: Path, index: Path, diff: str) -> None:
    for old in path.parent.glob(f".{path.name}.staged-*"):
        old.unlink(missing_ok=True)
    try:
        os.replace(index, _staged_index(path, diff))
    except OSError:
        pass  # keep_branch stages the patch itself


def _stage_all(g: _GitCmd, env: dict[str, str]) -> None:
    _run(g, "add", "-A", "--", ".", f":(exclude){TESTS_DIRNAME}", f":(exclude){HOLDOUT_DIRNAME}", env=env)


def _parse_numstat_and_patch(out: str) -> DiffInfo:
    """Split ``git diff --numstat -z --patch`` output: NUL-ended count records, one more NUL, the patch."""
    files, added, removed = [], 0, 0
    pos = 0
    while pos < len(out) and out[pos] != "\0":
        end = out.find("\0", pos)
        if end < 0:
            raise WorktreeError(f"git diff --numstat -z: unterminated record {out[pos:pos + 200]!r}")
        parts = out[pos:end].split("\t", 2)
        pos = end + 1
        if len(parts) != 3:
            continue
        a, r, name = parts
        files.append(name.strip("\n"))
        added += int(a) if a.isdigit() else 0
        removed += int(r) if r.isdigit() else 0
    text = out[pos + 1:] if pos < len(out) else ""
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


def keep_branch(state_dir: Path, base: BaseRepo, branch: str, diff: str, message: str,
                worktree: Path | None = None) -> str:
    """Commit base + ``diff`` onto ``branch`` without needing a worktree; returns the commit.

    When ``take_diff`` left the index of exactly this diff beside ``worktree``,
    its tree is written as it is; otherwise the patch is staged on the base tree.
    """
    g = base.git()
    staged = _staged_index(worktree, diff) if worktree is not None else None
    tree = None
    if staged is not None and staged.is_file():
        tree = _run(g, "write-tree", env={"GIT_INDEX_FILE": str(staged)}, with_exceptions=False) or None
    if tree is None:
        with tempfile.TemporaryDirectory(prefix="crossreview-keep-") as tmp:
            env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
            _run(g, "read-tree", base.commit, env=env)
            if diff.strip():
                patch = Path(tmp) / "candidate.patch"
                patch.write_text(diff)
                _run(g, "apply", "--cached", "--binary", str(patch), env=env)
            tree = _run(g, "write-tree", env=env)
    own = is_snapshot_repo(state_dir, base.git_dir)
    commit = _write_commit(base.git_dir, tree, base.commit, message) if own else None
    commit = commit or _run(g, "commit-tree", tree, "-p", base.commit, "-m", message)
    with repo_lock(state_dir, base.git_dir):
        if not (own and _write_ref(base.git_dir, f"refs/heads/{branch}", commit)):
            _run(g, "update-ref", f"refs/heads/{branch}", commit)
    return commit


def _write_commit(git_dir: Path, tree: str, parent: str, message: str) -> str | None:
    """Store the commit ``git commit-tree TREE -p PARENT -m MESSAGE`` makes, as crossreview; its id (None on failure).

    In a snapshot repository crossreview made (plain loose objects, SHA-1)
    gitdb, GitPython's own object store, writes it without a git process.
    """
    from gitdb import IStream, LooseObjectDB

    who = f"{_ENV['GIT_COMMITTER_NAME']} <{_ENV['GIT_COMMITTER_EMAIL']}> {int(time.time())} +0000"
    body = f"tree {tree}\nparent {parent}\nauthor {who}\ncommitter {who}\n\n{message.rstrip(chr(10))}\n".encode()
    try:
        stored = LooseObjectDB(str(git_dir / "objects")).store(IStream(b"commit", len(body), io.BytesIO(body)))
    except (OSError, ValueError):
        return None
    return stored.hexsha.decode() if isinstance(stored.hexsha, bytes) else stored.hexsha


def _write_ref(git_dir: Path, ref: str, commit: str) -> bool:
    """Point ``ref`` at ``commit`` as ``git update-ref`` does for a loose ref: a lock file renamed into place.

    The caller holds the repository lock. False when git must do it (a name
    clashing with another ref's folder, a lock git itself holds).
    """
    path = git_dir / ref
    lock = path.with_name(path.name + ".lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError:
        return False
    try:
        os.write(fd, f"{commit}\n".encode())
        os.close(fd)
        os.rename(lock, path)
    except OSError:
        lock.unlink(missing_ok=True)
        return False
    return True


def copy_tests(src: Path, worktree: Path, dirname: str = TESTS_DIRNAME, within: Path | None = None) -> Path:
    """Copy a task's tests (from the task folder, never the worktree) into ``worktree``.

    Links in ``src`` are copied as links unless they lead inside ``within``
    (default: the task folder around ``src``): a task folder cannot have
    crossreview read a host file (a key, /etc) into the worktree.
    """
    dest = worktree / dirname
    if dest.is_symlink() or dest.is_file():
        dest.unlink()
    elif dest.exists():
        shutil.rmtree(dest)
    lay_over(src, dest, within if within is not None else src.parent)
    return dest


def _skipped(name: str) -> bool:
    return name == "__pycache__" or name.endswith(".pyc")


def lay_over(src: Path, dest: Path, within: Path) -> None:
    """Copy the folder ``src`` over ``dest`` (created if missing), reading and writing nothing outside.

    What a task folder (solution/, tests/, holdout/) gives is laid over a
    worktree the way a checkout would: a link already at a destination path
    is replaced, never written through (a repository's ``out -> /home/me/x``
    must not let solution/out overwrite the host's file), and a link in
    ``src`` is followed only when it leads inside ``within`` (the task folder);
    any other is copied as the link it is, its target never read.
    """
    within_real = os.path.realpath(within)

    def inside(path: str) -> bool:
        real = os.path.realpath(path)
        return real == within_real or real.startswith(within_real.rstrip(os.sep) + os.sep)

    def clear(target: str, keep_dir: bool) -> None:
        # Whatever is at target and is not what we are about to write goes, links unfollowed.
        if os.path.islink(target):
            os.unlink(target)
        elif keep_dir and os.path.isdir(target):
            return
        elif os.path.isdir(target):
            shutil.rmtree(target)
        elif os.path.lexists(target):
            os.unlink(target)

    def copy_dir(s: str, d: str, stack: frozenset[str]) -> None:
        clear(d, keep_dir=True)
        os.makedirs(d, exist_ok=True)
        with os.scandir(s) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            if _skipped(entry.name):
                continue
            sp, dp = entry.path, os.path.join(d, entry.name)
            if entry.is_symlink() and not inside(sp):
                clear(dp, keep_dir=False)
                os.symlink(os.readlink(sp), dp)
            elif entry.is_dir():  # follows a link that stays inside the task folder
                real = os.path.realpath(sp)
                if real in stack:  # a link back up the tree: copy it as the link it is
                    clear(dp, keep_dir=False)
                    os.symlink(os.readlink(sp), dp)
                else:
                    copy_dir(sp, dp, stack | {real})
            elif entry.is_file():
                clear(dp, keep_dir=False)
                shutil.copy2(sp, dp)
            elif entry.is_symlink():  # a dangling link inside the task folder
                clear(dp, keep_dir=False)
                os.symlink(os.readlink(sp), dp)
            # sockets, FIFOs, devices: not files a task can give

    if os.path.islink(src) and not inside(src):
        raise OSError(f"{src} is a link leading outside {within}: not copied")
    copy_dir(str(src), str(dest), frozenset({os.path.realpath(src)}))


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
    """Whether process ``pid`` still runs. A zombie does not: it was killed (kill -9) and only
    waits for its parent (a shell, a test harness) to read its exit status."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            # "pid (comm) S ...": the state follows the last ')' (comm may hold anything).
            return fh.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
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


def owner_pids(state_dir: Path, run: str | None = None) -> set[int]:
    """PIDs of the processes that made the worktrees under ``state_dir`` (of ``run`` only, if given), alive or not."""
    root = state_dir / "worktrees"
    pids: set[int] = set()
    for owner in root.glob(f"{glob.escape(run) if run else '*'}/*/.*.owner") if root.is_dir() else []:
        try:
            pid = json.loads(owner.read_text()).get("pid")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(pid, int):
            pids.add(pid)
    return pids


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
        _forget_sidecars(orphan.path)
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
