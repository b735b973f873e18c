"""Recordings (and log bundles) uploaded to the hub, resumably: the ``[upload]`` section's
selection queued in the station database, sent by the ``upload`` thread job over a subset of
tus 1.0 (decision 0143, docs/upload.md)."""
