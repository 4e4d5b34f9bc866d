"""One lazy, declarative registry for adapters, metrics and datasets.

In the manner of lmms-eval's ``models/registry_v2.py``: a registry maps an **id** to a
*spec* that names where the object lives as an import path ``"package.module:attr"``, plus
metadata (help text, defaults, what it needs). Nothing is imported to list or describe the
entries; :meth:`Registry.load` imports the target when it is used.

Rules, checked when something is registered (:class:`RegistryConflict`, a ConfigError):

- an id registered twice to the **same** target is a no-op; to a different target it raises;
- an alias can never shadow an id (nor an id an alias), and an alias belongs to one id;
- an alias must point to an id that exists.

**Plugins.** Installed distributions add entries through an entry-point group
(``unified_bench.models``, ``unified_bench.metrics``, ``unified_bench.datasets``)::

    [project.entry-points."unified_bench.models"]
    my-model = "my_pkg.adapter:MyAdapter"

Entry points are read on every lookup (cheap: ``*.dist-info`` metadata, no imports), so a
distribution added to ``sys.path`` at run time is seen. A plugin never breaks unrelated
commands: a malformed entry point, or one that conflicts with a built-in name, becomes a
:class:`PluginProblem` (listed by name with its error, and raised as a ConfigError only when
that name is used); a plugin whose module cannot be imported fails with a one-line
ConfigError naming the plugin and the package when it is built.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import entry_points
from operator import attrgetter
from typing import Any, Generic, TypeVar

from unified_bench.core.errors import ConfigError

S = TypeVar("S")

#: "package.module:attr" (attr may be dotted).
_TARGET = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


class RegistryConflict(ConfigError):
    """A registration that would make a name ambiguous (a programming or packaging error)."""


@dataclass(frozen=True)
class PluginProblem:
    """A plugin entry that could not be registered or imported, reported by name."""

    name: str
    source: str  # "plugin:<distribution>"
    target: str
    error: str

    def line(self) -> str:
        return f"{self.name} ({self.source}, {self.target}): {self.error}"


def split_target(target: str) -> tuple[str, str]:
    """``"pkg.mod:Attr"`` -> ``("pkg.mod", "Attr")``; raises ValueError when malformed."""
    if not _TARGET.match(target):
        raise ValueError(f"{target!r} is not an import path of the form 'package.module:attribute'")
    module, _, attr = target.partition(":")
    return module, attr


def module_available(module: str) -> str | None:
    """None when ``module`` can be found, else why not (an import error's text). Imports its
    parent packages (as any lookup of a submodule does), never the module itself."""
    try:
        found = importlib.util.find_spec(module)
    except Exception as err:  # a parent package that is missing, raises on import, or is blocked
        return _describe(err)
    return None if found is not None else f"No module named {module!r}"


def _describe(err: BaseException) -> str:
    text = str(err)
    return text if isinstance(err, ImportError) and text else f"{type(err).__name__}: {text}"


class Registry(Generic[S]):
    """id -> spec, with aliases, in-process objects and entry-point plugins.

    ``S`` is the domain's spec type (AdapterSpec, MetricSpec, DatasetSpec). The registry
    reads ``spec.name``, ``spec.aliases`` (optional) and the spec's import path through
    ``target`` (default: ``spec.target``); ``plugin_spec(name, target, distribution)`` makes
    a spec for an entry point.

    :attr:`entries` is a plain dict (id -> spec) and the source of truth for the built-in
    and in-process entries; lookups read it live.
    """

    def __init__(
        self,
        kind: str,
        *,
        group: str | None = None,
        plugin_spec: Callable[[str, str, str], S] | None = None,
        target: Callable[[S], str] = attrgetter("target"),
        error: type[Exception] = ConfigError,
        list_command: str | None = None,
    ) -> None:
        self.kind = kind  # "model", "metric", "dataset": used in messages
        self.group = group
        self.entries: dict[str, S] = {}
        self._aliases: dict[str, str] = {}  # aliases added with add_alias (spec.aliases are read live)
        self._objects: dict[str, Any] = {}  # id -> object registered in this process
        self._plugin_spec = plugin_spec
        self._target = target
        self._error = error
        self.list_command = list_command

    # --- registration --------------------------------------------------------------------

    def target_of(self, spec: S) -> str:
        return self._target(spec)

    def alias_map(self) -> dict[str, str]:
        """alias -> id for the registered entries (spec aliases and :meth:`add_alias`)."""
        out = {alias: name for alias, name in self._aliases.items() if name in self.entries}
        for name, spec in self.entries.items():
            for alias in getattr(spec, "aliases", ()) or ():
                out.setdefault(alias, name)
        return out

    def register(self, spec: S, *, obj: Any = None) -> S:
        """Add ``spec`` (and ``obj``, an object already in this process, if given)."""
        name = spec.name  # type: ignore[attr-defined]
        target = self.target_of(spec)
        if obj is None:
            split_target(target)  # malformed paths fail here, not when used
        aliases = self.alias_map()
        if name in aliases and aliases[name] != name:
            raise RegistryConflict(f"{self.kind} id {name!r} would shadow the alias {name!r} of {aliases[name]!r}")
        existing = self.entries.get(name)
        if existing is not None and self.target_of(existing) != target:
            raise RegistryConflict(
                f"{self.kind} {name!r} is already registered to {self.target_of(existing)}; "
                f"cannot register it again to {target}"
            )
        for alias in getattr(spec, "aliases", ()) or ():
            self._check_alias(alias, name, aliases)
        if existing is None:
            self.entries[name] = spec
        if obj is not None:
            self._objects[name] = obj
        return self.entries[name]

    def add_alias(self, alias: str, name: str) -> None:
        if name not in self.entries:
            raise RegistryConflict(f"alias {alias!r} points to {name!r}, which is not a registered {self.kind}")
        self._check_alias(alias, name, self.alias_map())
        self._aliases[alias] = name

    def _check_alias(self, alias: str, name: str, aliases: dict[str, str]) -> None:
        if alias in self.entries or alias == name:
            raise RegistryConflict(f"alias {alias!r} of {self.kind} {name!r} would shadow the {self.kind} id {alias!r}")
        if aliases.get(alias, name) != name:
            raise RegistryConflict(f"alias {alias!r} of {self.kind} {name!r} is already an alias of {aliases[alias]!r}")

    def unregister(self, name: str) -> None:
        """Forget ``name``, its object and the aliases added for it (tests)."""
        self.entries.pop(name, None)
        self._objects.pop(name, None)
        for alias in [a for a, n in self._aliases.items() if n == name]:
            del self._aliases[alias]

    def object(self, name: str) -> Any:
        """The object registered in this process for ``name``, or None."""
        return self._objects.get(name)

    # --- plugins -------------------------------------------------------------------------

    def scan_plugins(self) -> tuple[dict[str, S], list[PluginProblem]]:
        """The entry-point group's specs, and the entries that could not be registered."""
        specs: dict[str, S] = {}
        problems: list[PluginProblem] = []
        if self.group is None or self._plugin_spec is None:
            return specs, problems
        try:
            found: Iterable[Any] = list(entry_points(group=self.group))
        except Exception as err:  # unreadable metadata of some distribution
            return specs, [PluginProblem("?", "plugin:?", "?", f"cannot read the {self.group!r} entry points ({_describe(err)})")]
        aliases = self.alias_map()
        for entry in found:
            dist = getattr(getattr(entry, "dist", None), "name", None) or "unknown"
            source = f"plugin:{dist}"
            name, target = entry.name, entry.value.strip()

            def problem(message: str) -> None:
                problems.append(PluginProblem(name, source, target, message))

            try:
                split_target(target)
            except ValueError as err:
                problem(f"malformed entry point in group {self.group!r}: {err}")
                continue
            if name in self.entries or name in aliases:
                own = self.entries.get(name) or self.entries[aliases[name]]
                if self.target_of(own) != target:
                    problem(f"conflicts with the built-in {self.kind} {name!r} ({self.target_of(own)}); ignored")
                continue  # the same target declared twice (a stale install): nothing to do
            if name in specs:
                if self.target_of(specs[name]) != target:
                    problem(f"conflicts with {name!r} = {self.target_of(specs[name])} declared earlier on sys.path; ignored")
                continue
            try:
                specs[name] = self._plugin_spec(name, target, dist)
            except Exception as err:
                problem(_describe(err))
        return specs, problems

    def problems(self) -> list[PluginProblem]:
        return self.scan_plugins()[1]

    # --- lookup --------------------------------------------------------------------------

    def specs(self) -> dict[str, S]:
        """Every usable entry: plugins, then the built-in and in-process ones (which win)."""
        plugins, _ = self.scan_plugins()
        return {**plugins, **self.entries}

    def names(self) -> list[str]:
        return sorted(self.specs())

    def lookup(self, name: str) -> S | None:
        """An id or alias -> its spec; None when unknown (plugins are read only if needed)."""
        if name in self.entries:
            return self.entries[name]
        canonical = self.alias_map().get(name)
        if canonical is not None:
            return self.entries[canonical]
        return self.scan_plugins()[0].get(name)

    def problem(self, name: str) -> PluginProblem | None:
        return next((p for p in self.problems() if p.name == name), None)

    def get(self, name: str, *, extra_known: Iterable[str] = ()) -> S:
        """:meth:`lookup` or a clear error: the plugin's problem, or the known names."""
        spec = self.lookup(name)
        if spec is not None:
            return spec
        raise self._error(self.unknown_message(name, extra_known=extra_known))

    def unknown_message(self, name: str, *, extra_known: Iterable[str] = ()) -> str:
        found = self.problem(name)
        if found is not None:
            return f"{self.kind} {name!r} cannot be used: {found.source} declares it as {found.target}, which {found.error}"
        known = ", ".join(sorted(set(self.specs()) | set(extra_known)))
        listing = f" (run `{self.list_command}`)" if self.list_command else ""
        return f"unknown {self.kind} {name!r}; known: {known}{listing}"

    # --- loading -------------------------------------------------------------------------

    def load(self, spec: S, *, name: str | None = None, hint: str = "") -> Any:
        """The object ``spec`` names: the in-process one, else its import (the only place
        heavy imports happen). Failures are one-line errors naming ``name`` (default: the id)."""
        name = name or spec.name  # type: ignore[attr-defined]
        registered = self._objects.get(spec.name)  # type: ignore[attr-defined]
        if registered is not None and self.entries.get(spec.name) is spec:  # type: ignore[attr-defined]
            return registered
        target = self.target_of(spec)
        try:
            module_name, attr = split_target(target)
        except ValueError as err:
            raise self._error(f"{self.kind} {name!r}: {err}") from None
        try:
            module = importlib.import_module(module_name)
        except Exception as err:
            raise self._error(self.import_failure(name, spec, module_name, err, hint)) from err
        obj: Any = module
        try:
            for part in attr.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            raise self._error(f"{self.kind} {name!r}: {module_name} has no attribute {attr!r}") from None
        return obj

    def import_failure(self, name: str, spec: S, module_name: str, err: BaseException, hint: str = "") -> str:
        """The message for a target whose module cannot be imported. When its top-level
        package cannot be found (not installed), say which package provides it."""
        top = module_name.partition(".")[0]
        source = getattr(spec, "source", "builtin") or "builtin"
        declared = f" (declared by {source})" if source.startswith("plugin:") else ""
        why = None if _is_own_package(top) else module_available(top)
        if why is not None:
            listing = f"`{self.list_command}`" if self.list_command else "another one"
            return (
                f"{name}: provided by the package {top!r}, which cannot be imported ({why}){declared}; "
                f"install it, or pick another {self.kind} ({listing})"
            )
        return f"{self.kind} {name!r}: cannot import {module_name} ({_describe(err)}){declared}{hint}"


def _is_own_package(top: str) -> bool:
    return top == __name__.partition(".")[0]
