"""Release 2 of the rolling-deploy test's app: adds a handler for `ObjectRemoved:*` and moves
the archive rule's prefix.

Loaded into `manage.py` subprocesses with `S3TASKS_EXTRA_APPS=tests.deploy_v2`.
"""
