"""``fieldstation init --guided``: the commented station file, filled in field by field.

The questions are the fields of the config models (:class:`~fieldstation.config.station.
StationSection` and the first sensor's plugin model), asked with their schema descriptions,
and the template's values as defaults. Each answer is put into the template text (the file
``init`` writes, comments kept) and the whole file is validated at once with
:func:`~fieldstation.config.parse_config`; an answer with an issue at its key is asked again
with the issue printed in ``validate``'s words. So the file written is ``init``'s file with the
answers in it, and it validates.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fieldstation.config import ConfigError, parse_config, template_text

__all__ = ["QUESTIONS", "Question", "guided_text", "set_value"]


@dataclass(frozen=True)
class Question:
    """One field asked by ``init --guided``.

    ``section``: the TOML table header the key is under (``[station]``, ``[[sensors]]``: the
    first such block); ``key``: the key; ``path``: the dotted key path validation reports;
    ``model``: where the description comes from (a callable returning the pydantic model);
    ``kind``: ``str``, ``float`` or ``raw`` (written as typed, for sizes like "48kHz" or names).
    """

    section: str
    key: str
    path: str
    model: Callable[[], Any]
    kind: str = "str"


def _station_section() -> Any:
    from fieldstation.config.station import StationSection

    return StationSection


def _sensor_model() -> Any:
    from fieldstation.config.plugins import load_plugin

    return load_plugin("sensors", "synthetic").config_model


QUESTIONS = (
    Question("[station]", "id", "station.id", _station_section),
    Question("[station]", "name", "station.name", _station_section),
    Question("[station]", "latitude", "station.latitude", _station_section, "float"),
    Question("[station]", "longitude", "station.longitude", _station_section, "float"),
    Question("[station]", "elevation", "station.elevation", _station_section, "float"),
    Question("[station]", "timezone", "station.timezone", _station_section),
    Question("[[sensors]]", "sample_rate", "sensors[0].sample_rate", _sensor_model),
    Question("[[sensors]]", "chunk", "sensors[0].chunk", _sensor_model),
    Question("[[sensors]]", "schedule", "sensors[0].schedule", _sensor_model),
)
"""What ``init --guided`` asks, in order."""

_LINE = re.compile(
    r"^(?P<key>[A-Za-z_][A-Za-z0-9_]*)(?P<eq>\s*=\s*)(?P<value>.*?)(?P<tail>\s+#.*)?$"
)


def _block(lines: list[str], section: str) -> tuple[int, int]:
    """``(first, end)`` line indices of the first ``section`` table (header excluded)."""
    start = lines.index(section) + 1
    end = next(
        (i for i in range(start, len(lines)) if lines[i].startswith("[")),
        len(lines),
    )
    return start, end


def current_value(text: str, section: str, key: str) -> Any:
    """The value of ``key`` in the first ``section`` table of ``text`` (None when absent)."""
    lines = text.splitlines()
    start, end = _block(lines, section)
    for line in lines[start:end]:
        match = _LINE.match(line)
        if match and match["key"] == key:
            return tomllib.loads(f"v = {match['value']}")["v"]
    return None


def set_value(text: str, section: str, key: str, value: Any) -> str:
    """``text`` with ``key`` of the first ``section`` table set to ``value`` (a TOML string,
    number or bool), keeping its end-of-line comment; the key is added at the end of the table
    when absent. Raises ``ValueError`` when ``section`` is not in ``text``."""
    literal = json.dumps(value) if isinstance(value, str | bool | int | float) else str(value)
    if isinstance(value, bool):
        literal = "true" if value else "false"
    lines = text.splitlines()
    if section not in lines:
        raise ValueError(f"no {section} table in the template")
    start, end = _block(lines, section)
    for i in range(start, end):
        match = _LINE.match(lines[i])
        if match and match["key"] == key:
            tail = match["tail"] or ""
            head = f"{key}{match['eq']}{literal}"
            if tail:  # keep the comment's column where the new value leaves room
                width = len(match["key"]) + len(match["eq"]) + len(match["value"])
                tail = " " * max(1, width + len(tail) - len(tail.lstrip()) - len(head)) + (
                    tail.lstrip()
                )
            lines[i] = head + tail
            return "\n".join(lines) + "\n"
    insert = end
    while insert > start and not lines[insert - 1].strip():
        insert -= 1
    lines.insert(insert, f"{key} = {literal}")
    return "\n".join(lines) + "\n"


def _parse(answer: str, kind: str) -> Any:
    if kind == "float":
        try:
            return float(answer)
        except ValueError:
            return answer  # validation says what a number must be
    return answer


def description(question: Question) -> str:
    """The schema description of ``question``'s field."""
    field = question.model().model_fields.get(question.key)
    return (field.description or "") if field is not None else ""


def issues_at(text: str, path: str) -> list[str]:
    """The validation issues of station file ``text`` at key ``path``, in ``validate``'s
    words (``station.latitude: Input should be ... (got 100)``)."""
    try:
        parse_config(tomllib.loads(text))
    except ConfigError as error:
        return [str(issue) for issue in error.issues if issue.path == path]
    return []


def guided_text(
    ask: Callable[[str, str], str], tell: Callable[[str], None], station_id: str | None = None
) -> str:
    """The station file, asking each of :data:`QUESTIONS` with ``ask(prompt, default) ->
    answer`` (an empty answer takes the default) and showing descriptions and errors with
    ``tell(line)``. Each answer is validated in the whole file; one with an issue is asked
    again. Returns text that :func:`~fieldstation.config.parse_config` accepts."""
    text = template_text(station_id)
    for question in QUESTIONS:
        default = current_value(text, question.section, question.key)
        tell("")
        tell(f"{question.path}: {description(question)}")
        while True:
            answer = ask(question.path, "" if default is None else str(default)).strip()
            value = default if answer == "" else _parse(answer, question.kind)
            if value is None:
                tell(f"{question.path}: a value is required")
                continue
            candidate = set_value(text, question.section, question.key, value)
            problems = issues_at(candidate, question.path)
            if not problems:
                # the id: init --id's file (the name follows the id until asked)
                text = template_text(value) if question.path == "station.id" else candidate
                break
            for problem in problems:
                tell(problem)
    parse_config(tomllib.loads(text))  # the file as a whole (cross checks): raises ConfigError
    return text
