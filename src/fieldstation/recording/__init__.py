"""Recording: gapless chunking of sensor streams, atomic spool → data commit, recovery.

- :mod:`fieldstation.recording.job`: ``run_recorder(ctx, sensor_name)``, the recorder job;
- :mod:`fieldstation.recording.recovery`: ``recover(ctx) -> RecoveryReport``, run at start-up;
- :mod:`fieldstation.recording.chunk` / :mod:`.commit`: writing and committing one chunk;
- :mod:`fieldstation.recording.metadata`: names, embedded Vorbis/GUANO metadata;
- :mod:`fieldstation.recording.disk`: the free-space guard.

Rules and guarantees: ``docs/recording.md``.
"""
