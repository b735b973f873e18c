"""Bodies on the wire: what a producer hands to the outbox, built through a body model.

Producers build a body model (e.g. ``RecordingBody(...)``), which validates it against the
schema, then :func:`to_wire` turns it into the JSON-ready dict the outbox stores. The dict keeps
the shape stations have always sent: only the fields the producer set are present (a field
left at its default is absent, one set to None is ``null``), and times are
``datetime.isoformat()`` strings (``+00:00``, not pydantic's ``Z``). Numbers take the schema's
type (an int given for a ``float`` field is sent as a float).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fieldstation.messages.bodies import Body

__all__ = ["to_wire"]


def to_wire(body: Body) -> dict[str, Any]:
    """The JSON-ready dict of ``body``: the fields set on it (nested models as dicts), aware
    datetimes as ISO 8601 strings with their offset. Values of free-form fields (``data``,
    ``extra``, ``metrics.host``, ...) are left as given, except datetimes, which become
    ISO 8601 strings."""
    return _iso(body.model_dump(mode="python", exclude_unset=True))


def _iso(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {key: _iso(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_iso(item) for item in value]
    return value
