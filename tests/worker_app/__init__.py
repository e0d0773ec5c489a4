"""A tiny Django app holding the worker tests' handlers (`handlers.py`, autodiscovered).

Worker subprocesses load it with `S3TASKS_EXTRA_APPS=tests.worker_app`; in-process tests
import `tests.worker_app.handlers` directly.
"""
