"""The recorder loads what a media's writer needs before its live stream starts."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# a fresh interpreter: which modules does the first chunk's first write still import?
SCRIPT = textwrap.dedent(
    """
    import sys, tempfile, uuid
    from datetime import UTC, datetime
    from pathlib import Path
    import numpy as np
    from fieldstation.recording.media import media_format, prepare
    from fieldstation.recording.metadata import ChunkSpec
    from fieldstation.sensors.base import StreamDescription

    media = sys.argv[1]
    streams = {
        "readings": StreamDescription("readings", 200, (2,), "float32", "arrows", "arrow",
                                      ("ax", "ay"), ("m/s2", "m/s2")),
        "video": StreamDescription("video", 10, (32, 48, 3), "uint8", "mkv", "h264",
                                   options={"crf": 23, "preset": "ultrafast"}),
        "audio": StreamDescription("audio", 8000, (1,), "int16", "flac", "PCM_16"),
    }
    stream = streams[media]
    if sys.argv[2] == "prepared":
        prepare(media)
    else:
        media_format(media)
    spec = ChunkSpec("s", "x", str(uuid.uuid4()), 0, 0, datetime.now(UTC), stream, 1, "h",
                     "test", 0.0, 0.0, 0.0)
    before = set(sys.modules)
    with tempfile.TemporaryDirectory() as folder:
        writer = media_format(media).open(Path(folder) / f"c.{stream.format}", spec)
        writer.write(np.zeros((4, *stream.shape), dtype=stream.dtype))
        writer.close("complete")
    print(sorted(set(sys.modules) - before))
    """
)


def first_write_imports(media: str, how: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, media, how], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return eval(done.stdout.strip().splitlines()[-1])  # noqa: S307 - our own list repr


@pytest.mark.parametrize("media", ["readings", "video", "audio"])
def test_after_prepare_the_first_write_of_a_chunk_imports_nothing(media: str) -> None:
    assert first_write_imports(media, "prepared") == []


def test_without_prepare_the_first_readings_write_would_load_libraries() -> None:
    """What prepare() saves a live stream from: an IMU's FIFO holds 0.4 s at 200 Hz."""
    assert first_write_imports("readings", "plain") != []
