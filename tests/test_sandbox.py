"""crossreview.sandbox: the bwrap command line, the environment, and real escape attempts.

The escape tests run a hostile agent, a hostile reviewer and a hostile test
file (tests/hostile/escape.py) through `crossreview run`, then judge from
outside: files that appeared, connections a listener on 127.0.0.1 saw, the
main repository's refs, hooks and config, and secrets found anywhere
crossreview recorded. The same run with --sandbox=off is the control: it
shows the probes do get out when nothing stops them.

Tests that need bubblewrap skip, saying why, where it cannot run.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import KILL_MOMENTS, cli_env, killing_bwrap, make_task, wait_until_none_left, write

from crossreview import sandbox
from crossreview.agents import Workspace
from crossreview.models import AgentSpec, Task
from crossreview.sandbox import (
    SandboxPolicy,
    SandboxSettings,
    build_bwrap_argv,
    command_paths,
    plan_mounts,
    sandbox_env,
)

BWRAP_OK, BWRAP_WHY = sandbox.availability()
needs_bwrap = pytest.mark.skipif(not BWRAP_OK, reason=f"bubblewrap cannot run here: {BWRAP_WHY}")
HOSTILE = Path(__file__).resolve().parent / "hostile"
KEY_NAME = "SUPER_SECRET_API_KEY"


# --- the command line and the environment, as pure functions ----------------------


def _index(argv: list[str], *items: str) -> int:
    for i in range(len(argv) - len(items) + 1):
        if argv[i:i + len(items)] == list(items):
            return i
    raise AssertionError(f"{items} not in {argv}")


def test_bwrap_argv_shape():
    wt = Path("/home/u/proj/.crossreview/worktrees/r-1/add/a")
    policy = SandboxPolicy(
        writable=(wt, Path("/tmp/crossreview-instruction-x")),
        readable=(Path("/home/u/proj/tasks"), Path("/home/u/proj/.crossreview/repos/add.git"), wt / ".git"),
        masked=(Path("/home/u/proj/tasks/add/solution"), Path("/home/u/proj/tasks/add/holdout")),
    )
    hidden = [Path("/tmp"), Path("/home/u"), Path("/home/u/proj/.crossreview")]
    argv = build_bwrap_argv(["/bin/sh", "-c", "echo hi"], wt, plan_mounts(policy, hidden), network=False)
    assert argv[:9] == ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs"]
    # parents before children: hide $HOME, put the suite back, hide the state, put the worktree back
    home = _index(argv, "--tmpfs", "/home/u")
    suite = _index(argv, "--ro-bind", "/home/u/proj/tasks", "/home/u/proj/tasks")
    state = _index(argv, "--tmpfs", "/home/u/proj/.crossreview")
    repo = _index(argv, "--ro-bind", "/home/u/proj/.crossreview/repos/add.git", "/home/u/proj/.crossreview/repos/add.git")
    tree = _index(argv, "--bind", str(wt), str(wt))
    pointer = _index(argv, "--ro-bind", str(wt / ".git"), str(wt / ".git"))  # the pointer stays read-only
    assert home < suite and home < state < repo and state < tree < pointer
    assert _index(argv, "--tmpfs", "/tmp") < _index(argv, "--bind", "/tmp/crossreview-instruction-x", "/tmp/crossreview-instruction-x")
    assert _index(argv, "--tmpfs", "/home/u/proj/tasks/add/solution") > _index(argv, "--ro-bind", "/home/u/proj/tasks", "/home/u/proj/tasks")
    assert "--unshare-all" in argv and "--share-net" not in argv
    assert "--die-with-parent" in argv and "--new-session" in argv
    assert argv[_index(argv, "--chdir") + 1] == str(wt)
    assert argv[-4:] == ["--", "/bin/sh", "-c", "echo hi"]
    assert not any(a.startswith("--setenv") or a == "--clearenv" for a in argv)  # secrets never on a command line
    with_net = build_bwrap_argv(["true"], wt, [], network=True)
    assert with_net[with_net.index("--unshare-all") + 3] == "--share-net"
    assert argv[_index(argv, "--cap-drop") + 1] == "ALL"


def test_plan_mounts_precedence_and_missing_paths():
    p = Path("/x/task/holdout")
    policy = SandboxPolicy(readable=(p,), writable=(p,), masked=(p, Path("/x/secret.txt")))
    mounts = plan_mounts(policy, [Path("/x")], is_dir=lambda q: q.suffix != ".txt")
    assert ("tmpfs", p) in mounts and ("ro", p) not in mounts and ("rw", p) not in mounts
    assert ("null", Path("/x/secret.txt")) in mounts  # a masked file: /dev/null over it
    assert plan_mounts(policy, [Path("/x")], exists=lambda q: q == Path("/x")) == [("tmpfs", Path("/x"))]


def test_sandbox_env_is_an_allowlist():
    environ = {
        "PATH": "/usr/bin", "LANG": "C.UTF-8", "HOME": "/home/u", "TERM": "xterm",
        "OPENAI_API_KEY": "sk-1", "ANTHROPIC_API_KEY": "sk-2", "AWS_SECRET_ACCESS_KEY": "x", "GITHUB_TOKEN": "t",
        "PYTHONPATH": "/evil", "LD_PRELOAD": "/evil.so", "HTTPS_PROXY": "http://p", "SSH_AUTH_SOCK": "/s",
    }
    env = sandbox_env(environ, SandboxPolicy(), {"CROSSREVIEW_TASK_ID": "t"}, python_bindir="/venv/bin")
    assert env["PATH"] == "/venv/bin:/usr/bin" and env["LANG"] == "C.UTF-8" and env["HOME"] == "/home/u"
    assert env["CROSSREVIEW_TASK_ID"] == "t" and env["PYTHONDONTWRITEBYTECODE"] == "1"
    for gone in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "AWS_SECRET_ACCESS_KEY", "GITHUB_TOKEN", "PYTHONPATH",
                 "LD_PRELOAD", "HTTPS_PROXY", "SSH_AUTH_SOCK"):
        assert gone not in env
    # an agent configured for one key gets that key (and, with network, proxies), nothing else
    env = sandbox_env(environ, SandboxPolicy(network=True, env_allow=("ANTHROPIC_API_KEY",)))
    assert env["ANTHROPIC_API_KEY"] == "sk-2" and env["HTTPS_PROXY"] == "http://p"
    assert "OPENAI_API_KEY" not in env and "GITHUB_TOKEN" not in env


def test_command_paths_binds_what_the_user_named(tmp_path):
    script = write(tmp_path / "agents" / "solve.py", "")
    home = tmp_path / "home"
    home.mkdir()
    write(home / "tool.sh", "")
    cmd = f"/usr/bin/env python {script} --config={tmp_path / 'agents'} {home / 'tool.sh'} relative.py"
    got = command_paths(cmd, environ={"HOME": str(home)})
    assert script.parent.resolve() in got  # a script's folder comes with it
    assert (home / "tool.sh").resolve() in got and home.resolve() not in got  # never a whole hidden root
    assert all(p.is_absolute() for p in got)


def _task(tmp_path: Path, visible: bool = False) -> Task:
    toml = 'version = "1.0"\n[verifier]\ntests_visible = true\n' if visible else ""
    d = make_task(tmp_path / "suite", toml=toml, holdout={"test_h.py": "def test_h():\n    pass\n"})
    from crossreview.tasks import load_task

    task = load_task(d)
    assert isinstance(task, Task), task
    return task


def test_agent_reviewer_verifier_policies_mask_what_each_must_not_see(tmp_path):
    task = _task(tmp_path)
    wt = tmp_path / "wt"
    wt.mkdir()
    ws = Workspace(path=wt, task=task, agent=AgentSpec(name="a", spec="command:x"), instruction="",
                   timeout=1, suite_dir=task.path.parent)
    p = sandbox.agent_policy(ws)
    assert {task.tests_dir, task.solution_dir, task.holdout_dir} <= set(p.masked)
    assert wt in p.writable and task.path.parent in p.readable and not p.network
    assert task.solution_dir not in sandbox.agent_policy(ws, reveal_solution=True).masked  # the oracle
    visible = _task(tmp_path / "v", visible=True)
    ws_v = Workspace(path=wt, task=visible, agent=ws.agent, instruction="", timeout=1, suite_dir=visible.path.parent)
    assert visible.tests_dir not in sandbox.agent_policy(ws_v).masked
    v = sandbox.verifier_policy(task, wt, tmp_path / "junit")
    assert {task.solution_dir, task.holdout_dir} <= set(v.masked) and not v.network
    # network and a key only for agents configured (or known presets)
    assert sandbox.agent_policy(Workspace(path=wt, task=task, agent=AgentSpec(name="c", spec="claude-code"),
                                          instruction="", timeout=1, suite_dir=task.path.parent)).network
    old = sandbox.current_settings()
    try:
        sandbox.configure(SandboxSettings(mode="off", network={"a": ("OPENAI_API_KEY",)}))
        p = sandbox.agent_policy(ws)
        assert p.network and p.env_allow == ("OPENAI_API_KEY",)
    finally:
        sandbox.configure(old)


# --- real sandboxes -------------------------------------------------------------------


@needs_bwrap
def test_run_confined_hides_home_tmp_and_secrets_and_blocks_network(tmp_path, monkeypatch):
    home = tmp_path / "home"
    write(home / ".secret", "hunter2")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv(KEY_NAME, "sk-live-123")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    port = server.getsockname()[1]
    script = (
        "import os, socket, pathlib\n"
        "print('home', os.listdir(os.path.expanduser('~')))\n"
        f"print('key', os.environ.get({KEY_NAME!r}))\n"
        "try:\n"
        f"    socket.create_connection(('127.0.0.1', {port}), timeout=2); print('net open')\n"
        "except OSError as e: print('net blocked', e.errno)\n"
        f"open({str(tmp_path / 'out.txt')!r}, 'w').write('x')\n"  # lands in the sandbox's private /tmp
        f"try:\n    open({str(Path(sys.prefix) / 'pwned.txt')!r}, 'w'); print('wrote outside')\n"
        "except OSError as e: print('write blocked', e.errno)\n"
        "pathlib.Path('inside.txt').write_text('ok')\n"
    )
    try:
        res = sandbox.run_confined([sys.executable, "-c", script], cwd=work, timeout=30)
    finally:
        server.close()
    assert res.sandboxed and res.returncode == 0, res.stderr
    assert "home []" in res.stdout and "key None" in res.stdout
    assert "net blocked" in res.stdout and "write blocked" in res.stdout, res.stdout
    assert (work / "inside.txt").read_text() == "ok"
    assert not (tmp_path / "out.txt").exists() and not (Path(sys.prefix) / "pwned.txt").exists()


def test_off_mode_and_fallback_env(tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_NAME, "sk-live-123")
    old = sandbox.current_settings()
    try:
        sandbox.configure(SandboxSettings(mode="off"))
        res = sandbox.run_confined(f"echo ${KEY_NAME}", cwd=tmp_path, timeout=10, shell=True)
        assert res.stdout.strip() == "sk-live-123" and not res.sandboxed  # off: the old, full environment
    finally:
        sandbox.configure(old)


# --- the escape arena -------------------------------------------------------------


class Listener:
    """A TCP listener on 127.0.0.1 that records who connected."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.seen: list[str] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    self.seen.append(conn.recv(200).decode(errors="replace").strip() or "?")
                except OSError:
                    self.seen.append("?")

    def close(self):
        self._stop.set()
        self.thread.join(timeout=5)
        self.sock.close()


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout


def _repo_fingerprint(repo: Path) -> dict:
    """What a hostile candidate must not change in the main repository (crossreview's own branches aside)."""
    git_dir = repo / ".git"
    refs = [r for r in _git(repo, "for-each-ref", "--format=%(refname) %(objectname)").splitlines()
            if not r.startswith("refs/heads/crossreview/")]
    hooks = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((git_dir / "hooks").iterdir())}
    return {"refs": refs, "hooks": hooks, "config": (git_dir / "config").read_text(),
            "HEAD": (git_dir / "HEAD").read_text(), "status": _git(repo, "status", "--porcelain"),
            "files": sorted(p.name for p in repo.iterdir())}


def _arena(tmp_path: Path) -> dict:
    """A suite with one task on an existing git repository, secrets in $HOME and the environment, a listener."""
    a: dict = {"tmp": tmp_path, "secret": "s3cret-" + secrets.token_hex(8), "ssh": "ssh-" + secrets.token_hex(8),
               "key": "sk-live-" + secrets.token_hex(12)}
    home = tmp_path / "home"
    write(home / ".secret", a["secret"] + "\n")
    write(home / ".ssh" / "id_rsa", a["ssh"] + "\n")
    for name in ("outside", "markers"):
        (tmp_path / name).mkdir()
    repo = tmp_path / "mainrepo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    write(repo / "calc.py", "def add(a, b):\n    raise NotImplementedError\n")
    _git(repo, "add", "-A")
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "base"], cwd=repo, check=True)
    suite = tmp_path / "suite"
    task_dir = make_task(suite, "escape", toml=f'version = "1.0"\n[repo]\npath = "{repo}"\n',
                         tests={}, holdout={"test_holdout.py": "def test_h():\n    pass\n"})
    state = tmp_path / ".crossreview"
    listener = Listener()
    cfg = {
        "write_dirs": [str(tmp_path / "outside"), str(repo), str(task_dir), str(suite), str(state), str(home)],
        "secret_file": str(home / ".secret"), "key_name": KEY_NAME, "port": listener.port,
        "main_git_dir": str(repo / ".git"), "marker_dir": str(tmp_path / "markers"), "task_dir": str(task_dir),
    }
    bindir = tmp_path / "hostile"
    bindir.mkdir()
    shutil.copy(HOSTILE / "escape.py", bindir / "escape.py")
    (bindir / "escape.json").write_text(json.dumps(cfg))
    source = (HOSTILE / "escape.py").read_text()
    write(task_dir / "tests" / "test_escape.py", (
        "import json\n"
        f"CFG = json.loads({json.dumps(cfg)!r})\n"
        f"NS = {{'__name__': 'escape_probes'}}\n"
        f"exec(compile({source!r}, 'escape.py', 'exec'), NS)\n\n"
        "def _probe(name):\n"
        "    got = NS['PROBES'][name](CFG, 'verifier')\n"
        "    assert not got, 'LOOT ' + json.dumps(got)\n\n"
        + "".join(f"def test_{name}():\n    _probe({name!r})\n\n" for name in
                  ("write", "secret", "env", "network", "git", "hidden"))
    ))
    a.update(home=home, repo=repo, suite=suite, task_dir=task_dir, state=state, listener=listener, cfg=cfg,
             agent=f"command:{{python}} {bindir / 'escape.py'} agent",
             reviewer=f"command:{{python}} {bindir / 'escape.py'} reviewer",
             before=_repo_fingerprint(repo))
    return a


def _run_arena(a: dict, *extra: str) -> subprocess.CompletedProcess:
    """Run the arena; an escalation is then rejected, so the ledger records everything."""
    env = cli_env({"HOME": str(a["home"]), KEY_NAME: a["key"]})

    def crossreview(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "crossreview", *args], cwd=a["tmp"], env=env,
                              capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL)

    res = crossreview("run", str(a["suite"]), "--json", "--agent", f"h1={a['agent']}", "--agent",
                      f"h2={a['agent']}", "--reviewer", a["reviewer"], *extra)
    if res.returncode == 3:
        esc = json.loads(res.stdout)["tasks"][0]["escalation"]
        decided = crossreview("decide", esc, "--reject", *extra)
        assert decided.returncode == 1, decided.stderr
    return res


def _everything_recorded(a: dict) -> str:
    """Every byte crossreview kept: the ledger and the checkpoints (with their WAL files)."""
    blobs = []
    for f in sorted(a["state"].glob("*.db*")):
        blobs.append(f.read_bytes().decode("latin-1"))
    return "\n".join(blobs)


def _judge(a: dict) -> dict[tuple[str, str], bool]:
    """(actor, probe) -> escaped?, judged from outside the sandbox."""
    a["listener"].close()
    recorded = _everything_recorded(a)
    db = sqlite3.connect(a["state"] / "ledger.db")
    diffs = "\n".join(r[0] for r in db.execute("SELECT diff FROM candidates"))
    concerns = "\n".join(r[0] for r in db.execute("SELECT concerns FROM verdicts"))
    messages = "\n".join(r[0] for r in db.execute("SELECT message FROM test_outcomes WHERE suite='tests'"))
    db.close()
    channels = {"agent": diffs, "verifier": messages, "reviewer": concerns}
    after = _repo_fingerprint(a["repo"])
    markers = sorted(p.name for p in (a["tmp"] / "markers").iterdir())
    written = [p for d in a["cfg"]["write_dirs"] for p in Path(d).glob("pwned-*")]
    verdict: dict[tuple[str, str], bool] = {}
    for actor, channel in channels.items():
        verdict[(actor, "write outside the worktree")] = any(f"pwned-{actor}" in p.name for p in written)
        verdict[(actor, "read a secret file in $HOME")] = a["secret"] in channel or a["ssh"] in channel
        verdict[(actor, "read the API key from the environment")] = a["key"] in channel
        verdict[(actor, "connect to 127.0.0.1")] = any(actor in s for s in a["listener"].seen)
        verdict[(actor, "modify the main repository through .git")] = (
            any(actor in m for m in markers)
            or any(actor in r for r in after["refs"] if r not in a["before"]["refs"])
            or (actor == "agent" and (after["hooks"] != a["before"]["hooks"] or after["config"] != a["before"]["config"]))
        )
    verdict[("any", "secret or key anywhere crossreview recorded")] = any(
        s in recorded for s in (a["secret"], a["ssh"], a["key"]))
    verdict[("any", "main repository changed")] = after != a["before"]
    return verdict


@needs_bwrap
@needs_bwrap
def test_a_sandboxed_command_has_no_capabilities_even_when_run_by_root(tmp_path):
    # Run by root (CI containers), a command keeping its capabilities could
    # unmount the mask over a hidden folder and remount / writable.
    hidden = tmp_path / "hidden"
    write(hidden / "secret.txt", "hunter2")
    work = tmp_path / "work"
    work.mkdir()
    script = (
        "import ctypes, os, pathlib\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "caps = [l.split()[1] for l in open('/proc/self/status') if l.startswith('CapEff')][0]\n"
        f"umount = libc.umount2({str(hidden).encode()!r}, 2)\n"
        "remount = libc.mount(None, b'/', None, 32 | 4096, None)\n"
        f"seen = pathlib.Path({str(hidden / 'secret.txt')!r}).exists()\n"
        "print(caps, umount, remount, seen)\n"
    )
    policy = sandbox.base_policy(work).mask(hidden)
    res = sandbox.run_confined([sys.executable, "-c", script], cwd=work, timeout=30, policy=policy)
    assert res.sandboxed and res.returncode == 0, res.stderr
    assert res.stdout.split() == ["0000000000000000", "-1", "-1", "False"], res.stdout


def test_hostile_agent_reviewer_and_test_file_cannot_escape(tmp_path):
    a = _arena(tmp_path)
    try:
        res = _run_arena(a)
    finally:
        a["listener"].close()
    assert res.returncode in (0, 1, 3), res.stderr
    assert "UNSANDBOXED" not in res.stderr
    verdict = _judge(a)
    escaped = sorted(k for k, v in verdict.items() if v)
    blocked = sum(1 for v in verdict.values() if not v)
    print(f"\nescapes blocked: {blocked}/{len(verdict)}")
    for (actor, probe), v in sorted(verdict.items()):
        print(f"  {'ESCAPED' if v else 'blocked'}  {actor:9} {probe}")
    assert not escaped, escaped
    # What the agent saw of the task: nothing hidden (tests/, solution/, holdout/ masked).
    db = sqlite3.connect(a["state"] / "ledger.db")
    diffs = [r[0] for r in db.execute("SELECT diff FROM candidates")]
    outcomes = dict(db.execute("SELECT name, outcome FROM test_outcomes WHERE suite='tests' AND agent='h1'").fetchall())
    concerns = [json.loads(r[0]) for r in db.execute("SELECT concerns FROM verdicts")]
    db.close()
    assert len(diffs) == 2 and all("escape_report.json" in d for d in diffs)
    report = json.loads("".join(line[1:] for line in diffs[0].splitlines()
                                if line.startswith("+") and not line.startswith("+++")))
    assert report["hidden"] == [] and report["env"] == [] and report["secret"] == [] and report["network"] == []
    assert report["git"] == [], report["git"]  # no hook, config, ref, commit or pointer change went through
    # the test file's loot-bearing probes found nothing (their failure message would carry it)
    for name in ("secret", "env", "network", "hidden", "git"):
        assert outcomes[f"test_escape::test_{name}"] == "passed", outcomes
    # a reviewer never sees holdout/ or solution/
    assert concerns and not any("holdout" in c or "solution" in c for cs in concerns for c in cs)


@needs_bwrap
def test_control_without_the_sandbox_the_probes_do_get_out(tmp_path):
    """The same arena with --sandbox=off: shows the escape test would notice an escape."""
    a = _arena(tmp_path)
    try:
        res = _run_arena(a, "--sandbox", "off")
    finally:
        a["listener"].close()
    assert res.returncode in (0, 1, 3), res.stderr
    verdict = _judge(a)
    print(f"\ncontrol (--sandbox=off): escaped {sum(verdict.values())}/{len(verdict)}")
    for actor in ("agent", "verifier", "reviewer"):
        assert verdict[(actor, "connect to 127.0.0.1")], a["listener"].seen
        assert verdict[(actor, "read the API key from the environment")]
        assert verdict[(actor, "read a secret file in $HOME")]
        assert verdict[(actor, "write outside the worktree")]
    assert verdict[("agent", "modify the main repository through .git")]
    # Even unsandboxed, the .git the agent swapped in never ran: crossreview restored the pointer
    # before running git there, and the candidate is flagged.
    assert not any(m.startswith("fsmonitor") for m in os.listdir(a["tmp"] / "markers"))
    tasks = json.loads(res.stdout)["tasks"]
    assert tasks[0]["decision"] != "accepted"


# --- --sandbox modes where bubblewrap cannot run -------------------------------------


def test_auto_warns_loudly_and_required_refuses_without_bwrap(cli, suite, tmp_path):
    make_task(suite)
    env = {"CROSSREVIEW_BWRAP": str(tmp_path / "no-such-bwrap")}
    res = cli("run", str(suite), "--agent", "oracle", "--json", env=env)
    assert res.returncode == 0, res.stderr
    assert "WARNING" in res.stderr and "UNSANDBOXED" in res.stderr and "--sandbox=required" in res.stderr
    assert res.json()["tasks"][0]["decision"] == "accepted"
    res = cli("run", str(suite), "--agent", "oracle", "--sandbox", "required", env=env)
    assert res.returncode == 2 and "--sandbox=required" in res.stderr and "bubblewrap" in res.stderr
    assert "Traceback" not in res.stderr
    runs = sqlite3.connect(tmp_path / ".crossreview" / "ledger.db").execute("SELECT count(*) FROM runs").fetchone()[0]
    assert runs == 1  # the refused run never started
    write(suite / "crossreview.toml", 'sandbox = "required"\n')
    res = cli("run", str(suite), "--agent", "oracle", env=env)
    assert res.returncode == 2 and "--sandbox=required" in res.stderr
    res = cli("run", str(suite), "--agent", "oracle", "--sandbox", "off", "--json", env=env)
    assert res.returncode == 0 and "WARNING" not in res.stderr  # the flag wins over the file


# --- hard timeouts kill whole trees ------------------------------------------------


def _procs_with(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker.encode() in cmd and state not in ("Z", "X"):
            found.append(int(entry))
    return found


def _hung_program(marker: str) -> str:
    """Python that leaves a child in its own session (out of reach of killpg), then hangs."""
    return (
        "import subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)', '{marker}-child'],"
        " start_new_session=True)\n"
        f"subprocess.Popen(['sleep', '600', '{marker}-grandchild'])\n"
        "time.sleep(600)\n"
    )


@pytest.mark.parametrize("mode", ["auto", "off"])
def test_hung_agent_and_hung_verifier_are_killed_with_their_children(cli, suite, tmp_path, mode):
    if mode == "auto" and not BWRAP_OK:
        pytest.skip(f"bubblewrap cannot run here: {BWRAP_WHY}")
    marker = "crhang" + secrets.token_hex(4)
    make_task(suite, "hang", toml='version = "1.0"\n[agent]\ntimeout_sec = 3\n[verifier]\ntimeout_sec = 3\n',
              tests={"test_hang.py": "import calc\n\n" + _hung_program(marker + "-verifier").replace(
                  "time.sleep(600)\n", "") + "\ndef test_hangs():\n    time.sleep(600)\n"})
    agent = write(tmp_path / "hung_agent.py", _hung_program(marker + "-agent"))
    started = time.monotonic()
    res = cli("run", str(suite), "--json", "--sandbox", mode,
              "--agent", f"hung=command:{{python}} {agent}", "--agent", "oracle=oracle")
    elapsed = time.monotonic() - started
    assert res.returncode in (0, 1, 3), res.stderr
    task = res.json()["tasks"][0]
    cands = {c["agent"]: c for c in task["candidates"]}
    assert cands["hung"]["status"] == "timeout"
    assert cands["hung"]["seconds"] < 20
    assert cands["oracle"]["status"] == "ok" and cands["oracle"]["tests_passed"] == 0  # its verifier was killed
    assert task["decision"] != "accepted" and elapsed < 60
    deadline = time.monotonic() + 5
    while _procs_with(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _procs_with(marker) == [], "left running: " + ", ".join(
        Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode() for p in _procs_with(marker))
    db = sqlite3.connect(tmp_path / ".crossreview" / "ledger.db")
    assert db.execute("SELECT status FROM candidates WHERE agent='hung'").fetchone()[0] == "timeout"
    db.close()


@needs_bwrap
def test_only_an_agent_configured_for_network_gets_it_and_only_its_key(cli, tmp_path):
    """The usual layout, all under $HOME (project, state, scripts); one agent may call a model API."""
    write(tmp_path / ".secret", "hunter2\n")
    suite = tmp_path / "proj" / "tasks"
    make_task(suite)
    write(suite / "crossreview.toml", 'network = { net = ["GOOD_API_KEY"] }\n')
    listener = Listener()
    agent = write(tmp_path / "proj" / "agents" / "agent.py", (
        "import json, os, pathlib, socket\n"
        "me = os.environ['CROSSREVIEW_AGENT']\n"
        "report = {'keys': sorted(k for k in os.environ if k.endswith('_API_KEY'))}\n"
        "try:\n"
        f"    socket.create_connection(('127.0.0.1', {listener.port}), timeout=3).sendall(me.encode())\n"
        "    report['net'] = True\n"
        "except OSError:\n"
        "    report['net'] = False\n"
        "try:\n"
        "    report['secret'] = pathlib.Path(os.path.expanduser('~/.secret')).read_text()\n"
        "except OSError:\n"
        "    report['secret'] = None\n"
        "pathlib.Path('report.json').write_text(json.dumps(report))\n"
        "pathlib.Path('calc.py').write_text('def add(a, b):\\n    return a + b\\n')\n"))
    try:
        res = cli("run", str(suite), "--json", "--agent", f"net=command:{{python}} {agent}",
                  "--agent", f"plain=command:{{python}} {agent}",
                  cwd=tmp_path / "proj", env={"HOME": str(tmp_path), "GOOD_API_KEY": "k1", "OTHER_API_KEY": "k2"})
    finally:
        listener.close()
    assert res.returncode == 0, res.stderr
    assert listener.seen == ["net"]
    db = sqlite3.connect(tmp_path / "proj" / ".crossreview" / "ledger.db")
    reports = {}
    for agent_name, diff in db.execute("SELECT agent, diff FROM candidates"):
        line = next(x for x in diff.splitlines() if x.startswith("+{"))
        reports[agent_name] = json.loads(line[1:])
    db.close()
    assert reports["net"] == {"keys": ["GOOD_API_KEY"], "net": True, "secret": None}
    assert reports["plain"] == {"keys": [], "net": False, "secret": None}


# --- crossreview killed while a command starts -----------------------------------------


_PARENT = """
import os, signal, subprocess, sys, time
from pathlib import Path
from crossreview import sandbox

if sys.argv[4] == "between-fork-and-exec":
    class Popen(subprocess.Popen):
        def __init__(self, *args, **kwargs):
            if kwargs.get("start_new_session"):  # the command: this process dies right after the fork
                kwargs["preexec_fn"] = lambda: (os.kill(os.getppid(), signal.SIGKILL), time.sleep(1))
            super().__init__(*args, **kwargs)

    subprocess.Popen = Popen
sandbox.configure(mode=sys.argv[1])
sandbox.run_confined([sys.executable, "-c", sys.argv[3]], cwd=Path(sys.argv[2]), timeout=300)
"""

_KILL_ANCESTOR = """
import os, signal
pid = os.getppid()
for _ in range(50):
    if {target!r} in open(f"/proc/{{pid}}/cmdline", "rb").read().replace(b"\\0", b" ").decode(errors="replace"):
        os.kill(pid, signal.SIGKILL)
        break
    pid = int(open(f"/proc/{{pid}}/stat").read().rsplit(")", 1)[1].split()[1])
"""


@pytest.mark.parametrize("moment", ["between-fork-and-exec", *KILL_MOMENTS, "unsandboxed"])
def test_a_command_does_not_outlive_crossreview_killed_while_starting_it(moment, tmp_path):
    """SIGKILL crossreview at the worst moments of starting a sandbox (or, without bwrap, while
    the command runs): the command must not go on running, nor anything be left waiting forever.

    bwrap's --die-with-parent alone leaves, in order: bwrap running the command unsupervised
    (the first two moments); bwrap's sandbox process blocked forever; the sandbox running the
    command unsupervised. Without bwrap nothing at all stopped the command.
    """
    marker = "crlinger" + secrets.token_hex(4)
    parent = "crparent" + secrets.token_hex(4)
    work = tmp_path / "work"
    work.mkdir()
    if moment == "unsandboxed":
        mode, bwrap = "auto", tmp_path / "no-such-bwrap"  # the fallback: a loud warning, then no sandbox
        command = _KILL_ANCESTOR.format(target=parent) + f"import time\ntime.sleep(300)  # {marker}\n"
    else:
        if not BWRAP_OK:
            pytest.skip(f"bubblewrap cannot run here: {BWRAP_WHY}")
        mode = "required"
        bwrap = (shutil.which("bwrap") if moment == "between-fork-and-exec"
                 else killing_bwrap(tmp_path / "bwrap", marker, parent, moment))
        command = f"import time\ntime.sleep(300)  # {marker}\n"
    proc = subprocess.run([sys.executable, "-c", _PARENT, mode, str(work), command, moment, parent],
                          env=cli_env({"CROSSREVIEW_BWRAP": str(bwrap)}), capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert wait_until_none_left(marker) == []


def test_a_killed_undertaker_is_replaced_before_the_next_command(tmp_path):
    sandbox.ensure_undertaker()
    first = sandbox._undertaker[1]
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while sandbox._running(first) and time.monotonic() < deadline:
        time.sleep(0.05)
    res = sandbox.run_confined(["true"], cwd=tmp_path, timeout=30)
    assert res.returncode == 0
    assert sandbox._undertaker[1] != first and sandbox._running(sandbox._undertaker[1])


def test_the_undertaker_waits_for_a_fork_of_crossreview_that_has_not_exec_d_yet():
    from crossreview import undertaker

    me, looks = str(os.getpid()), undertaker.looks(os.getpid())
    assert looks and not undertaker.forks_not_yet_execd(me, looks)
    child = os.fork()
    if child == 0:  # as a command is between fork and exec: a session of its own, our looks
        try:
            os.setsid()
            time.sleep(60)
        finally:
            os._exit(0)
    try:
        deadline = time.monotonic() + 30
        while not undertaker.forks_not_yet_execd(me, looks) and time.monotonic() < deadline:
            time.sleep(0.01)  # until it has called setsid
        assert undertaker.forks_not_yet_execd(me, looks)
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
    assert not undertaker.forks_not_yet_execd(me, looks)


def test_kill_leftovers_kills_what_a_dead_owner_left_and_nothing_of_a_live_one():
    gone = subprocess.Popen(["sleep", "60"])
    dead_owner = sandbox.owner_mark(gone.pid)
    gone.kill()
    gone.wait()
    marker = "crleft" + secrets.token_hex(4)
    orphan = subprocess.Popen(["sh", "-c", "exec sleep 60", f"{marker}-orphan"], stderr=subprocess.DEVNULL,
                              env={**os.environ, sandbox.OWNER_ENV: dead_owner})
    kept = subprocess.Popen(["sh", "-c", "exec sleep 60", f"{marker}-kept"], stderr=subprocess.DEVNULL,
                            env={**os.environ, sandbox.OWNER_ENV: sandbox.owner_mark()})
    try:
        assert not sandbox.owner_alive(dead_owner) and sandbox.owner_alive(sandbox.owner_mark())
        assert sandbox.kill_leftovers([]) == 0
        assert sandbox.kill_leftovers([gone.pid, os.getpid()]) == 1
        assert orphan.wait(timeout=30) == -signal.SIGKILL
        assert kept.poll() is None
    finally:
        for p in (orphan, kept):
            p.kill()
            p.wait()


# --- waiting for a command to end ---------------------------------------------


class _CountingPopen(subprocess.Popen):
    polls = 0

    def poll(self):
        type(self).polls += 1
        return super().poll()


def test_wait_for_exit_wakes_when_the_command_ends_not_by_polling():
    _CountingPopen.polls = 0
    proc = _CountingPopen(["sh", "-c", "sleep 0.3; exit 3"])
    assert sandbox.wait_for_exit(proc, timeout=30) is True
    assert proc.returncode == 3
    # One look before waiting, one after the pidfd said it ended: not a poll
    # every few milliseconds (Popen.wait(timeout) sleeps up to 50 ms between looks).
    assert 1 <= _CountingPopen.polls <= 3


def test_wait_for_exit_times_out_and_leaves_the_process_to_the_caller():
    proc = subprocess.Popen(["sleep", "30"])
    try:
        assert sandbox.wait_for_exit(proc, timeout=0.2) is False
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()


def test_wait_for_exit_without_pidfd_falls_back_to_popen(monkeypatch):
    def no_pidfd(pid):
        raise OSError("pidfd_open: not supported here")

    monkeypatch.setattr(sandbox.os, "pidfd_open", no_pidfd, raising=False)
    done = subprocess.Popen(["sh", "-c", "exit 4"])
    assert sandbox.wait_for_exit(done, timeout=30) is True and done.returncode == 4
    slow = subprocess.Popen(["sleep", "30"])
    try:
        assert sandbox.wait_for_exit(slow, timeout=0.2) is False
    finally:
        slow.kill()
        slow.wait()


@needs_bwrap
def test_a_daemons_unix_socket_is_out_of_reach(tmp_path, monkeypatch):
    # Stand-in for /run/docker.sock: a listening socket at a path the sandbox hides.
    sock_path = tmp_path / "docker.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(sock_path))
    listener.listen(1)
    monkeypatch.setattr(sandbox, "DAEMON_SOCKETS", (str(sock_path),))
    work = tmp_path / "work"
    work.mkdir()
    script = (
        "import socket\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        f"try:\n    s.connect({str(sock_path)!r}); print('connected')\n"
        "except OSError as e: print('refused', e.errno)\n"
    )
    policy = sandbox.base_policy(work).allow_read(tmp_path)  # readable: only the hiding keeps it out
    try:
        res = sandbox.run_confined([sys.executable, "-c", script], cwd=work, timeout=30, policy=policy)
    finally:
        listener.close()
    assert res.sandboxed and res.returncode == 0, res.stderr
    assert res.stdout.startswith("refused"), res.stdout
    assert [str(p) for p in sandbox.hidden_paths(sandbox.current_settings(), {}) if p.name == "docker.sock"]


@pytest.mark.parametrize("timeout", [1e300, float("inf")])
def test_a_huge_timeout_means_no_limit_not_a_crash(tmp_path, timeout):
    # task.toml accepts timeout_sec = 1e300 ("never"): poll() once overflowed on it and crashed the suite.
    proc = sandbox.run_confined([sys.executable, "-c", "print('done')"], cwd=tmp_path, timeout=timeout)
    assert proc.returncode == 0 and not proc.timed_out and "done" in proc.stdout
