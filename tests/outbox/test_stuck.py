"""A delivery worker stuck in a call is visible to the supervisor's thread liveness (decisions
0048, 0064): the owner stops touching the job's stop event while a worker is busy in one batch
longer than its ``stuck_after``, and says which output it is. The worker blocks on a real socket
to a server that never answers; the loop runs on a virtual clock."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence

import pytest
from sqlalchemy import select

from fieldstation.clock import VirtualClock
from fieldstation.config import StationConfig
from fieldstation.home import StationHome
from fieldstation.outbox.delivery import DeliveryLoop, default_stuck_after, stuck_outputs
from fieldstation.outbox.messenger import OutgoingMessage, Result
from fieldstation.runtime.liveness import ThreadLiveness
from fieldstation.runtime.supervisor import TickingEvent
from fieldstation.store import Database
from fieldstation.store import outbox as store
from fieldstation.store.models import Event
from fieldstation.testing.broker import SilentEndpoint

OUTBOX_LIVENESS = 900.0
"""The outbox job's thread liveness limit (``runtime.station.THREAD_LIVENESS``), seconds."""


class SilentMessenger:
    """Sends each batch over a new TCP connection and blocks reading the answer, which a
    :class:`SilentEndpoint` never sends (no socket timeout: a call that never returns)."""

    needs_network = False

    def __init__(self, port: int) -> None:
        self.port = port
        self.calls = 0

    def send(self, batch: Sequence[OutgoingMessage]) -> list[Result]:
        self.calls += 1
        with socket.create_connection(("127.0.0.1", self.port)) as conn:
            conn.sendall(b"POST /ingest HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
            conn.recv(1)  # blocks until the server closes the connection
        return [Result.retry("no answer")] * len(batch)

    def close(self) -> None:
        pass


@pytest.fixture
def endpoint() -> Iterator[SilentEndpoint]:
    server = SilentEndpoint()
    yield server
    server.close()


def _until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for: {what}"
        time.sleep(0.01)


def test_a_worker_stuck_on_a_silent_socket_makes_the_outbox_job_hang(
    make_station: Callable[..., StationConfig],
    home: StationHome,
    db: Database,
    endpoint: SilentEndpoint,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Old code: the owner touched ``stop`` every turn while its only worker sat in a call
    that never returns, so the job never counted as hung. Now, past the output's
    ``stuck_after`` (4 x the HTTP timeout of 30 s = 120 s), the owner stops touching it: the
    job is hung for the supervisor's ThreadLiveness, the log and an ``output_stuck`` event name
    the output. When the call returns, the output is reported moving and the job turns again."""
    config = make_station([{"name": "stalled", "kind": "http", "url": endpoint.url}])
    clock = VirtualClock()
    messenger = SilentMessenger(endpoint.port)
    loop = DeliveryLoop(config, db, clock, home, messengers={"stalled": messenger})
    with db.session() as session:
        store.enqueue(
            session,
            kind="detection",
            body={"n": 1},
            destinations=["stalled"],
            now=clock.now(),
            station_id="default",
        )
    stop = TickingEvent(clock)
    liveness = ThreadLiveness(OUTBOX_LIVENESS)
    caplog.set_level(logging.WARNING, logger="fieldstation.outbox.delivery")
    runner = threading.Thread(target=loop.run, args=(stop,), name="outbox-under-test")
    runner.start()
    try:
        _until(lambda: endpoint.asked.is_set(), "the worker sends its batch")
        start = clock.monotonic()
        # the owner turns on virtual time while the worker is blocked on the real socket
        _until(
            lambda: clock.monotonic() > start + 120 + OUTBOX_LIVENESS + 60,
            "virtual time passes the stuck limit and the thread liveness limit",
        )
        hung = liveness.stalled(*stop.state, clock.monotonic())
        assert hung is not None, f"the outbox job still looks alive: {stop.state}"
        assert set(loop.stuck) == {"stalled"}
        assert any(
            r.levelno == logging.ERROR and "'stalled' is stuck" in r.getMessage()
            for r in caplog.records
        )
        with db.session() as session:
            events = session.scalars(select(Event).where(Event.kind == "output_stuck")).all()
        assert [e.data["destination"] for e in events] == ["stalled"]
        assert events[0].severity == "error"
        assert events[0].data["limit_s"] == 120.0
        with db.session() as session:
            assert list(stuck_outputs(session)) == ["stalled"]  # what `outbox status` shows

        endpoint.close()  # the call returns: the worker waits for its retry, the job turns
        _until(lambda: not loop.stuck, "the output is seen moving again")
        _until(
            lambda: liveness.stalled(*stop.state, clock.monotonic()) is None,
            "the owner touches stop again",
        )
        with db.session() as session:
            moving = session.scalars(select(Event).where(Event.kind == "output_moving")).all()
        assert [e.data["destination"] for e in moving] == ["stalled"]
        with db.session() as session:
            assert stuck_outputs(session) == {}
    finally:
        stop.set()
        endpoint.close()
        runner.join(60)
    assert not runner.is_alive(), "the delivery loop did not stop"


def test_stop_is_still_obeyed_while_a_worker_is_stuck(
    make_station: Callable[..., StationConfig],
    home: StationHome,
    db: Database,
    endpoint: SilentEndpoint,
) -> None:
    """While it withholds its touches, the owner still notices ``stop``: it halts the workers
    and returns once the stuck call ends."""
    config = make_station([{"name": "stalled", "kind": "http", "url": endpoint.url}])
    clock = VirtualClock()
    loop = DeliveryLoop(
        config, db, clock, home, messengers={"stalled": SilentMessenger(endpoint.port)}
    )
    with db.session() as session:
        store.enqueue(
            session,
            kind="detection",
            body={"n": 1},
            destinations=["stalled"],
            now=clock.now(),
            station_id="default",
        )
    stop = TickingEvent(clock)
    runner = threading.Thread(target=loop.run, args=(stop,), name="outbox-under-test")
    runner.start()
    try:
        _until(lambda: bool(loop.stuck), "the worker is judged stuck")
        touched = stop.state
        stop.set()
        endpoint.close()
        runner.join(60)
        assert not runner.is_alive(), "the delivery loop did not stop"
        assert stop.state == touched, "the owner touched stop while a worker was stuck"
    finally:
        stop.set()
        endpoint.close()
        runner.join(60)


@pytest.mark.parametrize(
    ("output", "limit"),
    [
        ({"name": "f", "kind": "file", "path": "f.jsonl"}, 60.0),
        ({"name": "h", "kind": "http", "url": "http://127.0.0.1:9/x"}, 120.0),
        ({"name": "h", "kind": "http", "url": "http://127.0.0.1:9/x", "timeout": "10m"}, 300.0),
        ({"name": "m", "kind": "mqtt", "host": "127.0.0.1"}, 140.0),
    ],
)
def test_default_stuck_limit_follows_the_output_timeouts(
    make_station: Callable[..., StationConfig], output: dict[str, object], limit: float
) -> None:
    """4 x the output's timeouts, within [60 s, 300 s] (well under the job's 900 s)."""
    config = make_station([output])
    assert default_stuck_after(config.outputs[0]) == limit
