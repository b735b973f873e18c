"""Serial instruments through a real PTY pair (socat): a GPS whose fixes become the station's
position, and a key=value instrument."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
import tomllib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pynmea2
import pytest
import serial
from sqlalchemy import select

from fieldstation.clock import SystemClock
from fieldstation.config import parse_config, template_text
from fieldstation.recording.rows import run_readings
from fieldstation.sensors import DeviceError, build_sensor
from fieldstation.sensors.readings.serialline import parse_keyvalue, parse_nmea
from fieldstation.store.models import Message, Reading
from fieldstation.store.readings import latest_position


@pytest.fixture
def pty_pair(tmp_path: Path, require: Any) -> Iterator[tuple[Path, Path]]:
    """Two linked PTYs (``ttyA``: the instrument's end, ``ttyB``: the station's) from socat,
    ready once socat says it started its transfer loop."""
    if shutil.which("socat") is None:
        require("socat", "socat is not installed (apt-get install socat)")
    a, b = tmp_path / "ttyA", tmp_path / "ttyB"
    process = subprocess.Popen(
        ["socat", "-d", "-d", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    lines = []
    for line in process.stderr:  # ends when socat exits: then the assertion below says why
        lines.append(line)
        if "starting data transfer loop" in line:
            break
    assert a.exists() and b.exists(), "".join(lines)
    yield a, b
    process.terminate()
    process.wait(10)


def gga(lat: float, lon: float, alt: float, quality: int = 1, time: str = "120000") -> str:
    """A GGA sentence (with checksum) for a position in signed decimal degrees."""
    ns, ew = ("N" if lat >= 0 else "S"), ("E" if lon >= 0 else "W")
    lat_d, lon_d = abs(lat), abs(lon)
    lat_s = f"{int(lat_d):02d}{(lat_d - int(lat_d)) * 60:07.4f}"
    lon_s = f"{int(lon_d):03d}{(lon_d - int(lon_d)) * 60:07.4f}"
    fields = (time, lat_s, ns, lon_s, ew, str(quality), "08", "0.9", f"{alt:.1f}", "M", "46.9",
              "M", "", "")  # fmt: skip
    return str(pynmea2.GGA("GP", "GGA", fields)) + "\r\n"


def feed(port: Path, lines: list[str]) -> threading.Thread:
    """Write ``lines`` to the instrument's end of the PTY pair from a thread."""

    def write() -> None:
        with serial.Serial(str(port), 9600) as out:
            for line in lines:
                out.write(line.encode("ascii"))
            out.flush()

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread


def run_until(ctx: Any, progress: Any, name: str, port: Path, lines: list[str], n: int) -> None:
    """Run the readings job; feed ``lines`` once the port is open; stop after ``n`` stored
    measurements (bounded by an hour of virtual time should the feed never arrive)."""
    writers: list[threading.Thread] = []

    def report(what: str, details: dict[str, Any]) -> None:
        progress(what, details)
        if what == "open" and not writers:
            writers.append(feed(port, lines))
        if what == "readings" and len(progress.of("readings")) >= n:
            ctx.stop.set()

    ctx.progress = report
    run_readings(ctx, name, until=ctx.clock.now() + timedelta(hours=1))
    for writer in writers:
        writer.join(10)


def test_a_serial_gps_through_a_pty_updates_the_station_position(
    make_station, make_ctx, db, pty_pair
):  # type: ignore[no-untyped-def]
    a, b = pty_pair
    ctx, progress = make_ctx(
        make_station(
            {"name": "gps", "kind": "serial", "port": str(b), "protocol": "nmea", "period": "1s"}
        )
    )
    with db.session() as session:
        assert latest_position(session) is None
    bad = gga(47.0, 8.0, 400.0).replace("*", "*0")  # a damaged checksum: skipped
    lines = [
        "$GPRMC,120000,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A\r\n",
        gga(0.0, 0.0, 0.0, quality=0),  # no fix yet: skipped
        gga(48.1173, 11.5167, 545.4),
        bad,
        gga(48.1174, 11.5168, 546.0, time="120001"),
        gga(-33.8688, 151.2093, 58.2, time="120002"),
    ]
    run_until(ctx, progress, "gps", a, lines, 3)
    with db.session() as session:
        position = latest_position(session)
        rows = list(session.scalars(select(Reading).order_by(Reading.id)))
        kinds = list(session.scalars(select(Message.kind).where(Message.kind == "readings")))
    assert position is not None
    lat, lon, elev, at = position
    assert lat == pytest.approx(-33.8688, abs=1e-6)
    assert lon == pytest.approx(151.2093, abs=1e-6)
    assert elev == pytest.approx(58.2)
    assert at == max(r.measured_at for r in rows)
    assert len(rows) == 9 and len(kinds) == 3  # 3 fixes: 3 quantities each, one message each
    assert {r.unit for r in rows if r.quantity == "latitude"} == {"deg"}


def test_a_key_value_instrument_through_a_pty(make_station, make_ctx, db, pty_pair):  # type: ignore[no-untyped-def]
    a, b = pty_pair
    ctx, progress = make_ctx(
        make_station(
            {
                "name": "hygro",
                "kind": "serial",
                "port": str(b),
                "protocol": "keyvalue",
                "keys": ["T", "RH"],
                "quantities": ["temperature", "humidity"],
                "units": ["Cel", "%"],
                "period": "10s",
            }
        )
    )
    lines = ["T=21.4,RH=55.2\n", "garbage\n", "T=21.5\n", "RH=56.0,T=21.6,P=1000\n"]
    run_until(ctx, progress, "hygro", a, lines, 3)
    with db.session() as session:
        rows = [
            (r.quantity, r.value) for r in session.scalars(select(Reading).order_by(Reading.id))
        ]
    assert rows == [
        ("temperature", 21.4),
        ("humidity", 55.2),
        ("temperature", 21.5),  # RH missing from that line: no row
        ("temperature", 21.6),
        ("humidity", 56.0),
    ]


def hygrometer(port: Path, **more: Any) -> Any:
    data = tomllib.loads(template_text())
    data["sensors"] = [
        {
            "name": "hygro",
            "kind": "serial",
            "port": str(port),
            "protocol": "keyvalue",
            "keys": ["T", "RH"],
            "units": ["Cel", "%"],
            "period": "1s",
            **more,
        }
    ]
    return build_sensor(parse_config(data).sensors[0], SystemClock())


def test_an_instrument_sending_only_lines_it_cannot_parse_is_a_device_error(pty_pair):  # type: ignore[no-untyped-def]
    """Garbage (a wrong baud rate) or a GPS without a fix is no more a record than silence:
    it used to keep read() waiting for ever, so no device error was ever recorded."""
    a, b = pty_pair
    sensor = hygrometer(b, timeout="2s")
    sensor.open()
    stop = threading.Event()

    def babble() -> None:
        with serial.Serial(str(a), 9600) as out:
            while not stop.is_set():
                out.write(b"\x13\xf7garbage\n")
                out.flush()
                stop.wait(0.05)

    thread = threading.Thread(target=babble, daemon=True)
    thread.start()
    try:
        with pytest.raises(DeviceError, match="no record for 2 s"):
            sensor.read()
        assert sensor.health().details["bad_lines"] > 0
    finally:
        stop.set()
        thread.join(10)
        sensor.close()


def test_a_line_cut_by_a_pause_is_read_whole(pty_pair):  # type: ignore[no-untyped-def]
    a, b = pty_pair
    sensor = hygrometer(b)
    sensor.open()
    try:
        with serial.Serial(str(a), 9600) as out:
            out.write(b"T=21.4,RH=5")
            out.flush()
            time.sleep(0.8)  # longer than the sensor's read timeout: it sees half a line
            out.write(b"5.2\n")
            out.flush()
            block = sensor.read()
    finally:
        sensor.close()
    assert block is not None and block.data.tolist() == [[21.4, 55.2]]


def test_a_missing_port_is_a_device_error_and_the_job_retries(make_station, make_ctx, db, tmp_path):  # type: ignore[no-untyped-def]
    ctx, progress = make_ctx(
        make_station(
            {
                "name": "gps",
                "kind": "serial",
                "port": str(tmp_path / "nothing"),
                "protocol": "nmea",
                "period": "1s",
            }
        )
    )
    run_readings(ctx, "gps", until=ctx.clock.now() + timedelta(minutes=10))
    waits = progress.of("waiting")
    assert len(waits) >= 2 and all("device error" in w["reason"] for w in waits)
    with db.session() as session:
        from fieldstation.store.models import Event

        events = list(session.scalars(select(Event.kind)))
    assert "device_error" in events


def test_parsers() -> None:
    assert parse_keyvalue("T=21.4,RH=55.2", ["RH", "T"]) == [55.2, 21.4]
    assert parse_keyvalue("no pairs here", ["T"]) is None
    assert parse_nmea(gga(10.5, -20.25, 3.0)) == pytest.approx([10.5, -20.25, 3.0])
    assert parse_nmea(gga(10.5, -20.25, 3.0).replace("*", "*0")) is None
    assert parse_nmea(gga(10.5, -20.25, 3.0, quality=0)) is None
