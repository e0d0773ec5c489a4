"""Release 1 of the rolling-deploy test's app: uploads are recorded, nothing handles removals.

Loaded into `manage.py` subprocesses with `S3TASKS_EXTRA_APPS=tests.deploy_v1`.
"""
