"""The system of record: models, engine and sessions, migrations."""
