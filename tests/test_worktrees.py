"""crossreview.worktrees on real git: snapshots, worktrees, diffs, branches, gc."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from crossreview.models import Task
from crossreview.worktrees import (
    TESTS_DIRNAME,
    WorktreeError,
    apply_diff,
    copy_tests,
    create_worktree,
    find_orphans,
    gc,
    keep_branch,
    lay_over,
    prepare_base,
    remove_worktree,
    reset_to,
    take_diff,
    work_branch,
    worktrees_root,
)

GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.invalid",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
}
BINARY = bytes(range(256)) * 4


def git(cwd: Path, *args: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        ["git", *args], cwd=cwd, env={**GIT_ENV, **(env or {})}, capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0, f"git {args} failed: {proc.stderr}"
    return proc.stdout.strip()


def git_bytes(git_dir: Path, *args: str) -> bytes:
    return subprocess.run(
        ["git", *args], env={**GIT_ENV, "GIT_DIR": str(git_dir)}, check=True, capture_output=True, timeout=30
    ).stdout


def folder_task(tmp_path: Path, task_id: str = "demo", files: dict[str, str] | None = None) -> Task:
    """A task whose repository is a plain repo/ folder."""
    tdir = tmp_path / "tasks" / task_id
    repo = tdir / "repo"
    repo.mkdir(parents=True)
    files = files or {
        "main.py": "def answer():\n    return 41\n",
        "README.md": "demo\n",
        "pkg/util.py": "X = 1\n",
    }
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    (tdir / "tests").mkdir()
    (tdir / "tests" / "test_main.py").write_text("def test_x():\n    assert True\n")
    (tdir / "instruction.md").write_text("fix it\n")
    return Task(id=task_id, path=tdir, instruction="fix it\n", repo_path=repo)


@pytest.fixture
def state(tmp_path) -> Path:
    d = tmp_path / "state"
    d.mkdir()
    return d


@pytest.fixture
def base_and_task(tmp_path, state):
    task = folder_task(tmp_path)
    return prepare_base(task, state), task


def wt_path(state: Path, run: str, task_id: str, agent: str) -> Path:
    return worktrees_root(state) / run / task_id / agent


def their_repo(tmp_path: Path) -> Path:
    """A git repository a task brought along (``[repo] path``), with one commit."""
    repo = tmp_path / "theirs"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "a.py").write_text("x = 1\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "one")
    return repo


def new_wt(state, base, run="run1", task_id="demo", agent="a") -> Path:
    return create_worktree(state, base, wt_path(state, run, task_id, agent))


def tree_files(path: Path) -> dict[str, bytes]:
    """Every file under path except git's own, as bytes."""
    out = {}
    for p in sorted(path.rglob("*")):
        if p.is_file() and ".git" not in p.relative_to(path).parts[:1]:
            out[str(p.relative_to(path))] = p.read_bytes()
    return out


def branches(git_dir: Path) -> set[str]:
    out = git_bytes(git_dir, "for-each-ref", "--format=%(refname:short)", "refs/heads/").decode()
    return set(out.split())


# --- prepare_base ----------------------------------------------------------------


def test_prepare_base_snapshots_folder_into_bare_repo(tmp_path, state):
    task = folder_task(tmp_path)
    base = prepare_base(task, state)
    assert base.git_dir == (state / "repos" / "demo.git").resolve()
    assert git(base.git_dir, "rev-parse", "--is-bare-repository") == "true"
    assert len(base.commit) == 40
    listed = git_bytes(base.git_dir, "ls-tree", "-r", "--name-only", base.commit).decode().split()
    assert sorted(listed) == ["README.md", "main.py", "pkg/util.py"]
    assert git_bytes(base.git_dir, "show", f"{base.commit}:main.py") == b"def answer():\n    return 41\n"
    # the task's folder is left as it was: no .git appears in it
    assert not (task.repo_path / ".git").exists()


def test_prepare_base_same_commit_when_unchanged_new_when_changed(tmp_path, state):
    task = folder_task(tmp_path)
    first = prepare_base(task, state)
    again = prepare_base(task, state)
    assert again.commit == first.commit

    (task.repo_path / "main.py").write_text("def answer():\n    return 42  # changed\n")
    changed = prepare_base(task, state)
    assert changed.commit != first.commit
    assert git_bytes(changed.git_dir, "show", f"{changed.commit}:main.py").endswith(b"# changed\n")
    # history is kept: the new snapshot's parent is the old one
    assert git(changed.git_dir, "rev-parse", f"{changed.commit}^") == first.commit

    (task.repo_path / "README.md").unlink()
    deleted = prepare_base(task, state)
    assert deleted.commit != changed.commit
    listed = git_bytes(deleted.git_dir, "ls-tree", "-r", "--name-only", deleted.commit).decode().split()
    assert "README.md" not in listed


def test_prepare_base_ignores_pycache(tmp_path, state):
    task = folder_task(tmp_path)
    first = prepare_base(task, state)
    (task.repo_path / "__pycache__").mkdir()
    (task.repo_path / "__pycache__" / "main.cpython-311.pyc").write_bytes(b"\0junk")
    assert prepare_base(task, state).commit == first.commit


# --- the snapshot cache ------------------------------------------------------------


@pytest.fixture
def snapshots(monkeypatch):
    """Trust files as soon as they are written (no racy-git wait), and count git calls."""
    import crossreview.worktrees as wt

    monkeypatch.setattr(wt, "RACY_SECONDS", 0.0)
    calls: list[tuple[str, ...]] = []
    real = wt._run

    def counting(g, *args, **kw):
        calls.append(args)
        return real(g, *args, **kw)

    monkeypatch.setattr(wt, "_run", counting)
    return calls


def settle() -> None:
    time.sleep(0.05)  # past the file times just written (RACY_SECONDS is 0 here)


def test_snapshot_cache_reuses_an_unchanged_folder_without_git(tmp_path, state, snapshots):
    task = folder_task(tmp_path)
    settle()
    first = prepare_base(task, state)
    snapshots.clear()
    again = prepare_base(task, state)
    assert again.commit == first.commit
    assert snapshots == []  # not one git process


def test_snapshot_cache_notices_a_file_rewritten_with_the_same_size_and_mtime(tmp_path, state, snapshots):
    task = folder_task(tmp_path)
    settle()
    first = prepare_base(task, state)
    target = task.repo_path / "main.py"
    before = target.stat()
    target.write_text("def answer():\n    return 43\n")  # same length as "... 41\n"
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))  # and the old mtime: only ctime tells
    assert target.stat().st_size == before.st_size
    settle()
    changed = prepare_base(task, state)
    assert changed.commit != first.commit
    assert git_bytes(changed.git_dir, "show", f"{changed.commit}:main.py") == b"def answer():\n    return 43\n"


def test_snapshot_cache_notices_an_added_file(tmp_path, state, snapshots):
    task = folder_task(tmp_path)
    settle()
    first = prepare_base(task, state)
    (task.repo_path / "pkg" / "added.py").write_text("A = 1\n")
    settle()
    added = prepare_base(task, state)
    assert added.commit != first.commit
    listed = git_bytes(added.git_dir, "ls-tree", "-r", "--name-only", added.commit).decode().split()
    assert "pkg/added.py" in listed


def test_snapshot_cache_notices_a_deleted_file(tmp_path, state, snapshots):
    task = folder_task(tmp_path)
    settle()
    first = prepare_base(task, state)
    (task.repo_path / "pkg" / "util.py").unlink()
    settle()
    deleted = prepare_base(task, state)
    assert deleted.commit != first.commit
    listed = git_bytes(deleted.git_dir, "ls-tree", "-r", "--name-only", deleted.commit).decode().split()
    assert "pkg/util.py" not in listed


def test_snapshot_cache_notices_a_renamed_file(tmp_path, state, snapshots):
    task = folder_task(tmp_path)
    settle()
    first = prepare_base(task, state)
    (task.repo_path / "README.md").rename(task.repo_path / "README.txt")
    settle()
    renamed = prepare_base(task, state)
    assert renamed.commit != first.commit
    listed = git_bytes(renamed.git_dir, "ls-tree", "-r", "--name-only", renamed.commit).decode().split()
    assert "README.txt" in listed and "README.md" not in listed


def test_snapshot_cache_is_not_trusted_for_files_written_a_moment_ago(tmp_path, state):
    # Default RACY_SECONDS: a folder written just now could still change within
    # the same clock tick, so git snapshots it every time until it settles.
    import crossreview.worktrees as wt

    task = folder_task(tmp_path)
    assert wt.folder_fingerprint(task.repo_path) is None
    prepare_base(task, state)
    assert not (state / "repos" / "demo.git" / "crossreview-snapshot.json").exists()


def test_snapshot_cache_is_keyed_by_the_folder_too(tmp_path, state, snapshots):
    # Two suites may hold tasks with the same id: one's snapshot is never the other's.
    one = folder_task(tmp_path / "one")
    two = folder_task(tmp_path / "two", files={"other.py": "O = 1\n"})
    settle()
    a = prepare_base(one, state)
    b = prepare_base(two, state)
    assert a.git_dir == b.git_dir and a.commit != b.commit
    listed = git_bytes(b.git_dir, "ls-tree", "-r", "--name-only", b.commit).decode().split()
    assert listed == ["other.py"]


def test_snapshot_cache_unchanged_files_touched_reuse_the_commit(tmp_path, state, snapshots):
    # A file rewritten with the same bytes changes the fingerprint, not the tree: same commit, cheaply.
    task = folder_task(tmp_path)
    settle()
    first = prepare_base(task, state)
    (task.repo_path / "main.py").write_text("def answer():\n    return 41\n")
    settle()
    snapshots.clear()
    again = prepare_base(task, state)
    assert again.commit == first.commit
    assert [c[0] for c in snapshots] == ["add", "write-tree"]


# --- create_worktree -----------------------------------------------------------


def test_each_agent_gets_its_own_worktree_at_the_base_commit(state, base_and_task):
    base, task = base_and_task
    a = new_wt(state, base, agent="a")
    b = new_wt(state, base, agent="b")
    assert a != b and a.is_dir() and b.is_dir()
    for path in (a, b):
        assert git(path, "rev-parse", "HEAD") == base.commit
        assert git(path, "rev-parse", "--abbrev-ref", "HEAD") == "HEAD"  # detached: no branch per candidate
        assert git(path, "status", "--porcelain") == ""
        assert tree_files(path) == tree_files(task.repo_path)
    # the worktrees are independent
    (a / "main.py").write_text("changed in a\n")
    assert (b / "main.py").read_text() == "def answer():\n    return 41\n"
    # an owner file records which process owns the worktree
    assert (a.parent / ".a.owner").is_file()


def test_create_worktree_replaces_an_old_one(state, base_and_task):
    base, _ = base_and_task
    a = new_wt(state, base)
    (a / "junk.txt").write_text("left over\n")
    (a / "main.py").write_text("edited\n")
    a2 = new_wt(state, base)
    assert a2 == a
    assert not (a / "junk.txt").exists()
    assert (a / "main.py").read_text() == "def answer():\n    return 41\n"


def test_concurrent_worktree_creation_on_one_repo(state, base_and_task):
    base, _ = base_and_task
    errors: list[BaseException] = []
    made: list[Path] = []
    lock = threading.Lock()

    def work(thread: int) -> None:
        try:
            for i in range(5):
                p = new_wt(state, base, run=f"run{thread}", agent=f"ag{i}")
                with lock:
                    made.append(p)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "worktree creation hung"
    assert errors == []
    assert len(made) == 10
    listed = git(base.git_dir, "worktree", "list", "--porcelain")
    for p in made:
        assert git(p, "rev-parse", "HEAD") == base.commit
        assert f"worktree {p}" in listed


# --- take_diff -------------------------------------------------------------------


def test_take_diff_includes_new_modified_deleted_and_binary(state, base_and_task):
    base, _ = base_and_task
    a = new_wt(state, base)
    (a / "main.py").write_text("def answer():\n    return 42\n")
    (a / "README.md").unlink()
    (a / "new.py").write_text("NEW = True\n")
    (a / "blob.bin").write_bytes(BINARY)
    info = take_diff(a, base.commit)
    assert sorted(info.files) == ["README.md", "blob.bin", "main.py", "new.py"]
    assert "+    return 42" in info.text and "-    return 41" in info.text
    assert "deleted file mode" in info.text
    assert "+NEW = True" in info.text
    assert "GIT binary patch" in info.text
    assert info.added == 2  # main.py +1, new.py +1 (binary counts nothing)
    assert info.removed == 2  # main.py -1, README.md -1
    assert info.text.endswith("\n")


def test_take_diff_from_the_seed_index_equals_the_diff_from_the_base_tree(state, base_and_task):
    # take_diff starts from the index worktree add wrote (kept privately beside
    # the worktree); without it, from the base tree. Both must give the same candidate.
    base, _ = base_and_task
    a = new_wt(state, base)
    seed = a.parent / ".a.index"
    assert seed.is_file()
    _make_change(a)
    (a / "café.py").write_text("C = 1\n")
    (a / "main.py").chmod(0o755)
    fast = take_diff(a, base.commit)
    seed.unlink()
    slow = take_diff(a, base.commit)
    assert fast == slow
    assert sorted(fast.files) == sorted(["README.md", "blob.bin", "café.py", "empty.txt", "main.py",
                                         "pkg/new.py", "pkg/util.py", "run.sh"])
    # The patch is exactly what a separate `git diff --binary` of the same index gives.
    index = a.parent / "check.index"
    env = {"GIT_INDEX_FILE": str(index)}
    git(a, "read-tree", base.commit, env=env)
    git(a, "add", "-A", "--", ".", env=env)
    patch = subprocess.run(["git", "diff", "--cached", "--binary", "--no-color", "--no-ext-diff", "--no-renames",
                            base.commit], cwd=a, env={**GIT_ENV, **env}, capture_output=True, check=True).stdout
    assert fast.text.encode() == patch


def test_take_diff_falls_back_when_the_seed_index_is_damaged(state, base_and_task):
    base, _ = base_and_task
    a = new_wt(state, base)
    (a.parent / ".a.index").write_bytes(b"not an index")
    (a / "main.py").write_text("def answer():\n    return 42\n")
    info = take_diff(a, base.commit)
    assert info.files == ["main.py"] and info.added == 1 and info.removed == 1


def test_take_diff_sees_an_edit_that_keeps_size_and_mtime(state, base_and_task):
    # The seed index carries stat data: an edit that restores the old mtime
    # still changes ctime, so git must rehash the file and see the change.
    base, _ = base_and_task
    a = new_wt(state, base)
    target = a / "main.py"
    before = target.stat()
    target.write_text("def answer():\n    return 43\n")
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    info = take_diff(a, base.commit)
    assert info.files == ["main.py"] and "+    return 43" in info.text


def test_take_diff_of_untouched_worktree_is_empty(state, base_and_task):
    base, _ = base_and_task
    a = new_wt(state, base)
    info = take_diff(a, base.commit)
    assert info.text == "" and info.files == [] and info.added == info.removed == 0


def test_take_diff_excludes_the_tests_folder(state, base_and_task):
    base, _ = base_and_task
    a = new_wt(state, base)
    (a / TESTS_DIRNAME).mkdir()
    (a / TESTS_DIRNAME / "test_main.py").write_text("def test_x(): pass\n")
    (a / "main.py").write_text("changed\n")
    info = take_diff(a, base.commit)
    assert info.files == ["main.py"]
    assert TESTS_DIRNAME not in info.text


def test_take_diff_leaves_the_worktree_index_alone(state, base_and_task):
    base, _ = base_and_task
    a = new_wt(state, base)
    (a / "staged.py").write_text("S = 1\n")
    git(a, "add", "staged.py")
    (a / "untracked.py").write_text("U = 1\n")
    (a / "main.py").write_text("modified, not staged\n")
    (a / "README.md").unlink()
    index = Path(git(a, "rev-parse", "--git-path", "index"))
    if not index.is_absolute():
        index = a / index
    before_status = git(a, "status", "--porcelain")
    before_index = index.read_bytes()
    before_staged = git(a, "diff", "--cached", "--name-status")

    info = take_diff(a, base.commit)
    after_index = index.read_bytes()  # before any other git command can refresh it
    assert sorted(info.files) == ["README.md", "main.py", "staged.py", "untracked.py"]

    assert after_index == before_index
    assert git(a, "diff", "--cached", "--name-status") == before_staged == "A\tstaged.py"
    assert git(a, "status", "--porcelain") == before_status
    assert "?? untracked.py" in before_status and " M main.py" in before_status


def test_take_diff_names_files_with_unusual_characters_plainly(state, base_and_task):
    # files_changed is shown to reviewers and humans: a path, not git's C-quoted form
    base, _ = base_and_task
    a = new_wt(state, base)
    (a / "café.py").write_text("X = 1\n")
    (a / "my file.py").write_text("Y = 1\n")
    info = take_diff(a, base.commit)
    assert sorted(info.files) == ["café.py", "my file.py"]
    assert info.added == 2


def test_take_diff_includes_changes_the_agent_committed(state, base_and_task):
    # agents such as aider commit as they go; the candidate is still everything since the base
    base, _ = base_and_task
    a = new_wt(state, base)
    (a / "main.py").write_text("def answer():\n    return 42\n")
    git(a, "commit", "-q", "-am", "agent's own commit")
    (a / "later.py").write_text("L = 1\n")
    info = take_diff(a, base.commit)
    assert sorted(info.files) == ["later.py", "main.py"]
    reset_to(a, base.commit, info.text)
    assert git(a, "rev-parse", "HEAD") == base.commit
    assert (a / "main.py").read_text() == "def answer():\n    return 42\n"
    assert (a / "later.py").read_text() == "L = 1\n"


# --- reset_to / apply_diff -------------------------------------------------------


def _make_change(a: Path) -> None:
    (a / "main.py").write_text("def answer():\n    return 42\n")
    (a / "README.md").unlink()
    (a / "pkg" / "new.py").write_text("NEW = 1\n")
    (a / "pkg" / "util.py").write_text("X = 2")  # no newline at end of file
    (a / "blob.bin").write_bytes(BINARY)
    (a / "empty.txt").write_text("")
    (a / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (a / "run.sh").chmod(0o755)


def test_reset_to_makes_a_dirty_worktree_exactly_base_plus_diff(state, base_and_task):
    base, _ = base_and_task
    a = new_wt(state, base, agent="a")
    _make_change(a)
    diff = take_diff(a, base.commit).text
    expected = tree_files(a)

    # the agent keeps working after its diff was taken
    (a / "main.py").write_text("something else\n")
    (a / "junk.txt").write_text("junk\n")
    (a / "pkg" / "util.py").unlink()
    (a / "build").mkdir()
    (a / "build" / "out.o").write_bytes(b"\x7fELF")
    (a / "__pycache__").mkdir()
    (a / "__pycache__" / "x.pyc").write_bytes(b"pyc")
    git(a, "add", "junk.txt")

    reset_to(a, base.commit, diff)
    assert tree_files(a) == expected
    assert take_diff(a, base.commit).text == diff


def test_reset_to_empty_diff_is_the_base(state, base_and_task):
    base, task = base_and_task
    a = new_wt(state, base)
    (a / "main.py").write_text("dirty\n")
    (a / "junk").write_text("junk\n")
    reset_to(a, base.commit, "")
    assert tree_files(a) == tree_files(task.repo_path)


def test_apply_diff_round_trips_into_a_fresh_worktree(state, base_and_task):
    base, _ = base_and_task
    a = new_wt(state, base, agent="a")
    b = new_wt(state, base, agent="b")
    _make_change(a)
    info = take_diff(a, base.commit)
    apply_diff(b, info.text)
    assert tree_files(b) == tree_files(a)
    assert (b / "blob.bin").read_bytes() == BINARY
    assert (b / "empty.txt").is_file()
    assert os.access(b / "run.sh", os.X_OK)
    assert take_diff(b, base.commit).text == info.text


def test_apply_diff_that_does_not_apply_raises(state, base_and_task):
    base, _ = base_and_task
    a = new_wt(state, base, agent="a")
    b = new_wt(state, base, agent="b")
    (a / "main.py").write_text("from a\n")
    diff = take_diff(a, base.commit).text
    (b / "main.py").write_text("conflicting content in b\n")
    with pytest.raises(WorktreeError, match="git apply"):
        apply_diff(b, diff)


# --- keep_branch / remove_worktree -------------------------------------------


def test_keep_branch_commits_the_diff_onto_a_branch(state, base_and_task):
    base, _ = base_and_task
    a = new_wt(state, base)
    _make_change(a)
    diff = take_diff(a, base.commit).text
    commit = keep_branch(state, base, "crossreview/run1/demo", diff, "accepted: a")
    assert git(base.git_dir, "rev-parse", "crossreview/run1/demo") == commit
    assert git(base.git_dir, "rev-parse", f"{commit}^") == base.commit
    assert git(base.git_dir, "log", "-1", "--format=%s", commit) == "accepted: a"
    assert git_bytes(base.git_dir, "show", f"{commit}:main.py") == b"def answer():\n    return 42\n"
    assert git_bytes(base.git_dir, "show", f"{commit}:pkg/new.py") == b"NEW = 1\n"
    assert git_bytes(base.git_dir, "show", f"{commit}:blob.bin") == BINARY
    files = git_bytes(base.git_dir, "ls-tree", "-r", "--name-only", commit).decode().split()
    assert "README.md" not in files
    assert git(base.git_dir, "log", "-1", "--format=%an <%ae>|%cn <%ce>", commit) == (
        "crossreview <crossreview@localhost>|crossreview <crossreview@localhost>")
    git(base.git_dir, "fsck", "--no-progress", "--strict")  # the commit object is one git itself would write
    # the worktree itself is not touched by keeping its diff
    assert git(a, "rev-parse", "HEAD") == base.commit


def test_keep_branch_writes_the_staged_index_of_exactly_that_diff(state, base_and_task, snapshots):
    base, _ = base_and_task
    a = new_wt(state, base)
    _make_change(a)
    diff = take_diff(a, base.commit).text
    (a / "main.py").write_text("changed after the diff was taken\n")  # the worktree is not what is kept
    snapshots.clear()
    fast = keep_branch(state, base, "crossreview/run1/fast", diff, "accepted: a", worktree=a)
    # In crossreview's own snapshot repository the commit and the ref are written without git.
    assert [c[0] for c in snapshots] == ["write-tree"]
    slow = keep_branch(state, base, "crossreview/run1/slow", diff, "accepted: a")
    tree = lambda c: git(base.git_dir, "rev-parse", f"{c}^{{tree}}")  # noqa: E731
    assert tree(fast) == tree(slow)
    assert git_bytes(base.git_dir, "show", f"{fast}:main.py") == b"def answer():\n    return 42\n"
    # a different diff than the one staged: the staged index is not used
    snapshots.clear()
    other = keep_branch(state, base, "crossreview/run1/other", "", "nothing", worktree=a)
    assert snapshots[0][0] == "read-tree"
    assert tree(other) == tree(base.commit)


def test_keep_branch_with_empty_diff_is_the_base_tree(state, base_and_task):
    base, _ = base_and_task
    commit = keep_branch(state, base, "crossreview/run1/empty", "", "nothing")
    assert git(base.git_dir, "rev-parse", f"{commit}^{{tree}}") == git(
        base.git_dir, "rev-parse", f"{base.commit}^{{tree}}"
    )


def test_remove_worktree_removes_dir_and_its_record_without_git(state, base_and_task, snapshots):
    base, _ = base_and_task
    a = new_wt(state, base)
    b = new_wt(state, base, agent="b")
    assert not [x for x in branches(base.git_dir) if x.startswith("crossreview/")]  # detached: none made
    (a / "dirty.txt").write_text("uncommitted\n")
    take_diff(a, base.commit)
    assert list(a.parent.glob(".a.staged-*"))
    snapshots.clear()
    remove_worktree(state, base, a)
    assert snapshots == []  # the record is deleted directly: no `git worktree prune`
    assert not a.exists()
    assert not (a.parent / ".a.owner").exists()
    assert not (a.parent / ".a.index").exists()  # the private seed index goes too
    assert not list(a.parent.glob(".a.staged-*"))  # and the staged one
    listed = git(base.git_dir, "worktree", "list", "--porcelain")
    assert str(a) not in listed and str(b) in listed  # only a's record went
    assert git(b, "status", "--porcelain") == ""
    # git itself agrees nothing is left to prune
    assert git(base.git_dir, "worktree", "prune", "--dry-run", "--verbose") == ""
    # removing again is quiet
    remove_worktree(state, base, a)


def test_remove_worktree_never_trusts_the_worktrees_own_git_file(state, base_and_task):
    # An agent could point its worktree's .git at another worktree's record;
    # removal finds the record by the record's own gitdir file, not by that pointer.
    base, _ = base_and_task
    a = new_wt(state, base)
    b = new_wt(state, base, agent="b")
    b_pointer = (b / ".git").read_text()
    (a / ".git").write_text(b_pointer)
    remove_worktree(state, base, a)
    listed = git(base.git_dir, "worktree", "list", "--porcelain")
    assert str(a) not in listed and str(b) in listed
    assert git(b, "rev-parse", "HEAD") == base.commit


def test_remove_worktree_deletes_named_branches_too(state, base_and_task):
    # Older versions put every candidate on a work branch; removal still deletes one when named.
    base, _ = base_and_task
    a = new_wt(state, base)
    branch = work_branch("run1", "demo", "a")
    git(base.git_dir, "branch", branch, base.commit)
    remove_worktree(state, base, a, branch)
    assert branch not in branches(base.git_dir)


# --- orphans and gc ------------------------------------------------------------


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait(timeout=10)
    return proc.pid


def set_owner(worktree: Path, pid: int) -> None:
    (worktree.parent / f".{worktree.name}.owner").write_text('{"pid": %d}' % pid)


def test_find_orphans_finds_dead_owners_only(state, base_and_task):
    base, _ = base_and_task
    live = new_wt(state, base, run="live", agent="a")
    dead = new_wt(state, base, run="dead", agent="a")
    pid = dead_pid()
    set_owner(dead, pid)
    orphans = find_orphans(state)
    assert [(o.path, o.pid) for o in orphans] == [(dead, pid)]
    assert live not in [o.path for o in orphans]


def test_find_orphans_treats_unreadable_owner_as_orphan(state, base_and_task):
    base, _ = base_and_task
    wt = new_wt(state, base, run="r", agent="a")
    (wt.parent / ".a.owner").write_text("not json")
    assert [o.path for o in find_orphans(state)] == [wt]
    assert find_orphans(state / "nowhere") == []


def test_gc_removes_orphans_and_dead_branches_keeps_live_and_kept(state, base_and_task):
    base, _ = base_and_task
    live = new_wt(state, base, run="live", agent="a")
    dead = new_wt(state, base, run="dead", agent="a")
    dead2 = new_wt(state, base, run="dead", agent="b")
    kept = new_wt(state, base, run="kept", agent="a")
    pid = dead_pid()
    for p in (dead, dead2, kept):
        set_owner(p, pid)
    # work branches as older versions made them, one of a dead run with no worktree left at all
    for run, agent in (("live", "a"), ("dead", "a"), ("dead", "b"), ("kept", "a"), ("gone", "a")):
        git(base.git_dir, "branch", work_branch(run, "demo", agent), base.commit)
    # an accepted candidate's kept branch is not a work branch: never collected
    keep_branch(state, base, "crossreview/dead/demo", "", "accepted")

    trees, nbranches = gc(state, [base.git_dir], keep_runs={"kept"})
    assert trees == 2
    assert nbranches == 3  # dead/a, dead/b, gone/a
    assert not dead.exists() and not dead2.exists()
    assert not (worktrees_root(state) / "dead").exists()
    assert live.is_dir() and kept.is_dir()
    left = branches(base.git_dir)
    assert work_branch("live", "demo", "a") in left
    assert work_branch("kept", "demo", "a") in left
    assert work_branch("dead", "demo", "a") not in left
    assert work_branch("dead", "demo", "b") not in left
    assert work_branch("gone", "demo", "a") not in left
    assert "crossreview/dead/demo" in left
    assert [o.path for o in find_orphans(state)] == [kept]  # kept, though its owner is gone
    # a second gc finds nothing more to do
    assert gc(state, [base.git_dir], keep_runs={"kept"}) == (0, 0)


# --- a task whose repository is an existing git repository -------------------


def test_existing_git_repository_at_a_given_ref(tmp_path, state):
    upstream = tmp_path / "upstream"
    upstream.mkdir()
    git(upstream, "init", "-q")
    (upstream / "app.py").write_text("VERSION = 1\n")
    git(upstream, "add", "-A")
    git(upstream, "commit", "-q", "-m", "first")
    first = git(upstream, "rev-parse", "HEAD")
    (upstream / "app.py").write_text("VERSION = 2\n")
    (upstream / "later.py").write_text("LATER = True\n")
    git(upstream, "add", "-A")
    git(upstream, "commit", "-q", "-m", "second")
    user_head = git(upstream, "rev-parse", "HEAD")
    user_branch = git(upstream, "rev-parse", "--abbrev-ref", "HEAD")

    tdir = tmp_path / "tasks" / "ext"
    tdir.mkdir(parents=True)
    task = Task(id="ext", path=tdir, instruction="x", repo_path=upstream, repo_ref=first, repo_is_folder=False)
    base = prepare_base(task, state)
    assert base.commit == first
    assert base.git_dir == (upstream / ".git").resolve()
    wt = new_wt(state, base, task_id="ext")
    assert (wt / "app.py").read_text() == "VERSION = 1\n"
    assert not (wt / "later.py").exists()
    assert git(wt, "rev-parse", "HEAD") == first

    # the user's own checkout is left as it was
    assert git(upstream, "rev-parse", "HEAD") == user_head
    assert git(upstream, "rev-parse", "--abbrev-ref", "HEAD") == user_branch
    assert git(upstream, "status", "--porcelain") == ""

    (wt / "app.py").write_text("VERSION = 3\n")
    diff = take_diff(wt, base.commit)
    assert diff.files == ["app.py"]
    remove_worktree(state, base, wt)
    assert not [b for b in branches(upstream / ".git") if b.startswith("crossreview/")]  # none in the user's repo
    assert str(wt) not in git(upstream, "worktree", "list", "--porcelain")


def test_existing_repository_ref_given_by_name(tmp_path, state):
    upstream = tmp_path / "upstream"
    upstream.mkdir()
    git(upstream, "init", "-q")
    (upstream / "f.txt").write_text("one\n")
    git(upstream, "add", "-A")
    git(upstream, "commit", "-q", "-m", "first")
    git(upstream, "tag", "v1")
    (upstream / "f.txt").write_text("two\n")
    git(upstream, "commit", "-q", "-am", "second")
    task = Task(
        id="ext", path=tmp_path, instruction="x", repo_path=upstream, repo_ref="v1", repo_is_folder=False
    )
    base = prepare_base(task, state)
    assert base.commit == git(upstream, "rev-parse", "v1^{commit}")
    wt = new_wt(state, base, task_id="ext")
    assert (wt / "f.txt").read_text() == "one\n"


def test_first_snapshot_is_three_git_calls_and_ignores_the_users_hooks(tmp_path, state, snapshots, monkeypatch):
    # A user's global config with hooks or signing must not reach crossreview's snapshot repositories.
    home = tmp_path / "home"
    hooks = home / "hooks"
    hooks.mkdir(parents=True)
    for name in ("pre-commit", "post-commit", "commit-msg"):
        (hooks / name).write_text(f"#!/bin/sh\necho ran > {tmp_path}/hook-{name}\nexit 1\n")
        (hooks / name).chmod(0o755)
    (home / ".gitconfig").write_text(f"[core]\n\thooksPath = {hooks}\n[commit]\n\tgpgSign = true\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("GIT_CONFIG_GLOBAL", raising=False)
    task = folder_task(tmp_path)
    base = prepare_base(task, state)
    assert [c[0] for c in snapshots] == ["init", "add", "-c"]  # init, add, one commit
    assert not list(tmp_path.glob("hook-*"))
    assert git(base.git_dir, "rev-parse", "HEAD") == base.commit
    files = git_bytes(base.git_dir, "ls-tree", "-r", "--name-only", base.commit).decode().split()
    assert files == sorted(p.relative_to(task.repo_path).as_posix() for p in task.repo_path.rglob("*") if p.is_file())


def test_first_snapshot_of_an_empty_folder(tmp_path, state):
    import shutil

    task = folder_task(tmp_path)
    shutil.rmtree(task.repo_path)
    task.repo_path.mkdir()
    base = prepare_base(task, state)
    assert git(base.git_dir, "ls-tree", "-r", base.commit) == ""


def test_first_snapshot_caches_its_tree_read_from_the_object_file(tmp_path, state, snapshots):
    import json

    task = folder_task(tmp_path)
    settle()
    base = prepare_base(task, state)
    cache = json.loads((base.git_dir / "crossreview-snapshot.json").read_text())
    assert cache["tree"] == git(base.git_dir, "rev-parse", f"{base.commit}^{{tree}}")


def test_many_worktrees_of_one_repository_at_once(state, base_and_task):
    # The agents of a task (and tasks sharing a repository) create their trees concurrently.
    from concurrent.futures import ThreadPoolExecutor

    base, task = base_and_task
    names = [(run, agent) for run in ("r1", "r2") for agent in "abcdefgh"]
    with ThreadPoolExecutor(8) as pool:
        paths = list(pool.map(lambda ra: new_wt(state, base, run=ra[0], agent=ra[1]), names))
    listed = git(base.git_dir, "worktree", "list", "--porcelain")
    for path in paths:
        assert git(path, "rev-parse", "HEAD") == base.commit
        assert git(path, "status", "--porcelain") == ""
        assert f"worktree {path}\n" in listed + "\n"
    records = sorted(p.name for p in (base.git_dir / "worktrees").iterdir())
    assert len(records) == len(paths)  # same basenames in two runs: git named the records apart
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda p: remove_worktree(state, base, p), paths))
    assert not (base.git_dir / "worktrees").exists() or not list((base.git_dir / "worktrees").iterdir())
    assert git(base.git_dir, "worktree", "list", "--porcelain").count("worktree ") == 1  # the bare repo itself


def test_git_is_started_by_its_path_and_a_changed_path_is_honoured(tmp_path, state, monkeypatch):
    import shutil as _shutil

    import crossreview.worktrees as wt

    # A wrapper named git first on PATH, as pyenv shims or a CI image's tools put one:
    # crossreview must start that one (it is what the user's PATH says git is), by its
    # full path (no walk along PATH with a failed exec per entry, for every git call) ...
    shim = tmp_path / "shim"
    shim.mkdir()
    log = tmp_path / "git-calls.log"
    real = _shutil.which("git")
    (shim / "git").write_text(f'#!/bin/sh\necho "$5" >> {log}\nexec {real} "$@"\n')  # $1-$4: the -c guards
    (shim / "git").chmod(0o755)
    monkeypatch.setenv("PATH", f"{shim}{os.pathsep}{os.environ['PATH']}")
    assert wt._git_executable(os.environ["PATH"]) == str(shim / "git")
    task = folder_task(tmp_path)
    base = prepare_base(task, state)
    new_wt(state, base)
    # (the worktree's record is written without git in crossreview's own snapshot repositories)
    assert log.read_text().split() == ["init", "add", "-c", "reset"]
    # A PATH without the wrapper is another PATH: the cache does not pin the old git.
    monkeypatch.setenv("PATH", os.environ["PATH"].split(os.pathsep, 1)[1])
    log.unlink()
    new_wt(state, base, agent="b")
    assert not log.exists()


def test_a_repositorys_own_fsmonitor_and_hooks_never_run(tmp_path, state):
    # A task pointing at a repository it brought along (its .git/config from elsewhere).
    repo = their_repo(tmp_path)
    ran = tmp_path / "ran"
    git(repo, "config", "core.fsmonitor", f"touch {ran}-fsmonitor; false")
    hooks = repo / ".git" / "hooks"
    for hook in ("reference-transaction", "post-checkout", "pre-commit"):
        (hooks / hook).write_text(f"#!/bin/sh\ntouch {ran}-{hook}\n")
        (hooks / hook).chmod(0o755)
    task = Task(id="theirs", path=tmp_path, instruction="x", repo_path=repo, repo_is_folder=False)
    base = prepare_base(task, state)
    wt = new_wt(state, base, task_id="theirs")
    (wt / "a.py").write_text("x = 2\n")
    diff = take_diff(wt, base.commit)
    keep_branch(state, base, "crossreview/r-1/theirs", diff.text, "kept", worktree=wt)
    assert "+x = 2" in diff.text
    assert not list(tmp_path.glob("ran-*")), list(tmp_path.glob("ran-*"))


# --- task files laid over a worktree: links never lead crossreview out -------


def test_copy_tests_copies_links_out_of_the_task_folder_as_links_never_their_content(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("the host's key\n")
    task = tmp_path / "task"
    (task / "tests").mkdir(parents=True)
    (task / "helpers").mkdir()
    (task / "helpers" / "shared.py").write_text("HELP = 1\n")
    (task / "tests" / "test_a.py").write_text("def test_a():\n    pass\n")
    os.symlink(secret, task / "tests" / "leak.txt")
    os.symlink("/etc", task / "tests" / "etc")
    os.symlink("../helpers/shared.py", task / "tests" / "shared.py")  # inside the task folder: followed
    os.symlink(".", task / "tests" / "loop")
    wt = tmp_path / "wt"
    wt.mkdir()
    dest = copy_tests(task / "tests", wt)
    assert (dest / "leak.txt").is_symlink() and os.readlink(dest / "leak.txt") == str(secret)
    assert (dest / "etc").is_symlink()
    assert not (dest / "shared.py").is_symlink() and (dest / "shared.py").read_text() == "HELP = 1\n"
    assert (dest / "loop").is_symlink()
    assert (dest / "test_a.py").read_text().startswith("def test_a")


def test_lay_over_replaces_links_in_the_worktree_instead_of_writing_through(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("original\n")
    victim_dir = tmp_path / "victim_dir"
    victim_dir.mkdir()
    wt = tmp_path / "wt"
    wt.mkdir()
    os.symlink(victim, wt / "out.txt")
    os.symlink(victim_dir, wt / "pkg")
    sol = tmp_path / "task" / "solution"
    (sol / "pkg").mkdir(parents=True)
    (sol / "out.txt").write_text("from the solution\n")
    (sol / "pkg" / "planted.py").write_text("X = 1\n")
    lay_over(sol, wt, sol.parent)
    assert victim.read_text() == "original\n"
    assert list(victim_dir.iterdir()) == []
    assert not (wt / "out.txt").is_symlink() and (wt / "out.txt").read_text() == "from the solution\n"
    assert not (wt / "pkg").is_symlink() and (wt / "pkg" / "planted.py").read_text() == "X = 1\n"


def test_snapshot_keeps_the_files_repo_s_own_gitignore_names(tmp_path, state):
    # Every file of repo/ is a starting file: a task's data must not vanish because its .gitignore names it.
    task = folder_task(tmp_path, files={".gitignore": "build/\n*.log\n", "main.py": "X = 1\n",
                                        "build/data.txt": "data\n", "run.log": "log\n",
                                        "__pycache__/main.cpython-311.pyc": "junk", "pkg/old.pyc": "junk"})
    base = prepare_base(task, state)
    names = git(tmp_path, "--git-dir", str(base.git_dir), "ls-tree", "-r", "--name-only", base.commit).splitlines()
    assert sorted(names) == [".gitignore", "build/data.txt", "main.py", "run.log"]
    wt = new_wt(state, base)
    assert (wt / "build" / "data.txt").read_text() == "data\n"
    assert take_diff(wt, base.commit).files == []


def test_a_killed_process_that_is_still_a_zombie_counts_as_gone():
    import signal
    import subprocess
    import sys

    from crossreview.worktrees import _pid_alive

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert _pid_alive(proc.pid)
        proc.send_signal(signal.SIGKILL)
        for _ in range(200):  # bounded: the kernel makes it a zombie within moments
            with open(f"/proc/{proc.pid}/stat", "rb") as fh:
                if fh.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                    break
            time.sleep(0.01)
        assert not _pid_alive(proc.pid)  # not reaped yet, but it will never run again
    finally:
        proc.kill()
        proc.wait()
    assert not _pid_alive(proc.pid)


def test_a_worktree_record_written_without_git_is_one_git_reads_prunes_and_removes(tmp_path, state):
    from crossreview.worktrees import is_snapshot_repo

    task = folder_task(tmp_path)
    base = prepare_base(task, state)
    assert is_snapshot_repo(state, base.git_dir)
    wt = new_wt(state, base)
    (wt / "main.py").write_text("def answer():\n    return 42\n")
    # git sees the worktree as one of its own: listed, on the base commit, its change visible.
    listed = git(base.git_dir, "worktree", "list", "--porcelain")
    assert f"worktree {os.path.realpath(wt)}\nHEAD {base.commit}\ndetached" in listed
    assert git(wt, "status", "--porcelain") == "M main.py"
    assert take_diff(wt, base.commit).files == ["main.py"]
    # A folder deleted behind git's back leaves a record `git worktree prune` recognises and removes.
    shutil.rmtree(wt)
    git(base.git_dir, "worktree", "prune")
    assert git(base.git_dir, "worktree", "list", "--porcelain").count("worktree ") == 1
    # `git worktree remove` (what a user would type) works on one too.
    wt = new_wt(state, base, agent="b")
    git(base.git_dir, "worktree", "remove", "--force", str(wt))
    assert not wt.exists()
    git(base.git_dir, "fsck", "--no-progress")


def test_only_crossreviews_own_plain_snapshot_repositories_get_records_written_without_git(tmp_path, state):
    from crossreview.worktrees import is_snapshot_repo

    # A repository the task brought along: git writes its worktree record, whatever its config holds.
    repo = their_repo(tmp_path)
    theirs = prepare_base(Task(id="theirs", path=tmp_path, instruction="x", repo_path=repo, repo_is_folder=False),
                          state)
    assert not is_snapshot_repo(state, theirs.git_dir)
    wt = new_wt(state, theirs, task_id="theirs")
    assert git(wt, "rev-parse", "HEAD") == theirs.commit
    assert (theirs.git_dir / "worktrees" / "a" / "logs").is_dir()  # git's own `worktree add` made it
    # A snapshot repository whose config names storage crossreview does not write by hand goes through git too.
    ours = prepare_base(folder_task(tmp_path, "other"), state)
    config = ours.git_dir / "config"
    plain = config.read_text()
    for extension in ("[extensions]\n\trefStorage = reftable\n", "[extensions]\n\tworktreeConfig = true\n"):
        config.write_text(plain + extension)
        assert not is_snapshot_repo(state, ours.git_dir)
    config.write_text(plain)
    assert is_snapshot_repo(state, ours.git_dir)
    assert not is_snapshot_repo(tmp_path / "elsewhere", ours.git_dir)


def test_snapshot_repositories_start_as_copies_of_one_git_init_and_are_whole_repositories(tmp_path, state):
    from crossreview.worktrees import _EMPTY_REPO

    first = prepare_base(folder_task(tmp_path, "one"), state)
    template = state / "repos" / _EMPTY_REPO
    made = (template / "HEAD").stat().st_mtime_ns
    # A folder a crash left half made (no HEAD) is replaced, not trusted.
    half = state / "repos" / "two.git"
    (half / "objects").mkdir(parents=True)
    (half / "objects" / "junk").write_text("x")
    second = prepare_base(folder_task(tmp_path, "two"), state)
    assert (template / "HEAD").stat().st_mtime_ns == made  # git init ran once for both
    assert not (half / "objects" / "junk").exists()
    for base in (first, second):
        assert git(base.git_dir, "rev-parse", "--is-bare-repository") == "true"
        assert git(base.git_dir, "rev-parse", "HEAD") == base.commit
        git(base.git_dir, "fsck", "--no-progress")
    assert first.commit != second.commit
    assert sorted(p.name for p in (state / "repos").iterdir() if not p.name.startswith(".")) == ["one.git", "two.git"]


def test_keep_branch_leaves_a_clashing_ref_name_and_a_users_repository_to_git(tmp_path, state, base_and_task):
    base, _ = base_and_task
    keep_branch(state, base, "crossreview/run1/demo", "", "first")
    # A name whose folder is another ref: git's own error, not a half-written ref.
    with pytest.raises(WorktreeError, match="update-ref"):
        keep_branch(state, base, "crossreview/run1/demo/more", "", "second")
    assert not list((base.git_dir / "refs" / "heads" / "crossreview" / "run1").glob("*.lock"))
    # A repository the task brought along: git writes the commit and the ref, as its hooks and config say.
    repo = their_repo(tmp_path)
    theirs = prepare_base(Task(id="theirs", path=tmp_path, instruction="x", repo_path=repo, repo_is_folder=False),
                          state)
    commit = keep_branch(state, theirs, "crossreview/run1/theirs", "", "kept")
    assert git(repo, "rev-parse", "crossreview/run1/theirs") == commit
    assert git(repo, "log", "-1", "--format=%s", commit) == "kept"
