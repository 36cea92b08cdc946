"""The plugin manager: the one piece of global state crossreview has.

Built-in plugins (default_plugins/) and third-party ones (entry point group
``crossreview``) are loaded the same way, then ``check_pending()`` makes a
misspelled hook name fail loudly instead of silently never being called.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

import pluggy

from . import hookspecs

DEFAULT_PLUGINS = (
    "crossreview.default_plugins.offline_agents",
    "crossreview.default_plugins.command",
    "crossreview.default_plugins.llm_agent",
    "crossreview.default_plugins.llm_reviewer",
    "crossreview.default_plugins.presets",
    "crossreview.default_plugins.tests_reviewer",
    "crossreview.default_plugins.policies",
    "crossreview.default_plugins.inbox",
    "crossreview.default_plugins.terminal",
)

_pm: pluggy.PluginManager | None = None


class PluginError(Exception):
    """An installed plugin cannot be used. The message names the plugin, its package and what to fix."""


_REGISTER_HOOKS = {
    "crossreview_register_agents": "agent kind",
    "crossreview_register_reviewers": "reviewer kind",
    "crossreview_register_policies": "policy",
}


class _Manager(pluggy.PluginManager):
    """A plugin manager that remembers which package each installed plugin came from.

    An error found after loading (a misspelled hook, a name registered twice)
    must still say which package to fix or uninstall: the entry point's name
    alone may not tell the user which of their packages declares it.
    """

    def __init__(self, project_name: str):
        super().__init__(project_name)
        self.sources: dict[str, str] = {}  # plugin name -> how an error names it
        self.misdeclared: list[str] = []  # entry points in a group that is almost "crossreview"


def _describe(pm: pluggy.PluginManager, plugin_name: str) -> str:
    """How an error names a plugin: with its entry point and package when it was installed."""
    return getattr(pm, "sources", {}).get(plugin_name) or f"plugin {plugin_name!r}"


def new_plugin_manager(load_entrypoints: bool = True) -> pluggy.PluginManager:
    """A fresh manager with the built-ins (and, by default, installed plugins).

    Raises PluginError for an installed plugin that cannot be imported,
    implements a hook that does not exist (or with arguments the hook does not
    pass), or registers a name another plugin registered already.
    """
    pm = _Manager("crossreview")
    pm.add_hookspecs(hookspecs)
    for name in DEFAULT_PLUGINS:
        pm.register(importlib.import_module(name), name=name)
    if load_entrypoints:
        _load_entrypoints(pm)
    _check_hooks(pm)
    for hook_name in _REGISTER_HOOKS:
        _collect(pm, hook_name)  # a name registered twice fails now, not at the first run
    return pm


def _load_entrypoints(pm: _Manager) -> None:
    """pm.load_setuptools_entrypoints("crossreview"), saying which plugin broke and how."""
    from importlib import metadata

    loaded: dict[str, tuple[str, str]] = {}  # entry point name -> (value, package)
    for dist in list(metadata.distributions()):
        for ep in dist.entry_points:
            if ep.group != "crossreview" and _almost_our_group(ep.group):
                pm.misdeclared.append(
                    f"the package {dist.metadata['Name'] or '?'} declares the entry point `{ep.name} = {ep.value}` "
                    f"in the group {ep.group!r}, which crossreview does not read; write "
                    "[project.entry-points.crossreview] in its pyproject.toml and reinstall it")
            if ep.group != "crossreview" or pm.is_blocked(ep.name):
                continue
            package = dist.metadata["Name"] or "?"
            where = f"plugin {ep.name!r} (entry point `{ep.name} = {ep.value}` of the package {package})"
            if ep.name in loaded:
                if loaded[ep.name][0] == ep.value:
                    continue  # the same package found twice on sys.path
                raise PluginError(
                    f"{where}: the package {loaded[ep.name][1]} declares a crossreview plugin "
                    f"{ep.name!r} too (`{ep.name} = {loaded[ep.name][0]}`); rename one of the entry points "
                    "or uninstall one of the packages")
            if pm.has_plugin(ep.name):
                raise PluginError(f"{where}: the name {ep.name!r} is a built-in plugin's; rename the entry point")
            try:
                plugin = ep.load()
            except AttributeError as exc:
                if not ep.attr or not _imports(ep.module):
                    raise PluginError(_import_failure(where, ep, package, exc)) from exc
                # The module imports; the entry point names something it does not have.
                raise PluginError(
                    f"{where}: the module {ep.module} has no {ep.attr!r}; point the entry point at the module "
                    f"that holds the hooks (`{ep.name} = {ep.module}` under [project.entry-points.crossreview] "
                    f"in the pyproject.toml of {package}, then reinstall it) or define {ep.attr} there"
                ) from exc
            except Exception as exc:  # noqa: BLE001 - any import failure is the plugin's
                raise PluginError(_import_failure(where, ep, package, exc)) from exc
            _check_unmarked(plugin, where)
            try:
                pm.register(plugin, name=ep.name)
            except pluggy.PluginValidationError as exc:
                raise PluginError(f"{where}: {_validation_message(pm, exc)}") from exc
            loaded[ep.name] = (ep.value, package)
            pm.sources[ep.name] = where
            _guard_observers(pm, plugin, where, package)


def _import_failure(where: str, ep: Any, package: str, exc: Exception) -> str:
    """The error for an entry point whose module raised when imported."""
    return (f"{where} cannot be imported: {type(exc).__name__}: {exc}; fix the module "
            f"(python -c 'import {ep.module}' shows the traceback) or `pip uninstall {package}`")


def _imports(module: str) -> bool:
    """Whether ``module`` imports (it may be imported already: then it did)."""
    try:
        importlib.import_module(module)
    except Exception:  # noqa: BLE001 - any failure means "no": the caller reports the original error
        return False
    return True


class PluginWarning(UserWarning):
    """An installed plugin's hook raised while a run was going on; crossreview went on without it."""


# Hooks that only tell plugins what happened (or, ask_human, may ask someone):
# nothing the run decides depends on a third-party implementation of them.
_OBSERVER_HOOKS = frozenset(
    n for n in dir(hookspecs) if n.startswith("crossreview_") and n not in _REGISTER_HOOKS)


def _guard_observers(pm: pluggy.PluginManager, plugin: Any, where: str, package: str) -> None:
    """Make an installed plugin's observer hooks fail on their own, with a warning, not take the run down.

    A reporter or chat channel with a bug must not stop a suite run that is
    spending money on agents, nor keep the built-in inbox (called after it)
    from recording an escalation: an exception in one of these hooks becomes
    one PluginWarning per plugin and hook, naming the plugin, its package, the
    hook and the line that raised, and the hook counts as returning None
    (for ``crossreview_ask_human``: not answered, so the escalation waits in
    the inbox). The register hooks are not guarded: they run when the plugin
    is loaded, where a failure is a PluginError. Wrappers are left as they are.
    """
    for caller in pm.get_hookcallers(plugin) or []:
        if caller.name not in _OBSERVER_HOOKS:
            continue
        for impl in caller.get_hookimpls():
            if impl.plugin is plugin and not (impl.wrapper or impl.hookwrapper):
                # HookImpl.function is "Final" to type checkers only; the argument
                # names pluggy passes were read from the original already.
                impl.function = _guarded(impl.function, caller.name, where, package)  # type: ignore[misc]


def _guarded(function: Callable[..., Any], hook_name: str, where: str, package: str) -> Callable[..., Any]:
    """``function``, but an Exception in it is a PluginWarning (once) and a None result."""
    import functools
    import threading
    import traceback
    import warnings

    warned = threading.Event()

    @functools.wraps(function)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - the plugin's bug: said once, then the run goes on
            if not warned.is_set():
                warned.set()
                frames = traceback.extract_tb(exc.__traceback__)
                at = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
                warnings.warn(PluginWarning(
                    f"{where}: its {hook_name} hook raised {type(exc).__name__}: {exc}{at}; crossreview "
                    f"went on without it (later failures of this hook are not shown). Fix the hook, or "
                    f"`pip uninstall {package}`"), stacklevel=2)
            return None

    return guarded


def _almost_our_group(group: str) -> bool:
    """A misspelled entry point group ("crosreview", "crossreview.plugins") would hide a plugin without a word."""
    import difflib

    g = group.lower().replace("-", "_")
    return g.startswith("crossreview") or bool(difflib.get_close_matches(g, ["crossreview"], n=1, cutoff=0.8))


def misdeclared_hint(pm: pluggy.PluginManager | None = None) -> str:
    """For an unknown agent, reviewer or policy: installed plugins declared in a misspelled group, or ""."""
    found = getattr(pm or get_plugin_manager(), "misdeclared", [])
    return "".join(f"; {m}" for m in found)


def _check_unmarked(plugin: Any, where: str) -> None:
    """A function named like a hook but without @hookimpl would be silently ignored."""
    for attr in dir(plugin):
        fn = getattr(plugin, attr, None)
        if (attr.startswith("crossreview_") and callable(fn) and hasattr(hookspecs, attr)
                and not hasattr(fn, "crossreview_impl")):
            raise PluginError(f"{where}: {attr} is not marked as a hook; put "
                              "`@hookimpl` (from crossreview.hookspecs import hookimpl) above it")


def _validation_message(pm: pluggy.PluginManager, exc: pluggy.PluginValidationError) -> str:
    text = str(exc)
    for hook_name in dir(hookspecs):
        if hook_name.startswith("crossreview_") and f"hook {hook_name!r}" in text:
            caller = getattr(pm.hook, hook_name)
            wanted = ", ".join(caller.spec.argnames) if caller.spec else ""
            return (f"{hook_name} takes arguments the hook does not pass ({text.splitlines()[-1]}); "
                    f"write it as `def {hook_name}({wanted})` (any subset of those names)")
    return text


def _check_hooks(pm: pluggy.PluginManager) -> None:
    """pm.check_pending(), naming the plugin and the hook it probably meant."""
    import difflib

    known = sorted(n for n in dir(hookspecs) if n.startswith("crossreview_"))
    for hook_name, caller in vars(pm.hook).items():
        if hook_name.startswith("_") or caller.has_spec():
            continue
        for impl in caller.get_hookimpls():
            if impl.optionalhook:
                continue
            guess = difflib.get_close_matches(hook_name, known, n=1)
            hint = f"did you mean {guess[0]}?" if guess else f"the hooks are {', '.join(known)}"
            raise PluginError(f"{_describe(pm, impl.plugin_name)} implements {hook_name}, which is no crossreview "
                              f"hook; {hint} (see crossreview/hookspecs.py)")
    pm.check_pending()


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, created on first use."""
    global _pm
    if _pm is None:
        _pm = new_plugin_manager()
    return _pm


@dataclass(frozen=True)
class Registration:
    """One agent kind, reviewer kind or policy, and the plugin that added it."""

    name: str
    factory: Any
    help: str
    plugin: str


def _collect(pm: pluggy.PluginManager, hook_name: str) -> dict[str, Registration]:
    found: dict[str, Registration] = {}
    what = _REGISTER_HOOKS[hook_name]
    hook = getattr(pm.hook, hook_name)
    for impl in hook.get_hookimpls():
        plugin_name = pm.get_name(impl.plugin) or repr(impl.plugin)
        described = _describe(pm, plugin_name)

        def register(name: str, factory: Any, help: str = "", _plugin: str = plugin_name,
                     _described: str = described) -> None:
            if not isinstance(name, str) or not name or any(c in name for c in ":= \t\n"):
                raise PluginError(f"{_described} registers the {what} {name!r}: a name is a non-empty "
                                  "string without ':', '=' or spaces")
            if what == "policy":
                if not callable(getattr(factory, "decide", None)):
                    raise PluginError(f"{_described} registers the policy {name!r} as "
                                      f"{type(factory).__name__}, which has no decide(candidates, verdicts) "
                                      "method; register an object (not a class) that has one")
            elif not callable(factory):
                raise PluginError(f"{_described} registers the {what} {name!r} with a factory that is "
                                  f"not callable ({type(factory).__name__}); pass a class or a function of the spec")
            if name in found:
                other = found[name].plugin
                raise PluginError(
                    f"{_described} registers the {what} {name!r}, which "
                    + ("it registers already" if other == _plugin else f"the {_describe(pm, other)} registers already")
                    + "; give it another name")
            found[name] = Registration(name, factory, help, _plugin)

        try:
            impl.function(register=register)
        except PluginError:
            raise
        except Exception as exc:  # noqa: BLE001 - the plugin's bug, said so
            hint = "; call register(name, factory, help=...)" if isinstance(exc, TypeError) else ""
            raise PluginError(f"{described}: its {hook_name} hook raised "
                              f"{type(exc).__name__}: {exc}{hint}") from exc
    return found


def agent_kinds(pm: pluggy.PluginManager | None = None) -> dict[str, Registration]:
    """Every registered agent kind, by name (``oracle``, ``command``, ...)."""
    return _collect(pm or get_plugin_manager(), "crossreview_register_agents")


def reviewer_kinds(pm: pluggy.PluginManager | None = None) -> dict[str, Registration]:
    """Every registered reviewer kind, by name."""
    return _collect(pm or get_plugin_manager(), "crossreview_register_reviewers")


def policies(pm: pluggy.PluginManager | None = None) -> dict[str, Registration]:
    """Every registered consensus policy, by name."""
    return _collect(pm or get_plugin_manager(), "crossreview_register_policies")


def plugin_names(pm: pluggy.PluginManager | None = None) -> list[str]:
    """Names of every registered plugin module, built-ins first."""
    pm = pm or get_plugin_manager()
    return [name for name, _ in pm.list_name_plugin()]


Factory = Callable[..., Any]
