"""Spectrograms: numpy STFT, dB scale, viridis, PNG through Pillow; no matplotlib or scipy."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fieldstation.web.spectrogram import (
    SpectrogramCache,
    colour_table,
    png_bytes,
    row_of,
    spectrogram_db,
    spectrogram_levels,
    spectrogram_rgb,
)

RATE = 48_000


def tone(freq: float, seconds: float = 2.0, rate: int = RATE, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize(
    ("freq", "rate"),
    [(440.0, RATE), (3000.0, RATE), (15_000.0, RATE), (2000.0, 16_000), (100_000.0, 384_000)],
)
def test_a_tone_peaks_in_its_row_in_every_column(freq: float, rate: int) -> None:
    db = spectrogram_db(tone(freq, rate=rate), rate, width=200, height=256)
    assert db.shape == (256, 200)
    assert set(np.argmax(db, axis=0)) == {row_of(freq, rate, 256)}


def test_a_full_scale_sine_is_near_0_dbfs_and_silence_far_below() -> None:
    loud = spectrogram_db(tone(1000.0, amplitude=1.0), RATE, 50, 512)
    assert -1.5 < float(loud.max()) <= 0.5  # Hann scalloping loses at most ~1.4 dB
    quiet = spectrogram_db(np.zeros(RATE, dtype=np.float32), RATE, 50, 512)
    assert float(quiet.max()) < -100


def test_a_chirp_rises_from_the_bottom_rows_to_the_top_rows() -> None:
    t = np.arange(2 * RATE) / RATE
    sweep = np.sin(2 * np.pi * (500 * t + 2500 * t**2)).astype(np.float32)  # 500 Hz -> 10.5 kHz
    peaks = np.argmax(spectrogram_db(sweep, RATE, 100, 256), axis=0)
    assert peaks[0] > peaks[-1]  # row 0 is the top: higher frequencies have smaller rows
    assert np.all(np.diff(peaks) <= 0)


def test_stereo_short_and_long_inputs() -> None:
    stereo = np.stack([tone(2000.0), tone(2000.0)], axis=1)
    assert np.argmax(spectrogram_db(stereo, RATE, 10, 128)[:, 0]) == row_of(2000.0, RATE, 128)
    short = spectrogram_db(tone(5000.0, seconds=0.005), RATE, 30, 256)  # 240 samples < 1 frame
    assert short.shape == (256, 30) and np.isfinite(short).all()
    with pytest.raises(ValueError):
        spectrogram_db(tone(1.0), RATE, 10, 300)  # 300 does not divide 512


def test_png_decodes_with_pillow_in_viridis() -> None:
    levels = spectrogram_levels(tone(3000.0), RATE, width=320, height=128)
    assert levels.shape == (128, 320) and levels.dtype == np.uint8 and levels.max() == 255
    decoded = Image.open(io.BytesIO(png_bytes(levels)))
    assert decoded.format == "PNG" and decoded.size == (320, 128) and decoded.mode == "P"
    rgb = np.asarray(decoded.convert("RGB"))
    assert (rgb == spectrogram_rgb(tone(3000.0), RATE, width=320, height=128)).all()
    table = colour_table()
    assert table.shape == (256, 3)
    assert tuple(table[0]) == (68, 1, 84) and tuple(table[-1]) == (253, 231, 37)
    assert set(map(tuple, rgb.reshape(-1, 3))) <= set(map(tuple, table))


def test_the_cache_renders_once_and_drops_the_least_recently_used(tmp_path: Path) -> None:
    import os

    cache = SpectrogramCache(tmp_path / "cache", max_bytes=2500)
    calls: list[str] = []

    def render(name: str) -> bytes:
        calls.append(name)
        return b"x" * 1000

    first = cache.get("rec-1-a.png", lambda: render("1"))
    assert cache.get("rec-1-a.png", lambda: render("again")) == first and calls == ["1"]
    cache.get("rec-2-b.png", lambda: render("2"))
    os.utime(cache.path("rec-2-b.png"), (1, 1))  # the oldest use
    os.utime(first, (2, 2))
    cache.get("rec-3-c.png", lambda: render("3"))
    assert sorted(p.name for p in cache.root.iterdir()) == ["rec-1-a.png", "rec-3-c.png"]
    cache.discard("rec-1-")
    assert [p.name for p in cache.root.iterdir()] == ["rec-3-c.png"]


def test_the_page_imports_neither_matplotlib_nor_scipy(tmp_path: Path) -> None:
    """What the web job loads to serve every page and draw a spectrogram, in a fresh process."""
    script = f"""
import sys, numpy as np, soundfile
from pathlib import Path
from fieldstation.config import parse_config, template_text
import tomllib
data = tomllib.loads(template_text())
data["station"]["home"] = {str(tmp_path / "home")!r}
data["web"] = {{"enabled": True}}
config = parse_config(data)
from fieldstation.home import StationHome
from fieldstation.store import open_database
home = StationHome(config.home_path()).ensure()
db = open_database(home.database)
import fieldstation.web.job
from fieldstation.web.app import create_app
from fieldstation.web.spectrogram import file_png
from starlette.testclient import TestClient
class Control:
    def status(self): return {{}}
app = create_app(config, home=home, db=db, control=Control())
client = TestClient(app, base_url="http://127.0.0.1:8080")  # a Host the page answers to
for path in ("/", "/recordings", "/detections", "/schedule", "/login", "/detections.csv"):
    assert client.get(path).status_code == 200, path
wav = home.root / "t.wav"
soundfile.write(wav, np.zeros(48000, dtype=np.float32), 48000)
file_png(wav)
print(" ".join(sorted(m for m in sys.modules if m.split(".")[0] in ("matplotlib", "scipy"))))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == ""
