"""Plugin discovery through entry points.

Three groups: ``fieldstation.sensors``, ``fieldstation.models``, ``fieldstation.messengers``.
Each entry point names a :class:`Plugin` object: its pydantic config model (which validates the
plugin's section of the station file) and a factory that builds the working object from a
validated config. Built-ins register the same way (see ``pyproject.toml``). Modules holding a
plugin object must stay cheap to import: heavy libraries are imported inside the factory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points
from typing import Any, Literal

from pydantic import BaseModel

__all__ = ["GROUPS", "Plugin", "PluginGroup", "UnknownPluginError", "load_plugin", "plugin_names"]

PluginGroup = Literal["sensors", "models", "messengers"]
GROUPS: dict[PluginGroup, str] = {
    "sensors": "fieldstation.sensors",
    "models": "fieldstation.models",
    "messengers": "fieldstation.messengers",
}


@dataclass(frozen=True)
class Plugin:
    """A plugin: the config model of its station-file section and a factory.

    ``factory(config, **context)`` builds the working object (a sensor, a model, a messenger)
    from an instance of ``config_model``; the context keywords depend on the group.
    ``preflight(config)`` (optional) lists what stands in the way on this machine.
    """

    config_model: type[BaseModel]
    factory: Callable[..., Any]
    description: str = ""
    preflight: Callable[[Any], list[str]] | None = None
    """``preflight(config)``: what would stop the plugin on *this* machine, found cheaply
    without building it (input files missing or undecodable, an optional extra not installed):
    one message per problem, naming the key and the fix. ``fieldstation validate`` runs it."""
    media: str = "audio"
    """Models: the media the model analyses (``audio``, ``video``, ``readings``); a processor
    only claims recordings of that media, and may only name sensors recording it."""


class UnknownPluginError(LookupError):
    """No installed plugin of that group has that name."""


@cache
def plugin_names(group: PluginGroup) -> tuple[str, ...]:
    """Names of the installed plugins of ``group``, sorted."""
    return tuple(sorted({ep.name for ep in entry_points(group=GROUPS[group])}))


@cache
def load_plugin(group: PluginGroup, name: str) -> Plugin:
    """Load the plugin ``name`` of ``group``.

    Raises :class:`UnknownPluginError` naming the installed plugins when there is none, and
    ``TypeError`` when the entry point does not name a :class:`Plugin`.
    """
    matches = [ep for ep in entry_points(group=GROUPS[group]) if ep.name == name]
    if not matches:
        known = ", ".join(plugin_names(group)) or "none"
        raise UnknownPluginError(f"no {group} plugin named {name!r} (installed: {known})")
    plugin = matches[0].load()
    if not isinstance(plugin, Plugin):
        raise TypeError(f"entry point {matches[0].value} is not a fieldstation Plugin")
    return plugin
