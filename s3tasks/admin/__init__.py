"""The s3tasks admin: configuration (config), history (history), and their custom pages.

Each submodule registers its ModelAdmins with `@admin.register`, as any app's admin.py does;
Django's admin autodiscovery imports this package.
"""

from s3tasks.admin import backfill, config, dashboard, history  # noqa: F401
