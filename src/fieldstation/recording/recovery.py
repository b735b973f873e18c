"""Start-up recovery: finish or salvage what a crash left behind (run before any recorder).

For every sidecar in ``spool/`` (see :mod:`fieldstation.recording.chunk`):

- a closed chunk whose audio is intact (SHA-256 matches) is committed with its own end reason;
- an unfinished (or damaged) chunk is salvaged by the writer of its media (audio and video:
  decoded with FFmpeg through PyAV up to the first undecodable frame; readings: every whole
  record batch), every frame before the damage kept, rewritten cleanly and committed with end reason
  ``recovered``; nothing decodable: quarantined. When the rewrite cannot be written (a full
  disk) the chunk stays in ``spool/`` for the next try, never quarantined;
- a chunk already renamed into ``data/`` gets its row if it has none (found under its own
  name, or the ``_N``-suffixed one the commit chose when that name was taken, by its hash).

Then media files in ``spool/`` without a sidecar are quarantined, and rows whose file is gone
get ``file_state = 'missing'``. Recovery is idempotent and safe to crash in.

Its cost must not grow with the archive (decision 0120): a commit leaves its sidecar in
``spool/`` until the row is committed, so a crash can only have left work there. The **quick**
recovery of every start-up therefore reads ``spool/`` and checks the files of the rows not yet
confirmed by a processor (``recorded``/``processing``: the ones it will read next), found by
an index; the **full** recovery (a new or rebuilt database, ``db recover``) also walks every
file under ``data/`` (one without a row gets one from the metadata embedded in it, end reason
from its sidecar or GUANO, else ``recovered``, or is quarantined when unreadable) and checks
the file of every row marked present.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from fieldstation.home import StationHome, fsync_dir, move_durably
from fieldstation.job import JobContext
from fieldstation.recording.chunk import (
    FinishedChunk,
    read_sidecar,
    sha256_file,
    sidecar_closed,
    write_json_atomic,
)
from fieldstation.recording.commit import commit_chunk, insert_row
from fieldstation.recording.media import SUFFIXES, format_of_path, media_format
from fieldstation.recording.metadata import ChunkSpec, MetadataError
from fieldstation.store.events import EventBacklog, record_event
from fieldstation.store.models import Recording
from fieldstation.store.recordings import (
    find_by_path,
    mark_missing,
    present_paths,
    unconfirmed_paths,
)

__all__ = ["RecoveryReport", "recover", "recover_spool"]

log = logging.getLogger(__name__)
_Leftovers = dict[tuple[str, int], dict[str, Any]]


@dataclass
class RecoveryReport:
    """What :func:`recover` did; paths are relative to the station home."""

    committed: list[str] = field(default_factory=list)
    """Closed chunks found in spool/ and committed with their own end reason."""
    salvaged: list[str] = field(default_factory=list)
    """Unfinished chunks decoded and committed with end reason ``recovered``."""
    quarantined: list[str] = field(default_factory=list)
    """Files moved to quarantine/ (undecodable, or no metadata)."""
    registered: list[str] = field(default_factory=list)
    """Files in data/ that had no row and got one."""
    missing: list[int] = field(default_factory=list)
    """Ids of rows whose file is gone (now ``file_state = 'missing'``)."""
    removed: list[str] = field(default_factory=list)
    """Leftovers deleted from spool/ (stale sidecars, temp files)."""

    @property
    def changed(self) -> bool:
        """True when recovery found anything to do."""
        return any(
            (
                self.committed,
                self.salvaged,
                self.quarantined,
                self.registered,
                self.missing,
                self.removed,
            )
        )

    def __str__(self) -> str:
        """One line for the log: ``"nothing to recover"`` or the counts and paths, e.g.
        ``"1 committed (spool/a.flac), 2 missing (ids 4, 7)"``."""
        if not self.changed:
            return "nothing to recover"
        parts = []
        for name, items in self.as_dict().items():
            if items:
                shown = ", ".join(str(item) for item in items[:3])
                more = f", +{len(items) - 3} more" if len(items) > 3 else ""
                ids = "ids " if name == "missing" else ""
                parts.append(f"{len(items)} {name} ({ids}{shown}{more})")
        return ", ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "committed": self.committed,
            "salvaged": self.salvaged,
            "quarantined": self.quarantined,
            "registered": self.registered,
            "missing": self.missing,
            "removed": self.removed,
        }


def _quarantine(home: StationHome, path: Path, report: RecoveryReport) -> None:
    target = home.quarantine_target(path.name)
    move_durably(path, target)
    report.quarantined.append(target.relative_to(home.root).as_posix())
    log.warning("recovery: quarantined %s as %s", path, target)


def _rel(home: StationHome, path: Path) -> str:
    return path.relative_to(home.root).as_posix()


def _closed_chunk(spec: ChunkSpec, side: dict[str, Any], audio: Path, sidecar: Path) -> Any:
    if not side.get("closed"):
        return None
    if not audio.exists() or sha256_file(audio) != side.get("sha256"):
        return None
    return FinishedChunk(
        spec=spec,
        audio=audio,
        sidecar=sidecar,
        frames=int(side["frames"]),
        end_reason=str(side["end_reason"]),
        bytes=int(side["bytes"]),
        sha256=str(side["sha256"]),
        extra=dict(side.get("extra") or {}),
    )


def _salvage(
    ctx: JobContext,
    spec: ChunkSpec,
    audio: Path,
    sidecar: Path,
    report: RecoveryReport,
    reason: str = "recovered",
) -> None:
    """Rewrite the decodable part of ``audio`` cleanly and commit it with end ``reason``.

    The rewrite goes to ``<stem>.salvage.<ext>`` first; when it fails (a full disk) the temp
    file is removed and the error raised: ``audio`` and its sidecar stay for the next try."""
    temp = audio.with_name(f"{audio.stem}.salvage{audio.suffix}")
    try:
        frames = media_format(spec.media).salvage(audio, spec, temp, reason)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    if frames == 0:
        temp.unlink(missing_ok=True)
        _quarantine(ctx.home, audio, report)
        sidecar.unlink(missing_ok=True)
        return
    with open(temp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(temp, audio)
    fsync_dir(audio.parent)
    finished = FinishedChunk(
        spec=spec,
        audio=audio,
        sidecar=sidecar,
        frames=frames,
        end_reason=reason,
        bytes=audio.stat().st_size,
        sha256=sha256_file(audio),
        extra={"salvaged_frames": frames},
    )
    # the sidecar says "closed" with the salvaged file's hash before the commit renames it into
    # data/: a crash between that rename and the row finds it there by hash (quick recovery
    # does not walk data/, so an unfinished sidecar would leave it without a row for ever)
    write_json_atomic(sidecar, sidecar_closed(finished))
    row = commit_chunk(ctx.db, ctx.config, ctx.home, finished, ctx.clock.now())
    report.salvaged.append(row.path)


def _placed_files(home: StationHome, spec: ChunkSpec, side: dict[str, Any]) -> list[Path]:
    """The files in ``data/`` that the closed chunk of sidecar ``side`` may have been renamed
    to: ``spec.relpath()``, or that name with the ``_N`` suffix
    :func:`~fieldstation.recording.commit.place_in_data` adds when the name is taken, holding
    exactly the chunk's bytes (size and SHA-256 of the sidecar), unsuffixed name first."""
    if not side.get("closed"):
        return []
    base = home.root / spec.relpath()
    if not base.parent.is_dir():
        return []
    pattern = re.compile(rf"^{re.escape(base.stem)}(_[0-9]+)?{re.escape(base.suffix)}$")
    names = sorted(
        (p for p in base.parent.iterdir() if pattern.match(p.name) and p.is_file()),
        key=lambda p: (len(p.name), p.name),
    )
    return [
        p
        for p in names
        if p.stat().st_size == side.get("bytes") and sha256_file(p) == side.get("sha256")
    ]


def _owner(ctx: JobContext, sensor: str | None) -> Any:
    """A predicate on spool file names: True for files of ``sensor`` (None: every file)."""
    if sensor is None:
        return lambda name: True
    pattern = re.compile(
        rf"^{re.escape(ctx.config.station.id)}_{re.escape(sensor)}_\d{{8}}T\d{{6}}\.\d{{6}}Z\."
    )
    return lambda name: pattern.match(name) is not None


def _recover_spool(
    ctx: JobContext,
    report: RecoveryReport,
    sensor: str | None = None,
    salvage_reason: str = "recovered",
) -> dict[tuple[str, int], dict[str, Any]]:
    """Handle every sidecar (of ``sensor`` only, when given); returns closed sidecars of chunks
    already in data/ by (session, chunk index), for the data walk."""
    home = ctx.home
    owned = _owner(ctx, sensor)
    leftovers: _Leftovers = {}
    for temp in sorted(home.spool.glob("*.salvage.*")) + sorted(home.spool.glob("*.tmp")):
        if owned(temp.name):
            temp.unlink(missing_ok=True)
            report.removed.append(_rel(home, temp))
    for sidecar in sorted(home.spool.glob("*.json")):
        if not owned(sidecar.name):
            continue
        try:
            side = read_sidecar(sidecar)
            spec = ChunkSpec.from_embedded(side["spec"])
        except (OSError, ValueError, MetadataError):
            _quarantine(home, sidecar, report)
            continue
        audio = home.spool / str(side.get("audio") or f"{sidecar.stem}.{spec.format}")
        if audio.exists():
            closed = _closed_chunk(spec, side, audio, sidecar)
            if closed is not None:
                row = commit_chunk(ctx.db, ctx.config, home, closed, ctx.clock.now())
                report.committed.append(row.path)
            else:
                _salvage(ctx, spec, audio, sidecar, report, salvage_reason)
            continue
        placed = _placed_files(home, spec, side)
        for target in placed:
            relpath = _rel(home, target)
            with ctx.db.session() as session:
                has_row = find_by_path(session, relpath) is not None
            if not has_row:
                closed = _closed_chunk(spec, side, target, sidecar)
                if closed is not None:
                    insert_row(ctx.db, ctx.config, closed, relpath, ctx.clock.now())
                    report.registered.append(relpath)
                break
        if not placed and side.get("closed"):
            leftovers[(spec.session_id, spec.chunk_index)] = side
        sidecar.unlink(missing_ok=True)
        report.removed.append(_rel(home, sidecar))
    for audio in sorted(home.spool.iterdir()):
        if audio.is_file() and audio.suffix.lower() in SUFFIXES and owned(audio.name):
            _quarantine(home, audio, report)
    fsync_dir(home.spool)
    return leftovers


def _data_files(home: StationHome) -> Iterator[Path]:
    if home.data.exists():
        for path in sorted(home.data.rglob("*")):
            if path.is_file() and path.suffix.lower() in SUFFIXES:
                yield path


def _register(
    ctx: JobContext,
    path: Path,
    leftovers: _Leftovers,
    report: RecoveryReport,
) -> None:
    fmt = format_of_path(path)
    try:
        if fmt is None:
            raise MetadataError(f"{path} is not a chunk file")
        spec, embedded_reason, frames = fmt.inspect(path)
    except (MetadataError, OSError, RuntimeError, ValueError):
        _quarantine(ctx.home, path, report)
        return
    side = leftovers.get((spec.session_id, spec.chunk_index), {})
    chunk = FinishedChunk(
        spec=spec,
        audio=path,
        sidecar=path,
        frames=int(frames),
        end_reason=str(side.get("end_reason") or embedded_reason or "recovered"),
        bytes=path.stat().st_size,
        sha256=sha256_file(path),
        extra={"registered_by_recovery": True},
    )
    relpath = _rel(ctx.home, path)
    insert_row(ctx.db, ctx.config, chunk, relpath, ctx.clock.now())
    report.registered.append(relpath)


def recover_spool(
    ctx: JobContext,
    sensor: str,
    *,
    salvage_reason: str = "recovered",
    events: EventBacklog | None = None,
    what: str = "start-up",
) -> RecoveryReport:
    """Recover only ``sensor``'s leftovers in ``spool/`` (salvage, commit or quarantine).

    Run by the recorder of ``sensor`` when it starts, so a recorder restarted after a crash
    finishes its own chunks at once, and again after a full disk; safe while other recorders
    write (it touches only files named for ``sensor``). Unfinished chunks are salvaged with end
    reason ``salvage_reason``. Records a ``recovery`` event when anything was found (through
    ``events`` when given, which keeps it when the database is full).

    Raises what writing raises (``OSError``, ``soundfile.LibsndfileError``, SQLAlchemy errors):
    on a full disk (see :func:`~fieldstation.recording.disk.is_disk_full`) a chunk that cannot
    be salvaged or committed stays in ``spool/`` as it was, for the next call.
    """
    ctx.home.ensure()
    report = RecoveryReport()
    _recover_spool(ctx, report, sensor, salvage_reason)
    _report_event(ctx, report, f"recorder {sensor} {what}", events)
    return report


def _report_event(
    ctx: JobContext, report: RecoveryReport, what: str, events: EventBacklog | None = None
) -> None:
    if not report.changed:
        return
    summary = {k: len(v) for k, v in report.as_dict().items()}
    fields: dict[str, Any] = {
        "kind": "recovery",
        "source": ctx.name or "recovery",
        "message": f"{what} recovery: {summary}",
        "now": ctx.clock.now(),
        "severity": "warning" if report.quarantined or report.missing else "info",
        "data": report.as_dict(),
    }
    if events is not None:
        events.record(**fields)
        return
    with ctx.db.session() as session:
        record_event(
            session,
            station_id=ctx.config.station.id,
            destinations=ctx.config.destinations_for("event"),
            **fields,
        )


def recover(ctx: JobContext, *, full: bool = True) -> RecoveryReport:
    """Bring spool/, data/ and the recording rows back in agreement (module docstring).

    ``full``: also walk every file under ``data/`` and check the file of every row (what a
    new or rebuilt database needs; its cost grows with the archive); False: the quick
    recovery of a start-up, whose cost grows only with ``spool/`` and the unprocessed rows.
    Run it before the recorders start (they must not be writing). Records one ``recovery``
    event when anything was found. Raises ``OSError`` when the home cannot be written.
    """
    home = ctx.home.ensure()
    report = RecoveryReport()
    leftovers = _recover_spool(ctx, report)
    with ctx.db.session() as session:
        rows = present_paths(session) if full else unconfirmed_paths(session)
        known = set(session.scalars(select(Recording.path))) if full else set()
    if full:
        for path in _data_files(home):
            if _rel(home, path) not in known:
                _register(ctx, path, leftovers, report)
    gone = [rid for path, rid in rows.items() if not (home.root / path).exists()]
    if gone:
        with ctx.db.session() as session:
            mark_missing(session, gone, ctx.clock.now())
        report.missing.extend(gone)
    _report_event(ctx, report, "start-up" if not full else "full start-up")
    return report
