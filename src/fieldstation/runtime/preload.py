"""Imported once by the fork server that starts job processes (see :data:`jobs.PRELOAD`).

Whatever this module loads is loaded once and shared (copy-on-write) by every job process
instead of being loaded by each: the job modules, numpy and soundfile (recorders and
processors both use them). The plugins the station file names are loaded already: the
supervisor read the file before it forked this server. A missing module is skipped: the job
that needs it reports it.
"""

from __future__ import annotations

import contextlib
import gc
import importlib

__all__ = ["MODULES"]

MODULES = (
    "numpy",
    "numpy.fft",
    "numpy.ma",
    "numpy.random",
    "soundfile",
    "sqlite3",
    "sqlalchemy.dialects.sqlite",
    "fieldstation.job",
    "fieldstation.store.models",
    "fieldstation.store.events",
    "fieldstation.store.outbox",
    "fieldstation.recording.job",
    "fieldstation.processing.worker",
    "fieldstation.sensors.generator",
)

for _name in MODULES:
    with contextlib.suppress(ImportError):
        importlib.import_module(_name)

# The plugin caches (entry points, config models) are not warmed here: the supervisor loaded
# its station file before forking this server, so they are warm already; a second
# default_config() here only copied about 2 MiB of the supervisor's pages (issue 22).

with contextlib.suppress(Exception):  # the ORM's mappers, configured once for every job
    from sqlalchemy.orm import configure_mappers

    configure_mappers()

# Keep the collector away from everything loaded so far: a collection writes to every object
# it visits, which would copy the shared pages into each job (gc.freeze(), Python 3.7+).
gc.collect()
gc.freeze()
