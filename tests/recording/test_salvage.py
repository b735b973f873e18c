"""Spool salvage keeps every frame FFmpeg can decode from a damaged chunk.

Before, ``salvage_frames`` read 4096-frame blocks with libsndfile and dropped a block that
failed part-way (``Internal psf_fseek() failed``): a short truncated FLAC chunk was
quarantined whole and salvaged FLACs lost their last decodable frames.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from sqlalchemy import select

from fieldstation.recording.audio import salvage_frames
from fieldstation.recording.chunk import ChunkWriter, write_json_atomic
from fieldstation.recording.metadata import ChunkSpec
from fieldstation.recording.recovery import recover
from fieldstation.sensors.base import audio_description
from fieldstation.store.models import Recording

SYNTH = {"name": "syn", "kind": "synthetic", "sample_rate": "16kHz", "chunk": "2s"}


def ffmpeg_frames(path: Path, channels: int) -> np.ndarray:
    """The samples FFmpeg decodes from ``path`` (int16, ``(n, channels)``): the ``ffmpeg``
    command's, or, where it is not installed, PyAV's plain decoding (the same FFmpeg
    libraries, bundled in the wheel) up to its first error."""
    if shutil.which("ffmpeg") is not None:
        out = subprocess.run(
            ["ffmpeg", "-v", "quiet", "-i", str(path), "-f", "s16le", "-acodec", "pcm_s16le", "-"],
            capture_output=True,
        ).stdout
        return np.frombuffer(out, dtype="<i2").reshape(-1, channels)
    import av

    parts = [np.zeros((0, channels), dtype="int16")]
    with av.open(str(path)) as container:
        try:
            for frame in container.decode(audio=0):
                parts.append(frame.to_ndarray().reshape(-1, channels))
        except av.error.FFmpegError:
            pass
    return np.concatenate(parts)


def old_salvage(path: Path, dtype: str) -> int:
    """Frames the old code kept: 4096-frame soundfile reads, a failing block dropped."""
    kept = 0
    try:
        with sf.SoundFile(str(path)) as f:
            while True:
                try:
                    data = f.read(4096, dtype=dtype, always_2d=True)
                except (sf.LibsndfileError, RuntimeError):
                    break
                kept += len(data)
                if len(data) < 4096:
                    break
    except (sf.LibsndfileError, RuntimeError, OSError):
        pass
    return kept


def signal(frames: int, channels: int = 1) -> np.ndarray:
    rng = np.random.default_rng(7)
    return (rng.standard_normal((frames, channels)) * 3000).astype("int16")


def test_a_truncated_flac_keeps_every_frame_ffmpeg_decodes(tmp_path: Path) -> None:
    original = signal(20_000)
    path = tmp_path / "damaged.flac"
    sf.write(str(path), original, 16_000, subtype="PCM_16")
    data = path.read_bytes()
    for cut in (len(data) // 3, len(data) // 2, len(data) - 100):
        path.write_bytes(data[:cut])  # truncated mid-stream (mid-frame)
        expected = ffmpeg_frames(path, 1)
        assert 0 < len(expected) < len(original)
        kept = salvage_frames(path, "int16")
        assert kept.shape == expected.shape and np.array_equal(kept, expected)
        assert np.array_equal(kept, original[: len(kept)])
        assert len(kept) > old_salvage(path, "int16"), cut


def test_a_corrupted_flac_keeps_the_frames_before_the_damage(tmp_path: Path) -> None:
    """Bytes overwritten mid-stream: every frame before the damaged one is kept (and nothing
    after it, which would no longer follow on from the chunk's start)."""
    import av

    original = signal(20_000, channels=2)
    path = tmp_path / "damaged.flac"
    sf.write(str(path), original, 16_000, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    middle = int(len(data) * 0.6)
    data[middle : middle + 16] = b"\x55" * 16
    path.write_bytes(bytes(data))
    decoded = 0  # PyAV (FFmpeg) decoding until its first error or gap (a skipped frame)
    with av.open(str(path)) as container:
        try:
            for frame in container.decode(audio=0):
                if frame.pts != decoded:
                    break
                decoded += frame.samples
        except av.error.FFmpegError:
            pass
    kept = salvage_frames(path, "int16")
    assert 0 < len(kept) == decoded < len(original)
    assert np.array_equal(kept, original[: len(kept)])
    assert len(kept) > old_salvage(path, "int16")


@pytest.mark.parametrize(("subtype", "dtype"), [("PCM_16", "int16"), ("PCM_24", "int32")])
@pytest.mark.parametrize("fmt", ["flac", "wav"])
def test_an_intact_file_salvages_exactly_what_soundfile_reads(
    tmp_path: Path, fmt: str, subtype: str, dtype: str
) -> None:
    """FFmpeg's samples equal libsndfile's for every recorded format (24-bit: left-justified
    int32 in both)."""
    path = tmp_path / f"intact.{fmt}"
    rng = np.random.default_rng(3)
    sf.write(str(path), rng.uniform(-0.5, 0.5, (9_000, 2)), 16_000, subtype=subtype)
    expected = sf.read(str(path), dtype=dtype, always_2d=True)[0]
    kept = salvage_frames(path, dtype)
    assert kept.dtype == np.dtype(dtype) and np.array_equal(kept, expected)


def test_recovery_commits_the_decodable_part_of_a_short_truncated_chunk(  # type: ignore[no-untyped-def]
    make_station, make_ctx, db, home
):
    """A short unfinished chunk (one whole FLAC frame of 4096 samples on disk, the next cut):
    the old salvage found nothing and quarantined it; now its 4096 frames are committed."""
    config = make_station(SYNTH)
    ctx, _ = make_ctx(config)
    spec = ChunkSpec(
        station=config.station.id,
        sensor="syn",
        session_id="s1",
        chunk_index=0,
        start_frame=0,
        started_at=ctx.clock.now(),
        stream=audio_description(16_000, 1, "int16", "flac"),
        deployment_id=ctx.deployment_id,
        config_hash="x",
        version="test",
        latitude=config.station.latitude,
        longitude=config.station.longitude,
        elevation=config.station.elevation,
    )
    home.ensure()
    writer = ChunkWriter(home.spool, spec)
    original = signal(6_000)
    writer.write(original)
    writer.finish("complete")  # then damaged: the tail of the file is lost
    data = writer.audio.read_bytes()
    writer.audio.write_bytes(data[: len(data) * 3 // 4])
    # the sidecar of an unfinished chunk, as written when it was opened
    write_json_atomic(writer.sidecar, {"spec": spec.embedded(), "audio": writer.audio.name})
    expected = ffmpeg_frames(writer.audio, 1)
    old = old_salvage(writer.audio, "int16")
    report = recover(ctx)
    assert report.quarantined == [] and len(report.salvaged) == 1
    with db.session() as session:
        row = session.scalars(select(Recording)).one()
    assert row.end_reason == "recovered" and row.frames == len(expected) == 4096 > old == 0
    saved = sf.read(str(home.root / row.path), dtype="int16", always_2d=True)[0]
    assert np.array_equal(saved, original[:4096])
