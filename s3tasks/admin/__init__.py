"""The s3tasks admin: configuration (config), history (history), and their custom pages.

Importing the submodules registers their ModelAdmins with the default admin site.
"""

from s3tasks.admin import config, history  # noqa: F401
from s3tasks.admin.optional import register_optional_models

register_optional_models()
