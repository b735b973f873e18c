"""Alert rules on the station (``[[alerts]]``): the pure rule engine (:mod:`.rules`) and the
job that runs it over new data and writes ``alert`` messages into the outbox (:mod:`.job`)."""
