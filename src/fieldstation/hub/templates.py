"""Config templates: one station file shared by many stations, each member with its own
overrides, pushed as ``set_config`` commands to every member (``fieldstation hub template``).

A template is TOML text (secrets as ``env:`` / ``file:`` references only). A member's
overrides map dotted keys to values: ``station.latitude = 51.5``, ``station.name = "Hedge 7"``,
``outputs.0.password = "file:/etc/fieldstation/mqtt-password"`` (a number picks a list item).
Rendering parses the template, sets ``station.id`` to the member's id, applies the overrides
and writes TOML again (``tomli-w``: the template's comments are not kept). What a station
receives is validated by the station itself, exactly as ``fieldstation validate`` does.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import select

from fieldstation.hub.commands import CommandSigner, queue_command, set_config_args
from fieldstation.hub.db import HubDatabase
from fieldstation.hub.models import ConfigTemplate, ConfigTemplateMember

__all__ = ["TemplateError", "push_template", "render", "set_member", "set_template"]


class TemplateError(ValueError):
    """A template or override that cannot be used (the message names it and the key)."""


def set_template(db: HubDatabase, name: str, text: str, *, now: datetime, by: str) -> None:
    """Store (or replace) template ``name``. Raises :class:`TemplateError` for text that is
    not TOML or holds a secret in clear."""
    try:
        set_config_args(text)
    except ValueError as error:
        raise TemplateError(f"template {name!r}: {error}") from error
    with db.session() as session:
        row = session.get(ConfigTemplate, name)
        if row is None:
            session.add(ConfigTemplate(name=name, text=text, updated_at=now, updated_by=by[:100]))
        else:
            row.text, row.updated_at, row.updated_by = text, now, by[:100]


def set_member(
    db: HubDatabase, name: str, station: str, overrides: Mapping[str, Any], *, now: datetime
) -> None:
    """Make ``station`` a member of template ``name`` with ``overrides`` (replacing earlier
    ones). Raises :class:`TemplateError` for an unknown template, or overrides that cannot be
    applied or put a secret in clear (checked by rendering)."""
    with db.session() as session:
        template = session.get(ConfigTemplate, name)
        if template is None:
            raise TemplateError(f"no template {name!r}: add it with 'hub template set'")
        try:
            set_config_args(render(template.text, station, overrides))
        except ValueError as error:
            raise TemplateError(f"template {name!r}, station {station!r}: {error}") from error
        row = session.get(ConfigTemplateMember, (name, station))
        if row is None:
            session.add(
                ConfigTemplateMember(
                    template=name, station=station, overrides=dict(overrides), updated_at=now
                )
            )
        else:
            row.overrides, row.updated_at = dict(overrides), now


def render(text: str, station: str, overrides: Mapping[str, Any]) -> str:
    """The station file of ``station``: ``text`` with ``station.id`` set and ``overrides``
    applied (dotted keys; a number selects a list item). Raises ``ValueError`` naming the key
    that cannot be set."""
    import tomli_w

    data = tomllib.loads(text)
    table = data.setdefault("station", {})
    if not isinstance(table, dict):
        raise ValueError("station: must be a table")
    table["id"] = station
    for key, value in overrides.items():
        _set(data, key, value)
    return tomli_w.dumps(data)


def _set(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node: Any = data
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ValueError(f"{key}: {part!r} is not an item of that list")
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
        else:
            raise ValueError(f"{key}: {'.'.join(parts[:depth])} is a value, not a table")


def push_template(
    db: HubDatabase,
    signer: CommandSigner,
    name: str,
    *,
    now: datetime,
    by: str,
    stations: list[str] | None = None,
) -> dict[str, str]:
    """Queue a ``set_config`` for every member of template ``name`` (or those of them in
    ``stations``); returns station -> command id. Every member's file is rendered and checked
    first: one that fails raises :class:`TemplateError` and nothing is queued."""
    with db.session() as session:
        template = session.get(ConfigTemplate, name)
        if template is None:
            raise TemplateError(f"no template {name!r}: add it with 'hub template set'")
        members = session.execute(
            select(ConfigTemplateMember.station, ConfigTemplateMember.overrides)
            .where(ConfigTemplateMember.template == name)
            .order_by(ConfigTemplateMember.station)
        ).all()
        text = template.text
    chosen = [m for m in members if stations is None or m.station in stations]
    unknown = sorted(set(stations or []) - {m.station for m in members})
    if unknown:
        raise TemplateError(f"template {name!r} has no member {', '.join(unknown)}")
    if not chosen:
        raise TemplateError(
            f"template {name!r} has no members: add them with 'hub template member'"
        )
    rendered: dict[str, dict[str, str]] = {}
    for member in chosen:
        try:
            rendered[member.station] = set_config_args(
                render(text, member.station, member.overrides)
            )
        except ValueError as error:
            raise TemplateError(
                f"template {name!r}, station {member.station!r}: {error}"
            ) from error
    return {
        station: queue_command(db, signer, station, "set_config", args, now=now, created_by=by)
        for station, args in rendered.items()
    }
