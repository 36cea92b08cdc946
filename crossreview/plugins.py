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


def new_plugin_manager(load_entrypoints: bool = True) -> pluggy.PluginManager:
    """A fresh manager with the built-ins (and, by default, installed plugins)."""
    pm = pluggy.PluginManager("crossreview")
    pm.add_hookspecs(hookspecs)
    for name in DEFAULT_PLUGINS:
        pm.register(importlib.import_module(name), name=name)
    if load_entrypoints:
        pm.load_setuptools_entrypoints("crossreview")
    pm.check_pending()
    return pm


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
    hook = getattr(pm.hook, hook_name)
    for impl in hook.get_hookimpls():
        plugin_name = pm.get_name(impl.plugin) or repr(impl.plugin)

        def register(name: str, factory: Any, help: str = "", _plugin: str = plugin_name) -> None:
            found[name] = Registration(name, factory, help, _plugin)

        impl.function(register=register)
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
