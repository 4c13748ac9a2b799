"""The plugin manager: finds task plugins, isolates broken ones, and answers "which task is X?".

One pluggy manager per process, filled on first use: the built-in plugins (ordinary plugins that
ship inside cldyn), then every entry point of group ``cldyn``. Hooks run one plugin at a time, so
a plugin that fails to import or raises in a hook is recorded, reported once on stderr and skipped,
instead of taking the CLI down.

Environment variables (read when the manager is first used, or after :func:`reset`):

- ``CLDYN_PLUGINS=yolo,mmseg``: only these entry-point plugins load; set but empty, none do.
  Built-in plugins always load: they are part of cldyn, and the hidden ones stay out of sight.
- ``CLDYN_STRICT_PLUGINS=1``: a failing plugin raises its original exception (for plugin authors).
- ``CLDYN_SHOW_HIDDEN=1``: hidden tasks (e.g. the reference task "toyseg") appear in listings.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable, Iterator, TypeVar

import pluggy

from cldyn_cli import __version__, hookspecs
from cldyn_cli.errors import UserError
from cldyn_cli.tasks import TaskSpec

if TYPE_CHECKING:
    import typer

ENTRY_POINT_GROUP = "cldyn"
BUILTIN_PLUGINS = {"toyseg": "cldyn_cli.builtin_tasks.toyseg"}  # plugin name -> module

T = TypeVar("T")


@dataclass
class PluginInfo:
    """One plugin as `cldyn plugins` shows it; ``error`` is set when it was skipped."""

    name: str
    package: str | None  # distribution name; None for plugins registered in-process
    version: str | None
    tasks: list[str]
    error: str | None = None
    hooks: list[str] = field(default_factory=list)  # the hooks it implements


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def strict() -> bool:
    """True under ``CLDYN_STRICT_PLUGINS=1``: a failing plugin raises instead of being skipped."""
    return _flag("CLDYN_STRICT_PLUGINS")


def _allowlist() -> set[str] | None:
    value = os.environ.get("CLDYN_PLUGINS")
    if value is None:
        return None
    return {name.strip() for name in value.split(",") if name.strip()}


def _call(impl: pluggy.HookImpl, **kwargs: Any) -> Any:
    """Call one plugin's implementation with the arguments it asks for."""
    return impl.function(**{name: kwargs[name] for name in impl.argnames})


def _describe(package: str | None, version: str | None) -> str:
    return f"{package} {version}" if package else "registered in-process"


class PluginRegistry:
    """The loaded plugins, where each came from, and which of them failed."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
        self.pm.add_hookspecs(hookspecs)
        self._origin: dict[str, tuple[str | None, str | None]] = {}  # plugin -> (package, version)
        self._errors: dict[str, str] = {}  # plugin -> why it is skipped
        for name, module in BUILTIN_PLUGINS.items():
            self._origin[name] = ("cldyn", __version__)
            self._attempt(name, lambda: self._register(importlib.import_module(module), name))
        self._load_entry_points()

    def _load_entry_points(self) -> None:
        allowed = _allowlist()
        seen: set[str] = set()
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            seen.add(ep.name)
            if allowed is not None and ep.name not in allowed:
                continue
            origin = (ep.dist.name, ep.dist.version) if ep.dist else (None, None)
            if ep.name in self._origin:
                raise UserError(f"plugin name {ep.name!r} is used by two packages: "
                                f"{_describe(*self._origin[ep.name])} and {_describe(*origin)}; uninstall one")
            self._origin[ep.name] = origin
            self._attempt(ep.name, lambda: self._register(ep.load(), ep.name))
        for name in sorted((allowed or set()) - seen - set(BUILTIN_PLUGINS)):
            print(f"warning: CLDYN_PLUGINS names {name!r}, but no installed plugin has that name",
                  file=sys.stderr)

    def _register(self, plugin: object, name: str) -> None:
        """Register and reject misspelt hooks, so a typo is reported rather than silently ignored."""
        self.pm.register(plugin, name=name)
        try:
            self.pm.check_pending()
        except Exception:
            self.pm.unregister(name=name)
            raise

    def _attempt(self, plugin: str, action: Callable[[], T]) -> T | None:
        """Run ``action`` on behalf of ``plugin``; on failure record it, warn, and return None."""
        try:
            return action()
        except Exception as exc:
            if strict():
                raise
            self._errors[plugin] = f"{type(exc).__name__}: {exc}"
            print(f"warning: plugin {plugin!r} ({_describe(*self._origin.get(plugin, (None, None)))}) "
                  f"failed and is skipped: {self._errors[plugin]} (CLDYN_STRICT_PLUGINS=1 shows the traceback)",
                  file=sys.stderr)
            return None

    def _impls(self, hook: str) -> list[pluggy.HookImpl]:
        return [impl for impl in getattr(self.pm.hook, hook).get_hookimpls()
                if impl.plugin_name not in self._errors]

    def _announced(self, impl: pluggy.HookImpl) -> list[TaskSpec]:
        specs: list[TaskSpec] = []

        def register(spec: TaskSpec) -> None:
            if not isinstance(spec, TaskSpec):
                raise TypeError(f"register() takes a cldyn_cli.tasks.TaskSpec, not {type(spec).__name__}")
            specs.append(replace(spec, plugin=impl.plugin_name))

        _call(impl, register=register)
        return specs

    def tasks(self) -> dict[str, TaskSpec]:
        """Every task of every working plugin, hidden ones included; a name claimed twice is an error."""
        found: dict[str, TaskSpec] = {}
        for impl in self._impls("register_tasks"):
            for spec in self._attempt(impl.plugin_name, lambda: self._announced(impl)) or []:
                if spec.name in found:
                    first = found[spec.name].plugin
                    raise UserError(
                        f"task {spec.name!r} is claimed by two plugins: {first!r} "
                        f"({_describe(*self._origin.get(first, (None, None)))}) and {spec.plugin!r} "
                        f"({_describe(*self._origin.get(spec.plugin, (None, None)))}); uninstall one, "
                        f"or choose with CLDYN_PLUGINS")
                found[spec.name] = spec
        return found

    def register_commands(self, cli: typer.Typer) -> None:
        """Let each working plugin add its commands; one that raises is skipped."""
        for impl in self._impls("register_commands"):
            self._attempt(impl.plugin_name, lambda: _call(impl, cli=cli))

    def list_plugins(self, include_hidden: bool | None = None) -> list[PluginInfo]:
        """Registered plugins, then those that never loaded; plugins offering only hidden tasks are
        left out unless ``include_hidden`` (default: ``CLDYN_SHOW_HIDDEN``)."""
        show = _flag("CLDYN_SHOW_HIDDEN") if include_hidden is None else include_hidden
        specs = list(self.tasks().values())  # first, so hook failures are recorded below
        names = [name for name, _ in self.pm.list_name_plugin()]
        names += [name for name in self._origin if name in self._errors and name not in names]
        infos = []
        for name in names:
            own = [spec for spec in specs if spec.plugin == name]
            shown = [spec.name for spec in own if show or not spec.hidden]
            if own and not shown:
                continue
            package, version = self._origin.get(name, (None, None))
            plugin = self.pm.get_plugin(name)
            hooks = sorted(caller.name for caller in self.pm.get_hookcallers(plugin) or []) if plugin else []
            infos.append(PluginInfo(name, package, version, shown, self._errors.get(name), hooks))
        return infos

    def versions(self) -> dict[str, str]:
        """``{plugin: "package version"}`` of every plugin that loaded, for checkpoint provenance."""
        return {name: _describe(*self._origin.get(name, (None, None)))
                for name, _ in self.pm.list_name_plugin() if name not in self._errors}

    def get_task(self, name: str) -> TaskSpec:
        """A task by its name ("det") or by the name of the plugin that offers it ("yolo")."""
        specs = self.tasks()
        if name in specs:
            return specs[name]
        offered = [spec for spec in specs.values() if spec.plugin == name]
        if len(offered) == 1:
            return offered[0]
        if offered:
            raise UserError(f"plugin {name!r} offers several tasks ({', '.join(s.name for s in offered)}); "
                            "pass one of them")
        show = _flag("CLDYN_SHOW_HIDDEN")
        known = sorted(spec.name for spec in specs.values() if show or not spec.hidden)
        close = difflib.get_close_matches(name, known, n=1)
        message = f"unknown task {name!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
        message += f"; known tasks: {', '.join(known)}" if known else \
            "; no task plugins are installed (e.g. pip install cldyn-plugin-yolo)"
        if self._errors:
            message += f"; {len(self._errors)} plugin(s) failed to load, see `cldyn plugins`"
        raise UserError(message)


_registry: PluginRegistry | None = None


def registry() -> PluginRegistry:
    """The process-wide registry, loading plugins on first use."""
    global _registry
    if _registry is None:
        _registry = PluginRegistry()
    return _registry


def reset() -> None:
    """Forget loaded plugins, so the next use reloads them (tests, changed environment variables)."""
    global _registry
    _registry = None


def manager() -> pluggy.PluginManager:
    """The pluggy manager, e.g. to register a plugin object in-process (tests, notebooks)."""
    return registry().pm


def list_plugins(include_hidden: bool | None = None) -> list[PluginInfo]:
    """See :meth:`PluginRegistry.list_plugins`."""
    return registry().list_plugins(include_hidden)


@contextmanager
def use_plugin(plugin: object, name: str) -> Iterator[None]:
    """Register ``plugin`` in-process for the duration of a ``with`` block (tests, notebooks).

    An installed plugin of the same name (e.g. the very package under test, after ``pip install``)
    is set aside for the block and put back after it, so tests pass whether or not it is installed.
    """
    pm = manager()
    previous = pm.unregister(name=name) if pm.has_plugin(name) else None
    pm.register(plugin, name=name)
    try:
        yield
    finally:
        pm.unregister(name=name)
        if previous is not None:
            pm.register(previous, name=name)


def plugin_versions() -> dict[str, str]:
    """See :meth:`PluginRegistry.versions`."""
    return registry().versions()


def get_task(name_or_plugin: str) -> TaskSpec:
    """See :meth:`PluginRegistry.get_task`; an unknown name is a UserError listing the known tasks."""
    return registry().get_task(name_or_plugin)


def register_commands(cli: typer.Typer) -> None:
    """See :meth:`PluginRegistry.register_commands`."""
    registry().register_commands(cli)
