"""What the ``upload`` command queues: one recording, or the station's log bundle."""

from __future__ import annotations

from datetime import datetime

from fieldstation.store import Database
from fieldstation.store.models import Recording
from fieldstation.store.retention import RecordingNotFoundError
from fieldstation.store.uploads import queue_log_bundle, queue_recording

__all__ = ["RecordingGoneError", "request_upload"]


class RecordingGoneError(ValueError):
    """The recording's file was deleted: there is nothing to upload."""


def request_upload(
    db: Database, *, recording_id: int | None, log_bundle: bool, now: datetime
) -> str:
    """Queue an upload to the hub for the ``upload`` command; returns its upload id (a UUID,
    the same for a recording already queued or sent). The ``upload`` job sends it on its
    next turn (``[upload] interval`` seconds at most). The caller refuses the command when
    the station has no ``[upload]`` section (nowhere to send it).

    ``recording_id``: a recording's row id; ``log_bundle``: a ``.tar.gz`` of ``logs/``,
    made when it is sent. Exactly one of the two. ``now``: UTC.

    Raises ValueError (neither or both given), :class:`RecordingNotFoundError` (no such
    recording), :class:`RecordingGoneError` (its file was deleted).
    """
    if (recording_id is None) == (not log_bundle):
        raise ValueError("upload: give either recording_id or log_bundle = true (one of them)")
    with db.session() as session:
        if log_bundle:
            return queue_log_bundle(session, now).upload_id
        recording = session.get(Recording, recording_id)
        if recording is None:
            raise RecordingNotFoundError(
                f"no recording with id {recording_id}; list them with `fieldstation recordings`"
            )
        if recording.file_state != "present":
            raise RecordingGoneError(
                f"recording {recording_id}'s file was deleted ({recording.delete_reason})"
            )
        return queue_recording(session, recording, now).upload_id
