"""The admin's operations dashboard, as a model the admin index can list.

The admin lists models, not pages: a proxy with no table, no permissions and no rows of its
own puts "Operations dashboard" in the s3tasks section of the admin index and its sidebar,
through public APIs only (no custom `AdminSite`, no override of the project's index template).
Its admin (`s3tasks.admin.dashboard`) shows the dashboard to whoever may view handler runs.
"""

from __future__ import annotations

from django.utils.translation import gettext_lazy as _

from s3tasks.models.history import HandlerRun


class OperationsDashboard(HandlerRun):
    class Meta:
        proxy = True
        default_permissions = ()  # seeing it needs s3tasks.view_handlerrun, nothing new
        verbose_name = _("operations dashboard")
        verbose_name_plural = _("operations dashboard")
