"""fieldstation.outbox: at-least-once delivery of the station's outbox.

- :mod:`fieldstation.outbox.delivery`: :class:`~fieldstation.outbox.delivery.DeliveryLoop`, the
  one deliverer, owning one :class:`~fieldstation.outbox.delivery.OutputWorker` (thread) per
  output (batches per destination, backoff with jitter stored in the database, byte cap, dead
  letters; a stalled output holds up only itself).
- :mod:`fieldstation.outbox.messenger`: the :class:`~fieldstation.outbox.messenger.Messenger`
  Protocol (``send(batch) -> list[Result]``, ``close()``) and topic names.
- Messenger plugins: :mod:`~fieldstation.outbox.mqtt` (paho-mqtt, QoS 1, sent on PUBACK),
  :mod:`~fieldstation.outbox.http` (httpx, Idempotency-Key), :mod:`~fieldstation.outbox.file`
  (JSON lines, fsync per batch).

Rows and their states live in :mod:`fieldstation.store.outbox`; the promises are written down in
``docs/guarantees.md`` and the wire formats in ``docs/messages.md``. Nothing heavy is imported
here: paho-mqtt and httpx load only when an output of that kind is built.
"""
