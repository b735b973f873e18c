"""``python -m fieldstation.outbox STATION.toml``: run the delivery loop (one worker per output)
in the foreground.

Stops cleanly on SIGTERM or SIGINT (MQTT outputs then publish ``offline``). The station's
supervisor runs the same :class:`~fieldstation.outbox.delivery.DeliveryLoop` as a job; this
entry point exists for operators and for tests that kill the delivering process.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    """Run the loop for the station file ``argv[0]`` until a signal; returns the exit status."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m fieldstation.outbox STATION.toml", file=sys.stderr)
        return 2
    from fieldstation.clock import SystemClock
    from fieldstation.config import load_config
    from fieldstation.home import StationHome
    from fieldstation.outbox.delivery import DeliveryLoop
    from fieldstation.store import open_database

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    config = load_config(Path(args[0]))
    home = StationHome(config.home_path()).ensure()
    db = open_database(home.database)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        DeliveryLoop(config, db, SystemClock(), home).run(stop)
    finally:
        db.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
