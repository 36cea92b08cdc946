"""Run a command confined to a directory, with a hard timeout.

Every agent, verifier and command reviewer crossreview starts goes through
``run_confined``. Where bubblewrap (``bwrap``) can create namespaces, the
command runs in a sandbox built from a ``SandboxPolicy``:

- the whole filesystem read-only, with a private, empty /tmp;
- ``$HOME`` (the user's dotfiles, keys, credentials) replaced by an empty,
  throw-away folder; crossreview's state folder (ledger, checkpoints, the
  other candidates' worktrees) hidden the same way;
- writable: only the policy's folders (the candidate's worktree, a scratch
  folder); the worktree's ``.git`` pointer and the repository it points to
  read-only, so nothing inside can rewrite history, hooks or git config;
- the task's hidden folders (tests/ unless visible, solution/, holdout/)
  masked by empty folders;
- no network at all, unless the policy grants it (an agent that must reach a
  model API); loopback included, since a fresh network namespace has its own;
- a cleared environment: a short allowlist (PATH, locale, terminal) plus the
  names the policy passes through (the one API key an agent is configured to
  use) plus what crossreview itself sets (CROSSREVIEW_*);
- a new session and PID namespace, dying with its parent: when the command's
  leader exits or is killed, every process it started dies with it.

Whatever the mode, a command does not outlive the crossreview process that
started it, even one killed with SIGKILL at any moment (crossreview/undertaker.py).

Where bubblewrap cannot run (not installed, or no unprivileged user
namespaces, as on some CI runners), mode ``auto`` (the default) prints a loud
warning once and runs commands unconfined but with the same filtered
environment; mode ``required`` refuses to run; mode ``off`` is the old
behaviour (full environment, no sandbox).

The process gets its own session so a timeout kills the whole tree (an agent
that spawns a test runner that spawns a server leaves nothing behind).
The interpreter running crossreview comes first on PATH, so ``python`` in a
task's verifier command is the one crossreview (and pytest) is installed in,
whether or not the user activated a virtualenv.
"""

from __future__ import annotations

import dataclasses
import fcntl
import functools
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from . import undertaker
from .undertaker import stat_fields, sweep

MODES = ("auto", "required", "off")
BWRAP_ENV = "CROSSREVIEW_BWRAP"
"""Path of the bwrap binary to use (default: ``bwrap`` on PATH)."""

_live: set[subprocess.Popen] = set()
_live_lock = threading.Lock()
"""Children running right now, so an interrupted run can stop them all.

Module state on purpose: the children are this process's, and Ctrl-C must
reach every one of them wherever in the graph's thread pool it was started
(they run in their own sessions, so the terminal's SIGINT does not).
"""


_stopping = threading.Event()


class Stopping(Exception):
    """Raised by a confined command interrupted because crossreview is shutting down."""


class SandboxUnavailable(Exception):
    """``--sandbox=required`` and bubblewrap cannot run here."""


def kill_all_children(stop: bool = True) -> int:
    """Kill every confined command still running; returns how many there were.

    With ``stop``, commands started afterwards are refused too: the process is
    shutting down and nodes still finishing must not start new work.
    """
    if stop:
        _stopping.set()
    with _live_lock:
        procs = list(_live)
    for proc in procs:
        _kill_tree(proc)
    return len(procs)


@dataclass
class ProcResult:
    """How a confined command ended."""

    returncode: int | None
    stdout: str
    stderr: str
    timed_out: bool
    seconds: float
    sandboxed: bool = False
    """True when the command ran inside bubblewrap."""

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out


# --- policy -------------------------------------------------------------------


@dataclass(frozen=True)
class SandboxPolicy:
    """What one confined command may touch. Paths should be absolute.

    Everything not listed is read-only, except what is hidden: ``$HOME``,
    /tmp and crossreview's state folder (``SandboxSettings.hidden``) are
    replaced by empty folders, and ``masked`` folders too. ``readable`` puts
    folders back (read-only) inside hidden ones; ``writable`` makes folders
    writable; a path listed in more than one wins in the order readable <
    writable < masked.
    """

    writable: tuple[Path, ...] = ()
    readable: tuple[Path, ...] = ()
    masked: tuple[Path, ...] = ()
    network: bool = False
    env_allow: tuple[str, ...] = ()
    """Names of our environment variables passed through (e.g. the API key an agent uses)."""

    def allow_write(self, *paths: Path | str) -> "SandboxPolicy":
        return dataclasses.replace(self, writable=self.writable + tuple(Path(p) for p in paths))

    def allow_read(self, *paths: Path | str) -> "SandboxPolicy":
        return dataclasses.replace(self, readable=self.readable + tuple(Path(p) for p in paths))

    def mask(self, *paths: Path | str) -> "SandboxPolicy":
        return dataclasses.replace(self, masked=self.masked + tuple(Path(p) for p in paths))

    def unmask(self, *paths: Path | str) -> "SandboxPolicy":
        drop = {Path(p) for p in paths}
        return dataclasses.replace(self, masked=tuple(m for m in self.masked if m not in drop))

    def with_env(self, *names: str) -> "SandboxPolicy":
        return dataclasses.replace(self, env_allow=self.env_allow + tuple(n for n in names if n))


@dataclass(frozen=True)
class SandboxSettings:
    """Process-wide sandbox settings of the run in progress (``configure`` sets them)."""

    mode: str = "auto"
    hidden: tuple[Path, ...] = ()
    """Folders hidden from every command (crossreview's state folder)."""
    readable: tuple[Path, ...] = ()
    writable: tuple[Path, ...] = ()
    env: tuple[str, ...] = ()
    """Variable names passed to every command (config ``sandbox_env``)."""
    network: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Agent name -> key variables: those agents (and their reviewers) get network and those keys."""


_settings = SandboxSettings()
_settings_lock = threading.Lock()


def configure(settings: SandboxSettings | dict | None = None, **changes: Any) -> SandboxSettings:
    """Set the process's sandbox settings (from a run's config); returns them.

    In mode ``auto`` a missing sandbox is announced once, loudly, on stderr;
    in mode ``required`` it raises SandboxUnavailable.
    """
    global _settings
    if isinstance(settings, dict) or settings is None:
        settings = settings_from_config(settings or {})
    if changes:
        settings = dataclasses.replace(settings, **changes)
    if settings.mode not in MODES:
        raise ValueError(f"sandbox mode {settings.mode!r}: expected one of {', '.join(MODES)}")
    with _settings_lock:
        _settings = settings
    check_mode(settings.mode)
    return settings


def current_settings() -> SandboxSettings:
    return _settings


def settings_from_config(cfg: Mapping[str, Any]) -> SandboxSettings:
    """Settings from the ``sandbox`` dict a run's config records (see ``runner``)."""
    return SandboxSettings(
        mode=cfg.get("mode") or "auto",
        hidden=tuple(Path(p) for p in cfg.get("hidden") or ()),
        readable=tuple(Path(p) for p in cfg.get("readable") or ()),
        writable=tuple(Path(p) for p in cfg.get("writable") or ()),
        env=tuple(cfg.get("env") or ()),
        network={k: tuple(v) for k, v in (cfg.get("network") or {}).items()},
    )


# --- can bubblewrap run here? ---------------------------------------------------

_probe: dict[str, tuple[bool, str]] = {}
_probe_lock = threading.Lock()
_warned = threading.Event()


def bwrap_binary() -> str | None:
    """The bwrap to use: $CROSSREVIEW_BWRAP, else ``bwrap`` on PATH, else None."""
    configured = os.environ.get(BWRAP_ENV)
    if configured:
        return configured
    return shutil.which("bwrap")


def availability() -> tuple[bool, str]:
    """(True, bwrap path) when bubblewrap can make a sandbox here, else (False, why not). Cached."""
    binary = bwrap_binary()
    if not binary:
        return False, "bubblewrap (bwrap) is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
    with _probe_lock:
        if binary in _probe:
            return _probe[binary]
        probe = [binary, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-all",
                 "--die-with-parent", "--new-session", "true"]
        try:
            proc = subprocess.run(probe, capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
            ok = proc.returncode == 0
            why = binary if ok else (
                f"bubblewrap ({binary}) cannot create a sandbox here ({(proc.stderr.strip().splitlines() or ['exit %d' % proc.returncode])[-1]}); "
                "unprivileged user namespaces may be disabled (sysctl kernel.unprivileged_userns_clone=1, "
                "or on Ubuntu 24.04+ kernel.apparmor_restrict_unprivileged_userns=0)"
            )
        except (OSError, subprocess.SubprocessError) as exc:
            ok, why = False, f"bubblewrap ({binary}) cannot be run: {exc}"
        _probe[binary] = (ok, why)
        return ok, why


def reset_probe() -> None:
    """Forget the cached availability and the warning (tests change $CROSSREVIEW_BWRAP)."""
    with _probe_lock:
        _probe.clear()
    _warned.clear()


UNSANDBOXED_WARNING = (
    "crossreview: WARNING: {why}.\n"
    "crossreview: WARNING: agents, verifiers and command reviewers run UNSANDBOXED: they can read your files "
    "and reach the network (their environment is still filtered).\n"
    "crossreview: WARNING: install bubblewrap, or pass --sandbox=required to refuse to run without it "
    "(--sandbox=off silences this)."
)


def check_mode(mode: str) -> bool:
    """Whether commands will be sandboxed in ``mode``; warns (auto) or raises (required) if not."""
    if mode == "off":
        return False
    ok, why = availability()
    if ok:
        return True
    if mode == "required":
        raise SandboxUnavailable(f"--sandbox=required, but {why}")
    if not _warned.is_set():
        _warned.set()
        print(UNSANDBOXED_WARNING.format(why=why), file=sys.stderr, flush=True)
    return False


# --- the sandbox, as pure functions -------------------------------------------

BASE_ENV_ALLOW = (
    "PATH", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "LC_MESSAGES", "LC_NUMERIC", "LC_TIME", "TZ",
    "TERM", "COLORTERM", "NO_COLOR", "FORCE_COLOR", "COLUMNS", "LINES", "USER", "LOGNAME", "SHELL",
    "PYTHONIOENCODING", "PYTHONUTF8", "CI", "HOME",
)
"""Variables every confined command gets from our environment: nothing secret."""

NETWORK_ENV_ALLOW = (
    "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "no_proxy", "all_proxy",
)
"""Added for commands with network: certificates and proxies."""

PRESET_KEYS: dict[str, tuple[str, ...]] = {
    "claude-code": ("ANTHROPIC_API_KEY",),
    "codex": ("OPENAI_API_KEY", "CODEX_API_KEY"),
    "gemini": ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
}
"""Agent kinds that always reach a model API, and the key each may see."""

PROVIDER_KEYS: dict[str, tuple[str, ...]] = {
    "openai": ("OPENAI_API_KEY",),
    "anthropic": ("ANTHROPIC_API_KEY",),
    "gemini": ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
    "deepseek": ("DEEPSEEK_API_KEY",),
    "openrouter": ("OPENROUTER_API_KEY",),
    "groq": ("GROQ_API_KEY",),
    "mistral": ("MISTRAL_API_KEY",),
}
"""aider:<provider>/<model> gets network and its provider's key."""


def sandbox_env(
    environ: Mapping[str, str],
    policy: SandboxPolicy,
    extra: Mapping[str, str] | None = None,
    python_bindir: str | None = None,
) -> dict[str, str]:
    """The environment of a confined command: the allowlist, the policy's names, then ``extra``."""
    names = set(BASE_ENV_ALLOW) | set(policy.env_allow)
    if policy.network:
        names |= set(NETWORK_ENV_ALLOW)
    env = {k: v for k, v in environ.items() if k in names}
    bindir = python_bindir or str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # keep __pycache__ out of candidates' diffs
    env["TMPDIR"] = "/tmp"
    if extra:
        env.update(extra)
    return env


Mount = tuple[str, Path]
"""(kind, path): kind is "tmpfs" (an empty folder over it), "ro", "rw" or "null" (a masked file)."""

_ORDER = {"tmpfs": 0, "ro": 1, "rw": 2, "mask": 3, "null": 3}


def _under(path: Path, roots: Iterable[Path]) -> bool:
    return any(path == r or r in path.parents for r in roots)


def plan_mounts(
    policy: SandboxPolicy,
    hidden: Iterable[Path],
    is_dir: Callable[[Path], bool] = lambda p: True,
    exists: Callable[[Path], bool] = lambda p: True,
) -> list[Mount]:
    """The mounts over a read-only root, parents before children.

    ``hidden`` are replaced by empty folders; ``policy.readable`` and
    ``policy.writable`` are bound back inside them; ``policy.masked`` are
    hidden again (a file by /dev/null). Pure unless ``is_dir``/``exists`` look
    at the disk; paths that do not exist are left out (a mount needs a target).
    """
    ops: dict[Path, str] = {}

    def put(path: Path, kind: str) -> None:
        if not exists(path):
            return
        old = ops.get(path)
        if old is None or _ORDER[kind] >= _ORDER[old]:
            ops[path] = kind

    for p in hidden:
        put(Path(p), "tmpfs" if is_dir(Path(p)) else "null")
    for p in policy.readable:
        put(Path(p), "ro")
    for p in policy.writable:
        put(Path(p), "rw")
    for p in policy.masked:
        put(Path(p), "mask" if is_dir(Path(p)) else "null")
    mounts = sorted(ops.items(), key=lambda kv: (len(kv[0].parts), _ORDER[kv[1]], str(kv[0])))
    return [("tmpfs" if kind == "mask" else kind, path) for path, kind in mounts]


def build_bwrap_argv(
    command: list[str],
    cwd: Path,
    mounts: list[Mount],
    network: bool = False,
    bwrap: str = "bwrap",
) -> list[str]:
    """The bwrap command line for ``command`` (pure: the shape is what the tests check).

    The environment is not on this command line (it would show in ``ps``):
    bwrap passes its own, already filtered, environment through.
    """
    argv = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    for kind, path in mounts:
        p = str(path)
        if kind == "tmpfs":
            argv += ["--tmpfs", p]
        elif kind == "ro":
            argv += ["--ro-bind", p, p]
        elif kind == "rw":
            argv += ["--bind", p, p]
        elif kind == "null":
            argv += ["--ro-bind", "/dev/null", p]
        else:  # pragma: no cover - plan_mounts makes only these
            raise ValueError(f"unknown mount kind {kind!r}")
    # --cap-drop ALL: run by root (a CI container, a Docker image), bwrap would
    # leave the command every capability in its namespaces — enough to unmount
    # the masks over the task's hidden folders and remount / writable.
    argv += ["--unshare-all", "--cap-drop", "ALL"]
    if network:
        argv += ["--share-net"]
    argv += ["--die-with-parent", "--new-session", "--chdir", str(cwd), "--", *command]
    return argv


# --- what each kind of command may touch ----------------------------------------


def _real(p: Path | str) -> Path:
    return Path(os.path.realpath(p))


@functools.lru_cache(maxsize=1)
def python_paths() -> tuple[Path, ...]:
    """The interpreter crossreview runs on and its libraries (a venv and the Python it was made from).

    Computed once: these never change while the process runs, and resolving
    them took a third of the time it takes to prepare each sandbox.
    """
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
             str(Path(sys.executable).parent), str(Path(os.path.realpath(sys.executable)).parent.parent)}
    return tuple(sorted({_real(p) for p in paths if p}))


def git_dirs_of(worktree: Path) -> tuple[Path, ...]:
    """The git folders a worktree's ``.git`` file points to: its own and the main repository's."""
    dot = Path(worktree) / ".git"
    try:
        text = dot.read_text() if dot.is_file() else ""
    except OSError:
        return ()
    if not text.startswith("gitdir:"):
        return ()
    gitdir = Path(text.split(":", 1)[1].strip())
    if not gitdir.is_absolute():
        gitdir = Path(worktree) / gitdir
    dirs = [gitdir]
    try:
        common = (gitdir / "commondir").read_text().strip()
        dirs.append(common if Path(common).is_absolute() else gitdir / common)
    except OSError:
        pass
    return tuple(_real(d) for d in dirs)


def base_policy(workdir: Path) -> SandboxPolicy:
    """``workdir`` writable, its ``.git`` pointer and repository read-only, the interpreter readable."""
    workdir = _real(workdir)
    readable = python_paths() + git_dirs_of(workdir)
    if (workdir / ".git").is_file():
        readable += (workdir / ".git",)  # deeper than the worktree: bound read-only over it
    return SandboxPolicy(writable=(workdir,), readable=readable)


def network_keys(agent_name: str, agent_spec: str | None = None) -> tuple[str, ...] | None:
    """The key variables agent ``agent_name`` may see with network on; None: no network."""
    configured = _settings.network
    if agent_name in configured:
        return tuple(configured[agent_name])
    kind, _, arg = (agent_spec or "").partition(":")
    if kind in PRESET_KEYS:
        return PRESET_KEYS[kind]
    if kind == "aider":
        provider = arg.strip().split("/", 1)[0] if "/" in arg else ""
        return PROVIDER_KEYS.get(provider, ())
    return None


def _task_paths(task: Any) -> tuple[Path, Path, Path, Path]:
    return (_real(task.path), _real(task.tests_dir), _real(task.solution_dir), _real(task.holdout_dir))


def agent_policy(workspace: Any, reveal_solution: bool = False) -> SandboxPolicy:
    """An agent's sandbox: its worktree, the suite's scripts, the task minus what agents must not see.

    ``workspace`` is an ``agents.Workspace``. tests/ is masked unless the task
    makes its tests visible; solution/ unless ``reveal_solution`` (the
    oracle); holdout/ always. Network and keys only for an agent configured
    (or known, for the presets) to call a model.
    """
    task_dir, tests, solution, holdout = _task_paths(workspace.task)
    policy = base_policy(workspace.path).allow_read(_real(workspace.suite_dir), task_dir)
    masked = [holdout]
    if not workspace.task.tests_visible:
        masked.append(tests)
    if not reveal_solution:
        masked.append(solution)
    policy = policy.mask(*masked)
    keys = network_keys(workspace.agent.name, workspace.agent.spec)
    if keys is not None:
        policy = dataclasses.replace(policy, network=True).with_env(*keys)
    return policy


def reviewer_policy(request: Any) -> SandboxPolicy:
    """A command reviewer's sandbox: its scratch folder (diff, tests.json), the suite, never holdout/ or solution/."""
    task_dir, _tests, solution, holdout = _task_paths(request.task)
    policy = base_policy(request.workdir).allow_read(_real(request.suite_dir), task_dir).mask(solution, holdout)
    keys = network_keys(request.reviewer.name, request.reviewer.spec)
    if keys is not None:
        policy = dataclasses.replace(policy, network=True).with_env(*keys)
    return policy


def verifier_policy(task: Any, worktree: Path, scratch: Path) -> SandboxPolicy:
    """A verifier's sandbox: the worktree and the JUnit folder writable, no network, nothing of the task but tests."""
    _task_dir, _tests, solution, holdout = _task_paths(task)
    return base_policy(worktree).allow_write(_real(scratch)).mask(solution, holdout)


def command_paths(command: str, environ: Mapping[str, str] | None = None) -> tuple[Path, ...]:
    """Folders of the programs and files a command line names by absolute path (made readable).

    A ``command:`` agent or reviewer the user configured may live anywhere
    (``command:python /opt/agents/solve.py``): what it names must be visible
    in the sandbox. The folder holding a named file is bound, so the script's
    neighbours come along, unless that folder is itself a hidden root ($HOME,
    /tmp) or /: then only the file. Only for commands the user wrote, never
    for a task's verifier command.
    """
    import shlex

    environ = os.environ if environ is None else environ
    try:
        tokens = shlex.split(command, comments=False, posix=True)
    except ValueError:
        tokens = command.split()
    roots = {Path("/"), Path("/tmp"), _real(tempfile.gettempdir())}
    if environ.get("HOME"):
        roots.add(_real(environ["HOME"]))
    found: list[Path] = []
    for token in tokens:
        for piece in token.split("=", 1)[-1:] if token.startswith("-") else [token]:
            if piece.startswith("~"):
                piece = os.path.expanduser(piece)
            if not piece.startswith("/") or "\0" in piece:
                continue
            try:
                p = _real(piece)
                if p.is_dir():
                    found.append(p)
                elif p.exists():
                    found.append(p.parent if p.parent not in roots else p)
            except (OSError, ValueError):
                continue
    return tuple(dict.fromkeys(p for p in found if p not in roots))


def effective_policy(policy: SandboxPolicy, settings: SandboxSettings) -> SandboxPolicy:
    """The policy with the run's configured extras (readable, writable, env names) added."""
    return dataclasses.replace(
        policy,
        readable=policy.readable + tuple(settings.readable),
        writable=policy.writable + tuple(settings.writable),
        env_allow=policy.env_allow + tuple(settings.env),
    )


DAEMON_SOCKETS = ("/run/docker.sock", "/var/run/docker.sock", "/run/containerd", "/run/podman", "/run/dbus",
                  "/run/user", "/var/run/dbus")
"""Unix sockets of daemons that hand out power (Docker's is root on the host), hidden from every
command: a network namespace stops TCP and UDP, not a connect() to a socket file."""


def hidden_paths(settings: SandboxSettings, environ: Mapping[str, str] | None = None) -> list[Path]:
    """What every sandbox hides: /tmp (and $TMPDIR), $HOME, crossreview's state folder, daemons' sockets."""
    environ = os.environ if environ is None else environ
    hidden = [Path("/tmp"), _real(tempfile.gettempdir()), Path("/var/tmp"), Path("/dev/shm")]
    hidden += [_real(p) for p in DAEMON_SOCKETS]
    home = environ.get("HOME")
    if home and _real(home) != Path("/"):
        hidden.append(_real(home))
    hidden += [_real(p) for p in settings.hidden]
    return hidden


# --- running ------------------------------------------------------------------------


TAG_ENV = "CROSSREVIEW_PROCESS_TAG"
"""Set to a fresh value in every unsandboxed child: its descendants inherit it, even those that
left its process group (setsid, a daemon's double fork), so a kill can find them all."""
_tags: dict[int, str] = {}


def _kill_tree(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    tag = _tags.get(proc.pid)
    if tag:
        kill_tagged(tag)


def kill_tagged(tag: str, proc_dir: str = "/proc") -> int:
    """SIGKILL every process of ours whose environment holds ``CROSSREVIEW_PROCESS_TAG=tag``.

    The fallback for commands run without bubblewrap (whose PID namespace
    kills everything at once): a descendant that started a session of its
    own is out of reach of killpg, but not of this.
    """
    needle = f"{TAG_ENV}={tag}".encode()
    return sweep(lambda _pid, env: needle in env, proc_dir)


# --- nothing outlives crossreview -------------------------------------------------------
#
# Every command carries CROSSREVIEW_OWNER (this process's PID:START) in its environment, and
# an undertaker (crossreview/undertaker.py, one per crossreview process) kills whatever
# carries it once this process is gone, however it died and whenever: bwrap's own
# --die-with-parent leaves windows open while a sandbox starts, and without bwrap there is
# nothing at all. What even the undertaker cannot stop (it was killed too: the OOM killer, a
# kill -9 of both) `crossreview resume` and `gc` stop with ``kill_leftovers``.

OWNER_ENV = undertaker.OWNER_ENV
"""In every command's environment: ``PID:START`` of the crossreview process that started it
(START its start time in clock ticks, so a reused PID is not mistaken for it)."""

_undertaker: tuple[int, int, int, int] | None = None
"""(pid of the crossreview process it serves, the undertaker's pid, lifeline read end, write end)."""
_undertaker_lock = threading.Lock()
_undertaker_warned = threading.Event()


def ensure_undertaker() -> None:
    """Start this process's undertaker unless it runs already (see crossreview/undertaker.py).

    Before the first command: from then on, whatever carries this process's
    ``CROSSREVIEW_OWNER`` dies once this process is gone. Cheap when it runs.
    """
    global _undertaker
    with _undertaker_lock:
        held = _undertaker
        if held is not None and held[0] == os.getpid():
            if _running(held[1]):
                return
            r, w = held[2], held[3]  # it died (killed?): a new one reads the same lifeline
        else:
            if held is not None:
                # A forked child of a crossreview process: the parent's lifeline is the
                # parent's, and holding its write end would keep its undertaker waiting.
                for fd in held[2:]:
                    os.close(fd)
            # Nothing is ever written to it; its write end stays here, close-on-exec. Not on
            # 0-2: with one of those closed, the pipe would stand in for stdin, stdout or stderr.
            r, w = (_above_stdio(fd) for fd in os.pipe())
        # posix_spawn, not Popen: a Popen left running when the interpreter exits is reported
        # as a leak (ResourceWarning), and outliving us is this process's whole point.
        try:
            pid = os.posix_spawn(
                sys.executable,
                [sys.executable, "-I", "-S", str(Path(__file__).with_name("undertaker.py")), _owner_mark(),
                 undertaker.looks(os.getpid()) or "-"],
                {},
                file_actions=[(os.POSIX_SPAWN_DUP2, r, 0),
                              (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                              (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0)],
                setsid=True,  # out of reach of a Ctrl-C or a kill of our process group
            )
        except (OSError, ValueError) as exc:  # commands still run, as without it; said once
            _undertaker = (os.getpid(), 0, r, w)
            if not _undertaker_warned.is_set():
                _undertaker_warned.set()
                print(f"crossreview: WARNING: cannot start the process that stops commands if crossreview "
                      f"is killed ({exc}); a kill may leave them running (`crossreview gc` stops them)",
                      file=sys.stderr, flush=True)
            return
        _undertaker = (os.getpid(), pid, r, w)


def _running(pid: int) -> bool:
    if pid <= 0:  # never started: waitpid would take 0 and -1 for "any child"
        return False
    try:
        return os.waitpid(pid, os.WNOHANG) == (0, 0)  # reaps it if it ended
    except ChildProcessError:
        return False


def _above_stdio(fd: int) -> int:
    if fd > 2:
        return fd
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    os.close(fd)
    return moved


def owner_mark(pid: int | None = None, proc_dir: str = "/proc") -> str:
    """``PID:START`` of process ``pid`` (default: this one), the value of ``CROSSREVIEW_OWNER``."""
    pid = os.getpid() if pid is None else pid
    fields = stat_fields(pid, proc_dir)
    return f"{pid}:{fields[19] if fields and len(fields) > 19 else ''}"


_own_mark: tuple[int, str] | None = None


def _owner_mark() -> str:
    global _own_mark
    if _own_mark is None or _own_mark[0] != os.getpid():
        _own_mark = (os.getpid(), owner_mark())
    return _own_mark[1]


def owner_alive(mark: str, proc_dir: str = "/proc") -> bool:
    """Whether the crossreview process a ``CROSSREVIEW_OWNER`` value names still runs (a zombie does not)."""
    pid, _, start = mark.partition(":")
    if not pid.isdigit():
        return False
    fields = stat_fields(pid, proc_dir)
    if not fields or fields[0] == "Z":
        return False
    return not start or (len(fields) > 19 and fields[19] == start)


def kill_leftovers(owners: Iterable[int], proc_dir: str = "/proc") -> int:
    """SIGKILL what crossreview processes ``owners`` (PIDs) started and left running when they died.

    Found by ``CROSSREVIEW_OWNER`` in their environment; what an owner still
    running started is never touched. Returns how many processes were killed.
    """
    wanted = {str(p).encode() for p in owners if p}
    if not wanted:
        return 0
    prefix = f"{OWNER_ENV}=".encode()
    verdicts: dict[bytes, bool] = {}

    def left_behind(_pid: str, env: list[bytes]) -> bool:
        for item in env:
            if item.startswith(prefix):
                mark = item[len(prefix):]
                if mark.partition(b":")[0] not in wanted:
                    return False
                if mark not in verdicts:
                    verdicts[mark] = not owner_alive(mark.decode(errors="replace"), proc_dir)
                return verdicts[mark]
        return False

    return sweep(left_behind, proc_dir, groups=True)


_MAX_OUTPUT = 1 << 20


def _read_tail(fh) -> str:
    """The last MiB a command printed (its end is where the errors are)."""
    size = fh.seek(0, os.SEEK_END)
    fh.seek(max(0, size - _MAX_OUTPUT))
    return fh.read().decode("utf-8", errors="replace")


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of an unsandboxed child (``--sandbox=off``): ours, our interpreter first on PATH, plus ``extra``."""
    env = dict(os.environ)
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    env.pop("PYTHONPATH", None)  # the candidate's imports must come from its worktree
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # keep __pycache__ out of candidates' diffs
    if extra:
        env.update(extra)
    return env


def prepare_command(
    argv: list[str] | str,
    cwd: Path,
    env: dict[str, str] | None,
    shell: bool,
    policy: SandboxPolicy | None,
    settings: SandboxSettings | None = None,
) -> tuple[list[str] | str, dict[str, str], bool, bool]:
    """(argv, environment, shell, sandboxed) for Popen, after the run's sandbox settings."""
    settings = settings or _settings
    if settings.mode == "off":
        return argv, child_env(env), shell, False
    policy = effective_policy(policy or base_policy(cwd), settings)
    child = sandbox_env(os.environ, policy, env)
    if not check_mode(settings.mode):
        return argv, child, shell, False
    command = ["/bin/sh", "-c", argv] if shell else ([argv] if isinstance(argv, str) else list(argv))
    if shell and not isinstance(argv, str):
        command = ["/bin/sh", "-c", " ".join(argv)]
    mounts = plan_mounts(
        policy,
        hidden_paths(settings),
        is_dir=lambda p: os.path.isdir(p),
        exists=lambda p: os.path.lexists(p),
    )
    ok, binary = availability()
    return build_bwrap_argv(command, _real(cwd), mounts, policy.network, binary), child, False, True


def wait_for_exit(proc: subprocess.Popen, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for ``proc`` to end; True if it did.

    ``Popen.wait(timeout=...)`` polls with sleeps that grow to 50 ms, so a
    command is seen to end up to 50 ms late: on every agent, test run and
    review of a task run's critical path. A pidfd (Linux 5.3+) wakes us the
    moment it ends; elsewhere we fall back to Popen's polling.
    """
    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        try:
            proc.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        deadline = time.monotonic() + timeout
        while proc.poll() is None:  # bounded by the deadline
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            # At most an hour per wait: poll() takes a C int of milliseconds, and a task may well
            # say timeout_sec = 1e300 (or inf, from a config) for "no limit".
            poller.poll(int(min(left, 3600.0) * 1000) + 1)
        return True
    finally:
        os.close(fd)


def run_confined(
    argv: list[str] | str,
    cwd: Path,
    timeout: float,
    env: dict[str, str] | None = None,
    shell: bool = False,
    stdin_data: str | None = None,
    policy: SandboxPolicy | None = None,
) -> ProcResult:
    """Run ``argv`` in ``cwd`` under ``policy``; kill its whole process tree after ``timeout`` seconds.

    Without a policy the command may write only in ``cwd`` (see ``base_policy``).
    """
    started = time.monotonic()
    if _stopping.is_set():
        raise Stopping("crossreview is stopping: not started")
    popen_argv, popen_env, popen_shell, sandboxed = prepare_command(argv, Path(cwd), env, shell, policy)
    ensure_undertaker()
    popen_env[OWNER_ENV] = _owner_mark()
    tag = None
    if not sandboxed:
        tag = secrets.token_hex(8)
        popen_env[TAG_ENV] = tag
    # Output goes to files, not pipes: a command that leaves a background
    # process holding its stdout open must not look like a hang. We wait for
    # the leader only, then kill whatever it left in its group.
    with tempfile.TemporaryFile() as out_f, tempfile.TemporaryFile() as err_f, tempfile.TemporaryFile() as in_f:
        if stdin_data is not None:
            in_f.write(stdin_data.encode())
            in_f.seek(0)
        proc = subprocess.Popen(
            popen_argv,
            cwd=str(cwd),
            env=popen_env,
            shell=popen_shell,
            stdin=in_f if stdin_data is not None else subprocess.DEVNULL,
            stdout=out_f,
            stderr=err_f,
            start_new_session=True,
        )
        timed_out = False
        with _live_lock:
            _live.add(proc)
            if tag:
                _tags[proc.pid] = tag
        try:
            timed_out = not wait_for_exit(proc, timeout)
        except BaseException:
            # Ctrl-C or a crash of ours: never leave the child running.
            _kill_tree(proc)
            proc.wait()
            raise
        finally:
            # The leader's leftovers (or, on timeout, the leader) go too. In the
            # sandbox, killing bwrap kills its PID namespace: every descendant,
            # even one that started a session of its own.
            _kill_tree(proc)
            proc.wait()
            with _live_lock:
                _live.discard(proc)
                _tags.pop(proc.pid, None)
        out, err = _read_tail(out_f), _read_tail(err_f)
    if _stopping.is_set():
        # Killed because we are shutting down, not because the command failed:
        # raising keeps this half-done work out of the checkpoint, so a resume
        # runs it again instead of recording a candidate that never finished.
        raise Stopping("crossreview is stopping: killed")
    return ProcResult(
        returncode=None if timed_out else proc.returncode,
        stdout=out or "",
        stderr=err or "",
        timed_out=timed_out,
        seconds=time.monotonic() - started,
        sandboxed=sandboxed,
    )
