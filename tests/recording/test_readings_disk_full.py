"""A full disk under the readings job: the database refuses the rows, the measurements are
kept in memory and written, every one with its message, once space returns."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from fieldstation.home import StationHome
from fieldstation.recording.rows import run_readings
from fieldstation.store.models import Message, Reading
from fieldstation.testing.disk import FillDiskAt


@pytest.fixture
def home(small_disk: Path) -> StationHome:
    """The station home (and its database) on the small filesystem."""
    return StationHome(small_disk / "home").ensure()


def test_readings_refused_by_a_full_database_are_kept_and_written_later(
    make_station, make_ctx, db, small_disk, tmp_path
):  # type: ignore[no-untyped-def]
    root = tmp_path / "w1" / "28-01"
    root.mkdir(parents=True)
    (root / "w1_slave").write_text("00 : crc=00 YES\n00 t=12500\n")
    config = make_station({"name": "soil", "kind": "w1", "root": str(root.parent), "period": "60s"})
    ctx, progress = make_ctx(config)
    from fieldstation.sensors.readings.w1 import W1Sensor

    filler = small_disk / "filler"
    sensor = FillDiskAt(W1Sensor(config.sensor("soil"), ctx.clock), 3, filler)  # before the 4th
    report = progress.__call__
    freed: list[Any] = []

    def watch(what: str, details: dict[str, Any]) -> None:
        report(what, details)
        refused = [d for d in progress.of("waiting") if "refused" in d.get("reason", "")]
        if not freed and len(refused) >= 5:  # five periods while the database is full
            filler.unlink()
            freed.append(ctx.clock.now())
        if freed and len(progress.of("readings")) >= 5:
            ctx.stop.set()

    ctx.progress = watch  # type: ignore[method-assign]
    start = ctx.clock.now()
    run_readings(ctx, "soil", sensor=sensor)  # type: ignore[arg-type]
    assert freed, progress.reports[-5:]
    with db.session() as session:
        times = list(session.scalars(select(Reading.measured_at).order_by(Reading.measured_at)))
        messages = list(session.scalars(select(Message.id).where(Message.kind == "readings")))
    # nothing lost: one row and one message per period, from the first to the last
    assert times == [start + timedelta(seconds=60 * k) for k in range(len(times))]
    assert len(times) >= 9 and len(messages) == len(times)
    written = progress.of("readings")
    assert max(r["measurements"] for r in written) >= 6  # the kept ones went in one batch
    with db.engine.connect() as con:
        assert con.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
