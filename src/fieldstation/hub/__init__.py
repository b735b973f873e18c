"""The fleet hub: ingest of station messages (MQTT shared subscription, HTTP) into a fleet
database (SQLAlchemy 2 + Alembic; PostgreSQL for fleets, SQLite embedded). See docs/hub.md."""
