"""Imported once by the fork server that starts job processes (see :data:`jobs.PRELOAD`).

Whatever this module loads is loaded once and shared (copy-on-write) by every job process
instead of being loaded by each: the job modules, numpy and soundfile (recorders and
processors both use them), the plugin registry (entry points) and the built-in plugins of the
embedded default station. A missing module is skipped: the job that needs it reports it.
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

with contextlib.suppress(Exception):  # warms the plugin caches (entry points, config models)
    from fieldstation.config import default_config

    default_config()

with contextlib.suppress(Exception):  # the ORM's mappers, configured once for every job
    from sqlalchemy.orm import configure_mappers

    configure_mappers()

# Keep the collector away from everything loaded so far: a collection writes to every object
# it visits, which would copy the shared pages into each job (gc.freeze(), Python 3.7+).
gc.collect()
gc.freeze()
