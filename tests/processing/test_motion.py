"""The ``motion`` model on short H.264/Matroska clips made by the real ffmpeg binary.

Each clip is a still background (a green grid) with a magenta box overlaid; the box moves at
100 px/s during known intervals. Frame differencing finds the first moving frame one frame
after the interval starts (the frame at the start time still shows the box where it was).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from fieldstation.processing.model import RecordingInput, UndecodableAudioError
from fieldstation.processing.motion import MotionConfig, MotionModel, plugin

FPS = 25
FRAME = 1 / FPS
TOLERANCE = 2 * FRAME + 1e-6  # "within two frames"
BOX = 60  # side of the box, pixels


def x_of(moves: list[tuple[float, float]], x0: int = 100, speed: int = 100) -> str:
    """An ffmpeg expression of the box's left edge: ``x0`` until the first move, then
    ``speed`` px/s during each ``(start, end)`` interval and still in between."""
    expr = str(x0 + speed * sum(e - s for s, e in moves))  # after the last move
    for i in reversed(range(len(moves))):
        start, end = moves[i]
        before = x0 + speed * sum(e - s for s, e in moves[:i])
        expr = f"if(lt(t,{start}),{before},if(lt(t,{end}),{before}+(t-{start})*{speed},{expr}))"
    return expr


def make_clip(
    path: Path,
    moves: list[tuple[float, float]],
    *,
    size: tuple[int, int] = (640, 360),
    duration: float = 6.0,
    noise: int = 0,
) -> Path:
    """Write an H.264 MKV clip (``size``, 25 fps, ``duration`` s) of a 60x60 box at y = 150
    moving as :func:`x_of` says; ``noise``: temporal noise strength of ffmpeg's noise filter
    (fixed seed), as a camera sensor's."""
    w, h = size
    background = f"color=c=0x205020:s={w}x{h}:r={FPS}:d={duration},drawgrid=w=40:h=40:c=0x60a060"
    chain = f"[0][1]overlay=x='{x_of(moves)}':y=150:eval=frame"
    if noise:
        chain += f",noise=alls={noise}:allf=t:all_seed=7"
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", background]
        + ["-f", "lavfi", "-i", f"color=c=0xe040e0:s={BOX}x{BOX}:r={FPS}:d={duration}"]
        + ["-filter_complex", f"{chain},format=yuv420p", "-c:v", "libx264", "-preset"]
        + ["ultrafast", "-g", "50", "-t", str(duration), str(path)],
        check=True,
        timeout=120,
    )
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """Clips made once per module: ``clips(name)``."""
    folder = tmp_path_factory.mktemp("clips")
    specs = {
        "moving": dict(moves=[(2.0, 4.0)]),
        "static": dict(moves=[], noise=8),
        "two_events_720p": dict(moves=[(1.0, 1.8), (3.0, 3.4)], size=(1280, 720), duration=5.0),
    }
    made: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in made:
            made[name] = make_clip(folder / f"{name}.mkv", **specs[name])  # type: ignore[arg-type]
        return made[name]

    return get


def run(path: Path, home: Path | None = None, **settings: object) -> tuple[MotionModel, object]:
    model = MotionModel(MotionConfig(name="motion", model="motion", **settings), home=home)
    duration = 5.0 if "720p" in path.name else 6.0
    output = model.run(RecordingInput(path=path, rate=FPS, duration=duration, media="video"))
    return model, output


def test_a_moving_box_is_found_at_its_times_and_place(clips) -> None:
    _, output = run(clips("moving"))
    [det] = output.detections
    assert det.label == "motion"
    assert abs(det.start - 2.0) <= TOLERANCE and abs(det.end - 4.0) <= TOLERANCE
    # the box swept x 100..360 (100 + 2 s x 100 px/s + 60), y 150..210
    for got, want in zip(det.extra["box"], [100, 150, 360, 210], strict=True):
        assert abs(got - want) <= 12
    assert det.score >= 0.9
    assert 0 < det.extra["peak_fraction"] < 0.05
    assert 2.0 <= det.extra["peak_time"] <= 4.0
    assert output.extra["frames"] == 150 and output.extra["moving_frames"] >= 45


def test_a_still_scene_with_sensor_noise_has_no_motion(clips) -> None:
    _, output = run(clips("static"))
    assert output.detections == []
    assert output.extra["moving_frames"] == 0


def test_a_change_of_the_whole_frame_is_light_not_motion(tmp_path: Path) -> None:
    clip = tmp_path / "fade.mkv"
    light = "color=c=0xc0c0c0:s=640x360:r=25:d=6,drawgrid=w=40:h=40:c=0x808080"
    subprocess.run(  # the scene brightens from black in 0.5 s (the sun out of a cloud)
        ["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", f"{light},fade=t=in:st=2:d=0.5"]
        + ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(clip)],
        check=True,
        timeout=120,
    )
    _, output = run(clip)
    assert output.detections == []
    _, output = run(clip, max_area=1.0)  # counted when a whole-frame change is allowed
    [det] = output.detections
    assert det.extra["box"] == [0, 0, 640, 360] and abs(det.start - 2.0) <= 3 * FRAME


def test_two_movements_further_apart_than_gap_are_two_events_at_720p(clips) -> None:
    _, output = run(clips("two_events_720p"))
    spans = [(d.start, d.end) for d in output.detections]
    assert len(spans) == 2, spans
    for (start, end), (want_start, want_end) in zip(spans, [(1.0, 1.8), (3.0, 3.4)], strict=True):
        assert abs(start - want_start) <= TOLERANCE and abs(end - want_end) <= TOLERANCE
    # one pixel of the 320-wide analysis frame is 4 pixels here
    first, second = (d.extra["box"] for d in output.detections)
    bounds = [100, 150, 180 + BOX, 210, 180, 150, 220 + BOX, 210]
    for got, want in zip(first + second, bounds, strict=True):
        assert abs(got - want) <= 16, (first, second)
    # a gap longer than the still stretch between them (1.2 s) merges them into one
    _, merged = run(clips("two_events_720p"), gap=2.0)
    [det] = merged.detections
    assert abs(det.start - 1.0) <= TOLERANCE and abs(det.end - 3.4) <= TOLERANCE
    assert det.score < 0.7  # something moved in 1.2 s of 2.4 s


def test_min_duration_drops_short_events(clips) -> None:
    _, output = run(clips("two_events_720p"), min_duration=0.6)  # events of 0.8 s and 0.4 s
    [det] = output.detections
    assert abs(det.start - 1.0) <= TOLERANCE


def _jpeg_size(path: Path) -> tuple[int, int]:
    import cv2

    assert path.read_bytes()[:3] == b"\xff\xd8\xff"
    image = cv2.imread(str(path))
    assert image is not None
    return image.shape[1], image.shape[0]


def test_a_thumbnail_per_chunk_beside_the_file_outside_a_station(clips, tmp_path: Path) -> None:
    clip = tmp_path / "clip.mkv"
    clip.write_bytes(clips("moving").read_bytes())
    _, output = run(clip)
    thumbnail = Path(output.extra["thumbnail"])
    assert thumbnail == tmp_path / "clip.motion.jpg"
    assert _jpeg_size(thumbnail) == (480, 270)
    still = tmp_path / "still.mkv"
    still.write_bytes(clips("static").read_bytes())
    _, output = run(still, thumbnail_width=320)
    assert _jpeg_size(Path(output.extra["thumbnail"])) == (320, 180)  # the middle frame


def test_the_thumbnail_shows_the_frame_of_most_motion(clips, tmp_path: Path) -> None:
    import cv2

    clip = tmp_path / "clip.mkv"
    clip.write_bytes(clips("moving").read_bytes())
    _, output = run(clip, thumbnail_width=640)
    [det] = output.detections
    image = cv2.imread(output.extra["thumbnail"])
    x = 100 + (det.extra["peak_time"] - 2.0) * 100  # the box's left edge in that frame
    b, g, r = image[180, int(x) + BOX // 2]  # its centre: magenta (0xe040e0)
    assert r > 180 and b > 180 and g < 120


def test_thumbnails_go_under_the_station_home(tmp_path: Path) -> None:
    model = MotionModel(MotionConfig(name="yard", model="motion"), home=tmp_path)
    chunk = tmp_path / "data" / "cam" / "2026-06-01" / "20260601T050000Z.mkv"
    assert model.thumbnail_path(chunk) == (
        tmp_path / "thumbnails" / "cam" / "2026-06-01" / "20260601T050000Z.yard.jpg"
    )
    assert model.thumbnail_path(tmp_path / "quarantine" / "x.mkv") == (
        tmp_path / "thumbnails" / "x.yard.jpg"
    )


def test_undecodable_and_missing_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mkv"
    bad.write_bytes(b"\x1a\x45\xdf\xa3 not a matroska file at all" * 10)
    with pytest.raises(UndecodableAudioError, match="bad.mkv"):
        run(bad)
    audio = tmp_path / "tone.mkv"
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", "sine=d=1", str(audio)], check=True
    )
    with pytest.raises(UndecodableAudioError, match="no video stream"):
        run(audio)
    with pytest.raises(FileNotFoundError):
        run(tmp_path / "gone.mkv")
    assert not list(tmp_path.glob("*.jpg"))


def test_a_file_cut_short_is_analysed_up_to_where_it_ends(clips, tmp_path: Path) -> None:
    whole = clips("moving").read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(whole[: int(len(whole) * 0.7)])  # a copy or a write stopped part-way
    _, output = run(cut)
    assert 50 < output.extra["frames"] < 150
    assert "cut short" in output.extra["decode_error"]
    [det] = output.detections  # the motion up to the cut
    assert abs(det.start - 2.0) <= TOLERANCE
    assert det.end <= output.extra["frames"] * FRAME + FRAME
    assert Path(output.extra["thumbnail"]).exists()
    cut.write_bytes(whole[:2000])  # the header and not one whole frame
    with pytest.raises(UndecodableAudioError, match="no video frame decodes"):
        run(cut)


def test_config_errors_name_the_key() -> None:
    with pytest.raises(ValueError, match="max_area .* must be above min_area"):
        MotionConfig(name="m", model="motion", min_area=0.5, max_area=0.4)


def test_the_plugin_is_video_and_its_module_imports_nothing_heavy() -> None:
    assert plugin.media == "video" and MotionModel.media == "video"
    code = (
        "import sys\n"
        "import fieldstation.processing.motion\n"
        "from fieldstation.config.plugins import load_plugin\n"
        "load_plugin('models', 'motion')\n"
        "print(sorted(m for m in ('numpy', 'cv2', 'av') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
