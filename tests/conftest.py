"""Shared fixtures: real task folders, real git, the real CLI in a subprocess."""

from __future__ import annotations

import json
import os
import select
import sqlite3
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_TASKS = REPO_ROOT / "tasks"

GOOD_SOLUTION = "def add(a, b):\n    return a + b\n"
STUB = "def add(a, b):\n    raise NotImplementedError\n"
TESTS = textwrap.dedent(
    """
    from calc import add

    def test_small():
        assert add(1, 2) == 3

    def test_negative():
        assert add(-1, -1) == -2
    """
)


def write(path: Path, text: str) -> Path:
    """Write ``text`` to ``path``, creating folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def make_task(
    root: Path,
    name: str = "add",
    toml: str = "",
    instruction: str = "Implement add(a, b) in calc.py.\n",
    repo: dict[str, str] | None = None,
    tests: dict[str, str] | None = None,
    solution: dict[str, str] | None = None,
    holdout: dict[str, str] | None = None,
) -> Path:
    """A small real task folder: calc.add, with tests, solution and optional holdout."""
    d = root / name
    write(d / "task.toml", toml or 'version = "1.0"\n')
    write(d / "instruction.md", instruction)
    for rel, text in (repo if repo is not None else {"calc.py": STUB}).items():
        write(d / "repo" / rel, text)
    for rel, text in (tests if tests is not None else {"test_add.py": TESTS}).items():
        write(d / "tests" / rel, text)
    for rel, text in (solution if solution is not None else {"calc.py": GOOD_SOLUTION}).items():
        write(d / "solution" / rel, text)
    for rel, text in (holdout or {}).items():
        write(d / "holdout" / rel, text)
    return d


@dataclass
class CLIResult:
    """A finished `crossreview` subprocess."""

    returncode: int
    stdout: str
    stderr: str

    def json(self):
        return json.loads(self.stdout)


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a crossreview child: CI, no colour, wide output."""
    env = dict(os.environ)
    env.update({"CI": "true", "NO_COLOR": "1", "COLUMNS": "200", "PYTHONUNBUFFERED": "1"})
    env.pop("PYTEST_XDIST_WORKER", None)
    if extra:
        env.update(extra)
    return env


@pytest.fixture
def cli(tmp_path):
    """Run `python -m crossreview ARGS` in ``cwd`` (default tmp_path) and capture it."""

    def run(*args: str, cwd: Path | None = None, timeout: float = 180, env: dict | None = None) -> CLIResult:
        proc = subprocess.run(
            [sys.executable, "-m", "crossreview", *args],
            cwd=cwd or tmp_path,
            env=cli_env(env),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        return CLIResult(proc.returncode, proc.stdout, proc.stderr)

    return run


@pytest.fixture
def suite(tmp_path) -> Path:
    """An empty suite folder under tmp_path."""
    d = tmp_path / "suite"
    d.mkdir()
    return d


def counting_agent(path: Path, solution: str | None = GOOD_SOLUTION, sleep: float = 0.0) -> Path:
    """A command agent script that logs each invocation, may sleep, then writes calc.py.

    Invocations are appended to ``$CROSSREVIEW_COUNT_DIR/<agent>.count`` so a
    test can tell how many times each agent really ran.
    """
    body = f"""
import os, pathlib, time
count_dir = pathlib.Path(os.environ["CROSSREVIEW_COUNT_DIR"])
count_dir.mkdir(parents=True, exist_ok=True)
agent = os.environ["CROSSREVIEW_AGENT"]
with open(count_dir / (agent + ".count"), "a") as fh:
    fh.write("run\\n")
time.sleep({sleep!r})
solution = {solution!r}
if solution is not None:
    pathlib.Path("calc.py").write_text(solution)
"""
    return write(path, body)


def invocations(count_dir: Path, agent: str) -> int:
    """How many times agent ``agent`` was started."""
    f = count_dir / f"{agent}.count"
    return len(f.read_text().splitlines()) if f.exists() else 0


def ledger_rows(state_dir: Path, query: str, args: tuple = ()) -> list[sqlite3.Row]:
    """Rows from the run's ledger."""
    db = sqlite3.connect(state_dir / "ledger.db")
    db.row_factory = sqlite3.Row
    try:
        return db.execute(query, args).fetchall()
    finally:
        db.close()


GIT_AS_TESTER = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]


def stub_project(path: Path) -> Path:
    """A git repository at ``path`` with one commit: calc.py whose add() is a stub."""
    write(path / "calc.py", "def add(a, b):\n    raise NotImplementedError\n")
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    subprocess.run([*GIT_AS_TESTER, "-C", str(path), "add", "-A"], check=True)
    subprocess.run([*GIT_AS_TESTER, "-C", str(path), "commit", "-qm", "stub"], check=True)
    return path


def git_branches(git_dir: Path) -> list[str]:
    """Every branch in a repository."""
    out = subprocess.run(
        ["git", "--git-dir", str(git_dir), "for-each-ref", "--format=%(refname:short)", "refs/heads/"],
        capture_output=True, text=True, check=True,
    ).stdout
    return out.split()


def git_worktrees(git_dir: Path) -> list[str]:
    """Every worktree path git knows for a repository."""
    out = subprocess.run(
        ["git", "--git-dir", str(git_dir), "worktree", "list", "--porcelain"],
        capture_output=True, text=True, check=True,
    ).stdout
    return [line.split(" ", 1)[1] for line in out.splitlines() if line.startswith("worktree ")]


def approve_all_reviewer(path: Path) -> str:
    """A command reviewer spec that approves whatever it is shown."""
    write(path, 'import json\nprint(json.dumps({"verdict": "approve", "confidence": 0.9, "concerns": []}))\n')
    return f"command:{{python}} {path}"


def watch_agents(suite: Path, *writable: Path, env: tuple[str, ...] = ("CROSSREVIEW_COUNT_DIR",)) -> None:
    """Let a test watch agents from outside their sandbox: ``writable`` folders (created) and the
    ``env`` variable names go into the suite's crossreview.toml (sandbox_writable, sandbox_env)."""
    for d in writable:
        d.mkdir(parents=True, exist_ok=True)
    cfg = suite / "crossreview.toml"
    before = cfg.read_text() if cfg.exists() else ""
    write(cfg, before + f"sandbox_writable = {json.dumps([str(d) for d in writable])}\n"
                        f"sandbox_env = {json.dumps(list(env))}\n")


@pytest.fixture
def unsandboxed():
    """For in-process tests that watch a command from the host (pids, files outside its worktree):
    this process runs commands as with --sandbox=off. The sandbox has tests of its own (test_sandbox.py)."""
    from crossreview import sandbox

    old = sandbox.current_settings()
    sandbox.configure(sandbox.SandboxSettings(mode="off"))
    yield
    sandbox.configure(old)


def read_until(fd: int, needle: bytes, buf: bytearray, timeout: float = 90) -> None:
    """Read a pty into ``buf`` until ``needle`` shows up (bounded by ``timeout``)."""
    deadline = time.monotonic() + timeout
    while needle not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"never saw {needle!r}; got:\n{buf.decode(errors='replace')[-3000:]}")
        if select.select([fd], [], [], min(left, 1.0))[0]:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            buf.extend(chunk)


_HEAVY_PROBE = """
import sys
from crossreview.cli import main
sys.argv = ["crossreview", *{args!r}]
try:
    main()
except SystemExit:
    pass
heavy = sorted({{m.split(".")[0] for m in sys.modules}} & {{"litellm", "langgraph", "git", "langchain_core", "psycopg"}})
print("HEAVY=" + ",".join(heavy))
"""


def heavy_imports(args: list[str]) -> subprocess.CompletedProcess:
    """Run `crossreview ARGS` in a child that prints the heavy modules it imported (``HEAVY=...``)."""
    return subprocess.run([sys.executable, "-c", _HEAVY_PROBE.format(args=args)], capture_output=True,
                          text=True, env=cli_env(), timeout=60)


# --- an installed plugin, real to importlib.metadata: entry point and package name -------------

BROKEN_PLUGINS = {
    # A plugin author's mistakes, each one a module for fake_installed_plugin: name: (module source, what
    # crossreview's error must say). test_plugins checks every one; other tests install "boom" (never imports).
    "typo": ("from crossreview.hookspecs import hookimpl\n"
             "@hookimpl\ndef crossreview_register_agent(register):\n    pass\n",
             ["plugin 'typo'", "crossreview-typo", "crossreview_register_agent,",
              "did you mean crossreview_register_agents"]),
    "argname": ("from crossreview.hookspecs import hookimpl\n"
                "@hookimpl\ndef crossreview_register_agents(reg):\n    pass\n",
                ["plugin 'argname'", "crossreview-argname", "def crossreview_register_agents(register)"]),
    "boom": ("import no_such_module_for_crossreview\n",
             ["plugin 'boom'", "cannot be imported", "no_such_module_for_crossreview", "pip uninstall crossreview-boom"]),
    "twice": ("from crossreview.hookspecs import hookimpl\n"
              "@hookimpl\ndef crossreview_register_agents(register):\n    register('oracle', object, help='mine')\n",
              ["plugin 'twice'", "crossreview-twice", "agent kind 'oracle'", "crossreview.default_plugins.offline_agents",
               "another name"]),
    "selftwice": ("from crossreview.hookspecs import hookimpl\n"
                  "@hookimpl\ndef crossreview_register_policies(register):\n"
                  "    class P:\n        def decide(self, c, v): pass\n"
                  "    register('mine', P())\n    register('mine', P())\n",
                  ["plugin 'selftwice'", "crossreview-selftwice", "policy 'mine'", "registers already"]),
    "nodeco": ("def crossreview_register_agents(register):\n    register('nodeco', object)\n",
               ["plugin 'nodeco'", "not marked as a hook", "@hookimpl"]),
    "regbad": ("from crossreview.hookspecs import hookimpl\n"
               "@hookimpl\ndef crossreview_register_agents(register):\n    register('regbad')\n",
               ["plugin 'regbad'", "crossreview-regbad", "TypeError", "register(name, factory, help=...)"]),
}


def fake_installed_plugin(root: Path, name: str, source: str) -> Path:
    """A folder that, on PYTHONPATH, is an installed package declaring the crossreview entry point NAME."""
    site = root / f"site-{name}"
    info = site / f"crossreview_{name}-0.1.dist-info"
    info.mkdir(parents=True)
    (site / f"crossreview_{name}.py").write_text(source)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: crossreview-{name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[crossreview]\n{name} = crossreview_{name}\n")
    return site


# --- a crossreview process SIGKILLed at the worst moment of starting a sandbox -------------

KILL_MOMENTS = ("before-bwrap", "bwrap-releasing-its-sandbox", "bwrap-setting-up-its-sandbox")
"""Where ``killing_bwrap`` kills crossreview: before bwrap runs (it has not armed
--die-with-parent); in the outer bwrap after it armed its death signal, before it lets its
freshly cloned sandbox process go; in that sandbox process during its setup, before the
sandbox's init armed its own. Each window is milliseconds or less in real life."""

_KILLING_BWRAP = r'''#!{python}
"""bwrap, but for a command naming {trigger!r} it first SIGKILLs crossreview (moment {moment!r})."""
import json, os, signal, sys, time

REAL, TRIGGER, TARGET, MOMENT = {real!r}, {trigger!r}, {target!r}, {moment!r}
args = sys.argv[1:]
if TRIGGER not in " ".join(args):
    os.execv(REAL, [REAL, *args])


def crossreview():
    """The nearest ancestor whose command line names TARGET."""
    pid = os.getppid()
    for _ in range(50):
        try:
            if TARGET in open(f"/proc/{{pid}}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace"):
                return pid
            pid = int(open(f"/proc/{{pid}}/stat").read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    sys.exit("crossreview not found among the ancestors")


def kill_and_wait_until_dead(pid):
    """Until every thread of it has exited: a death signal goes with the thread that forked."""
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            states = [open(f"/proc/{{pid}}/task/{{t}}/stat").read().rsplit(")", 1)[1].split()[0]
                      for t in os.listdir(f"/proc/{{pid}}/task")]
        except OSError:
            return
        if all(state in "ZX" for state in states):
            return
        time.sleep(0.01)


target = crossreview()
if MOMENT == "before-bwrap":
    kill_and_wait_until_dead(target)
    os.execv(REAL, [REAL, "--setenv", "CROSSREVIEW_TEST_LINGER", "1", *args])

# bwrap writes --info-fd right after arming its death signal. With --userns-block-fd it then
# waits on that fd before releasing its sandbox process; with --block-fd the sandbox process
# waits on it at the end of its setup, before the sandbox's init arms its own death signal.
info_r, info_w = os.pipe()
block_r, block_w = os.pipe()
extra = ["--setenv", "CROSSREVIEW_TEST_LINGER", "1", "--info-fd", str(info_w)]
if MOMENT == "bwrap-releasing-its-sandbox":
    extra += ["--unshare-user", "--userns-block-fd", str(block_r)]
else:
    extra += ["--block-fd", str(block_r)]
if os.fork() == 0:
    os.close(info_w)
    os.close(block_r)
    text = b""
    deadline = time.monotonic() + 30
    child = None
    while child is None and time.monotonic() < deadline:
        chunk = os.read(info_r, 4096)
        if not chunk:
            break
        text += chunk
        try:
            child = json.loads(text)["child-pid"]
        except ValueError:
            pass
    while MOMENT == "bwrap-setting-up-its-sandbox" and child and time.monotonic() < deadline:
        try:  # until it blocks on the pipe
            if "pipe" in open(f"/proc/{{child}}/wchan").read():
                break
        except OSError:
            break
        time.sleep(0.01)
    kill_and_wait_until_dead(target)
    os.write(block_w, b"x")
    os._exit(0)
os.close(info_r)
os.close(block_w)
os.set_inheritable(info_w, True)
os.set_inheritable(block_r, True)
os.execv(REAL, [REAL, *extra, *args])
'''


def killing_bwrap(path: Path, trigger: str, target: str, moment: str) -> Path:
    """A stand-in for bwrap ($CROSSREVIEW_BWRAP) that, started for a command naming ``trigger``,
    SIGKILLs its nearest ancestor whose command line names ``target`` at ``moment`` (one of
    ``KILL_MOMENTS``), then lets the real bwrap go on, with CROSSREVIEW_TEST_LINGER=1 in the
    command's environment (a command can linger, to show it was left running). Other commands
    get the real bwrap."""
    import shutil

    real = shutil.which("bwrap")
    assert real and moment in KILL_MOMENTS
    write(path, _KILLING_BWRAP.format(python=sys.executable, real=real, trigger=trigger, target=target, moment=moment))
    path.chmod(0o755)
    return path


def wait_for(predicate, timeout: float = 60.0, what: str = "condition", every: float = 0.05) -> None:
    """Poll ``predicate`` until it holds, at most ``timeout`` seconds; fail naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def live_processes_naming(text: str) -> dict[int, str]:
    """Live processes (not zombies) whose command line holds ``text``: PID -> command line."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if text in cmd and state not in ("Z", "X"):
            found[int(entry)] = cmd
    return found


def processes_naming(text: str) -> list[int]:
    """PIDs of live processes (not zombies) whose command line holds ``text``."""
    return list(live_processes_naming(text))


def wait_until_none_left(text: str, seconds: float = 10) -> list[str]:
    """Wait (bounded) until no process names ``text``; returns the command lines of those left, killing them."""
    import signal

    deadline = time.monotonic() + seconds
    while processes_naming(text) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = []
    for pid in processes_naming(text):
        try:
            left.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return left
