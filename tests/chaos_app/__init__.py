"""A tiny Django app for the chaos tests and `benchmarks/chaos.py`.

Worker subprocesses load it with `S3TASKS_EXTRA_APPS=tests.chaos_app`: its handler
(`handlers.py`, autodiscovered) writes a side-effect row with no unique constraint and
publishes a follow-up, and `manage.py chaos setup|report` prepares and inspects a database
the test process may not be connected to (e.g. a PostgreSQL cluster of the test's own).
The orchestration (queues, workers, kills, outages) lives in `harness.py`.
"""
