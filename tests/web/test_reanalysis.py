"""The page after a re-analysis (``fieldstation reprocess``): every view shows the latest run
of each processor on each recording, never both runs; the CSV carries the run's identity."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import timedelta

from fieldstation.store.models import ModelRun, Recording
from fieldstation.testing.rows import add_detection

from .conftest import WebStation


def test_every_view_shows_the_latest_run_only(web_station: WebStation) -> None:
    rid = web_station.ids["files"][-1]  # one Turdus merula, one Erithacus rubecula
    run_id = str(uuid.uuid4())
    with web_station.db.session() as session:
        started = session.get(Recording, rid).started_at  # type: ignore[union-attr]
        run = ModelRun(
            recording_id=rid,
            processor="energy",  # the processor of the recording's first run: a re-analysis
            model="energy",
            model_version="2+0123456789ab",
            status="ok",
            started_at=started + timedelta(days=1),
            duration=0.1,
            n_detections=1,
            run_id=run_id,
        )
        session.add(run)
        session.flush()
        new = add_detection(
            session, run, label="Sylvia atricapilla", score=0.9, detected_at=started, start=0.5
        ).id
    client = web_station.client()
    page = client.get(f"/recordings/{rid}").text
    assert "Sylvia atricapilla" in page
    assert "Turdus merula" not in page and "Erithacus rubecula" not in page
    day = f"{started:%Y-%m-%d}"
    listing = client.get("/recordings", params={"sensor": "mic", "day": day}).text
    row = listing.split(f'href="/recordings/{rid}"')[1].split("</tr>")[0]
    assert "<td>1</td>" in row  # the latest run's one detection, not 3
    detections = client.get("/detections", params={"label": "Turdus merula"}).text
    assert detections.split('id="detection-list"')[1].count("<td>Turdus merula</td>") == 7
    rows = list(csv.DictReader(io.StringIO(client.get("/detections.csv").text)))
    assert len(rows) == len(web_station.ids["detections"]) - 2 + 1
    assert len({r["id"] for r in rows}) == len(rows)
    [latest] = [r for r in rows if r["recording_id"] == str(rid)]
    assert int(latest["id"]) == new
    assert (latest["processor"], latest["model_version"], latest["run_id"]) == (
        "energy",
        "2+0123456789ab",
        run_id,
    )
