"""Plugins: classes that installed packages add to a registry through an entry-point group."""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from importlib import metadata

log = logging.getLogger(__name__)

_found: dict[str, dict[str, type]] = {}
_loading: set[str] = set()


def load_class(target: str) -> type:
    """The class a ``"module:Class"`` string names."""
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)


def registered(group: str, base: type, built_in: dict[str, str], what: str) -> dict[str, type]:
    """Name -> class: the built-in ones, then each entry point of `group` whose class subclasses
    `base` (its ``name`` attribute, else the entry point's name), found once per process. A plugin
    that fails to import, is not a `base`, or takes a name already there is skipped with a warning
    naming it. A plugin that asks while it is being imported (to subclass a built-in) gets the
    built-in ones, of this group or another (a package adding a runtime and a space asks both)."""
    if group in _found:
        return _found[group]
    found: dict[str, type] = {name: load_class(target) for name, target in built_in.items()}
    if _loading:
        return found
    _loading.add(group)
    try:
        _add_entry_points(found, group, base, what)
    finally:
        _loading.discard(group)
    _found[group] = found
    return found


def _add_entry_points(found: dict[str, type], group: str, base: type, what: str) -> None:
    for ep in metadata.entry_points(group=group):
        try:
            cls = ep.load()
        except Exception as exc:  # a broken plugin must not break the built-in ones
            log.warning("%s plugin %s (%s) does not load: %s", what, ep.name, ep.value, exc)
            continue
        name = getattr(cls, "name", "") or ep.name
        if not (isinstance(cls, type) and issubclass(cls, base)):
            log.warning("%s plugin %s (%s) is not a subclass of %s; skipped", what, ep.name, ep.value, base.__qualname__)
        elif name in found:
            log.warning("%s plugin %s (%s) takes the name %r of another %s; skipped", what, ep.name, ep.value, name, what)
        else:
            found[name] = cls


@dataclass(frozen=True)
class Registry:
    """The classes of one kind (runtimes, search spaces) by name: `built_in` ("module:Class" each,
    imported on first use) and the plugins of the entry-point `group`."""

    group: str
    base: type
    built_in: dict[str, str]
    what: str  # "runtime", "search space": in messages
    error: type[Exception]  # raised for an unknown name

    def all(self) -> dict[str, type]:
        return registered(self.group, self.base, self.built_in, self.what.split()[-1])

    def get(self, name: str) -> type:
        """A class by name (a built-in one without looking for plugins); `error` listing the names
        for an unknown one."""
        key = name.strip().lower()
        if key in self.built_in:
            return load_class(self.built_in[key])
        found = self.all()
        match = next((cls for n, cls in found.items() if n.lower() == key), None)  # a plugin's name may have capitals
        if match is None:
            raise self.error(f"unknown {self.what} {name!r}; choose from {', '.join(found)} "
                             f"(or install a plugin that adds it to the {self.group!r} entry points)")
        return match
