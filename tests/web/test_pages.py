"""Every page of the station's web page on Starlette's TestClient, with real rows and files."""

from __future__ import annotations

import csv
import io

import pytest
from PIL import Image
from tests.web.conftest import TONE_HZ, WebStation

pytestmark = []


def test_status_page_shows_jobs_disk_network_outbox_slots_and_events(client) -> None:
    page = client.get("/")
    assert page.status_code == 200
    html = page.text
    for text in (
        "recorder:mic",
        "processor:energy",
        "crashed 5 times",
        "unhealthy",
        "20.0 GiB free",
        "down",
        "17 pending",
        "2026-06-01T12:30:00+00:00",
        "job_failed",
        'href="/live"',
    ):
        assert text in html, text
    assert "<form" not in html.split("<main>")[1]  # read-only: no buttons without a login


def test_status_page_still_renders_when_the_station_does_not_answer(web_station) -> None:
    from fieldstation.runtime.client import StationNotRunningError

    class Gone:
        def status(self):
            raise StationNotRunningError("station not running: no control socket")

    web_station.control = Gone()  # type: ignore[assignment]
    page = web_station.client().get("/")
    assert page.status_code == 200 and "station not running" in page.text


def test_recordings_page_lists_by_sensor_and_day_with_paging(web_station: WebStation) -> None:
    client = web_station.client()
    page = client.get("/recordings", params={"sensor": "mic"})
    assert page.status_code == 200
    for rid in web_station.ids["recordings"]:
        assert f'href="/recordings/{rid}"' in page.text
    assert "stopped" in page.text and "deleted" in page.text
    none = client.get("/recordings", params={"sensor": "mic", "day": "2026-05-01"})
    assert "no recordings" in none.text
    assert client.get("/recordings", params={"day": "yesterday"}).status_code == 400
    assert client.get("/recordings", params={"before": "garbage!"}).status_code == 400


def test_keyset_paging_walks_every_recording_once(web_station: WebStation) -> None:
    from fieldstation.web import queries

    for sensor in (None, "mic"):
        seen: list[int] = []
        cursor = None
        with web_station.db.session() as s:
            while True:
                rows, cursor = queries.recordings_page(s, sensor=sensor, before=cursor, limit=3)
                seen += [r.recording.id for r in rows]
                if cursor is None:
                    break
        assert seen == sorted(web_station.ids["recordings"], reverse=True)


def test_recording_page_has_spectrogram_player_download_and_detections(
    web_station: WebStation,
) -> None:
    client = web_station.client()
    rid = web_station.ids["files"][-1]
    page = client.get(f"/recordings/{rid}")
    assert page.status_code == 200
    assert f'src="/recordings/{rid}/spectrogram.png"' in page.text
    assert f'src="/recordings/{rid}/audio"' in page.text
    assert "Turdus merula" in page.text
    png = client.get(f"/recordings/{rid}/spectrogram.png")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(png.content))
    assert image.size == (1000, 256)
    cached = list((web_station.home.root / "cache" / "spectrograms").glob(f"rec-{rid}-*.png"))
    assert len(cached) == 1


def test_audio_is_served_with_ranges_and_downloads_as_attachment(
    web_station: WebStation,
) -> None:
    client = web_station.client()
    rid = web_station.ids["files"][0]
    whole = client.get(f"/recordings/{rid}/audio")
    assert whole.status_code == 200 and whole.headers["content-type"] == "audio/wav"
    assert whole.headers["accept-ranges"] == "bytes"
    part = client.get(f"/recordings/{rid}/audio", headers={"Range": "bytes=100-199"})
    assert part.status_code == 206
    assert part.content == whole.content[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(whole.content)}"
    download = client.get(f"/recordings/{rid}/download")
    assert download.headers["content-disposition"].startswith("attachment")


def test_a_deleted_recording_says_so_and_its_file_routes_are_gone(
    web_station: WebStation,
) -> None:
    client = web_station.client()
    rid = web_station.ids["recordings"][0]
    assert "The file is deleted" in client.get(f"/recordings/{rid}").text
    for suffix in ("audio", "download", "spectrogram.png"):
        assert client.get(f"/recordings/{rid}/{suffix}").status_code == 410
    assert client.get("/recordings/999999").status_code == 404


def test_detections_page_by_label_and_day_with_clip_and_spectrogram(
    web_station: WebStation,
) -> None:
    client = web_station.client()
    page = client.get("/detections", params={"label": "Erithacus rubecula"})
    assert page.status_code == 200
    assert "Erithacus rubecula" in page.text
    rows = page.text.split('id="detection-list"')[1]
    assert rows.count("<td>Erithacus rubecula</td>") == 4  # n = 1, 3, 5, 7
    assert "<td>Turdus merula</td>" not in rows
    day = client.get("/detections", params={"day": "2026-05-31"})
    assert day.text.count('class="det-spec"') == 5  # the three present files' detections
    det = web_station.ids["detections"][-1]
    clip = client.get(f"/detections/{det}/clip.wav")
    assert clip.status_code == 200
    import soundfile

    samples, rate = soundfile.read(io.BytesIO(clip.content))
    assert rate == 48_000 and len(samples) == int(2.0 * rate)  # 1 s span + 0.5 s each side
    png = client.get(f"/detections/{det}/spectrogram.png")
    image = Image.open(io.BytesIO(png.content))
    assert image.size == (400, 256)


def test_detections_csv_exports_every_matching_row(web_station: WebStation) -> None:
    client = web_station.client()
    response = client.get("/detections.csv")
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == len(web_station.ids["detections"])
    assert {int(r["id"]) for r in rows} == set(web_station.ids["detections"])
    merula = list(
        csv.DictReader(
            io.StringIO(client.get("/detections.csv", params={"label": "Turdus merula"}).text)
        )
    )
    assert len(merula) == 8 and {r["label"] for r in merula} == {"Turdus merula"}
    assert {r["sensor"] for r in merula} == {"mic"}


def test_schedule_page_shows_today_and_tomorrow(web_station: WebStation) -> None:
    page = web_station.client().get("/schedule")
    assert page.status_code == 200
    assert "2026-06-01" in page.text and "2026-06-02" in page.text
    assert "2026-06-03" not in page.text
    assert 'data-sensor="mic"' in page.text


def test_spectrogram_of_the_tone_is_brightest_in_its_row(web_station: WebStation) -> None:
    """The page's PNG of the 3 kHz tone: its brightest row is the tone's row."""
    import numpy as np

    from fieldstation.web.spectrogram import colour_table, row_of

    rid = web_station.ids["files"][0]
    png = web_station.client().get(f"/recordings/{rid}/spectrogram.png")
    pixels = np.asarray(Image.open(io.BytesIO(png.content)).convert("RGB"))
    brightest = colour_table()[-1]
    rows = np.flatnonzero((pixels == brightest).all(axis=2).any(axis=1))
    assert row_of(TONE_HZ, 48_000, 256) in rows
    assert rows.max() - rows.min() <= 2


@pytest.mark.parametrize("path", ["/", "/recordings", "/detections", "/schedule"])
def test_every_page_links_the_live_view(client, path: str) -> None:
    assert 'href="/live"' in client.get(path).text


def test_a_video_recording_shows_its_motion_thumbnail(web_station: WebStation) -> None:
    from datetime import timedelta

    from tests.web.conftest import NOW

    from fieldstation.testing.rows import add_recording

    rel = "data/cam/2026-06-01/cam_0.mkv"
    (web_station.home.root / rel).parent.mkdir(parents=True)
    (web_station.home.root / rel).write_bytes(b"\x1aE\xdf\xa3 not decoded here")
    thumb = web_station.home.thumbnails / "cam" / "2026-06-01" / "cam_0.motion.jpg"
    thumb.parent.mkdir(parents=True)
    Image.new("RGB", (48, 27), (200, 120, 40)).save(thumb, format="JPEG")
    with web_station.db.session() as s:
        rec = add_recording(
            s,
            deployment_id=1,
            started_at=NOW - timedelta(minutes=5),
            sensor="cam",
            path=rel,
            media="video",
            format="mkv",
            rate=25,
            channels=3,
        )
        rid = rec.id
    client = web_station.client()
    page = client.get(f"/recordings/{rid}")
    assert f'src="/recordings/{rid}/thumbnail.jpg"' in page.text
    assert "spectrogram.png" not in page.text
    jpeg = client.get(f"/recordings/{rid}/thumbnail.jpg")
    assert jpeg.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(jpeg.content)).size == (48, 27)
    assert client.get(f"/recordings/{rid}/spectrogram.png").status_code == 404


def test_schedule_page_lists_the_slots_of_a_duty_cycle(web_station: WebStation) -> None:
    from fieldstation.config import parse_config

    data = web_station.config.model_dump(mode="json", exclude_unset=True)
    data["sensors"][0]["schedule"] = "dawn_chorus"
    web_station.config = parse_config(data)
    page = web_station.client().get("/schedule")
    assert "schedule dawn_chorus" in page.text
    slots = page.text.count('class="slot"')
    assert slots >= 2 * 2 * 5  # two windows a day, every 5 min for >= 25 min, two days
    assert "next slot: 2026-06-01" in page.text or "next slot: 2026-06-02" in page.text
