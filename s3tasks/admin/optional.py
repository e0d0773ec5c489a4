"""Read-only admin pages for s3tasks models that have no dedicated ModelAdmin.

Models added by other parts of s3tasks (e.g. the worker's malformed-message records) show up
in the admin without this package having to know them: evidence is never hidden.
"""

from __future__ import annotations

from django.apps import apps
from django.contrib import admin

from s3tasks.admin.history import ReadOnlyAdmin

# Internal cache row; config rows edited inline in their parent's form.
NOT_SHOWN = {"rulesversion", "handlerbinding", "subscription"}


def _admin_for(model: type) -> type[admin.ModelAdmin]:
    fields = [f.name for f in model._meta.concrete_fields if f.name != "id"]
    dates = [
        f.name for f in model._meta.concrete_fields if f.get_internal_type() == "DateTimeField"
    ]
    attrs = {
        "list_display": ["__str__", *fields[:5]],
        "readonly_fields": fields,
        "list_filter": dates[:1],
    }
    return type(f"{model.__name__}Admin", (ReadOnlyAdmin,), attrs)


def register_optional_models(site: admin.AdminSite | None = None) -> list[str]:
    """Register every unregistered s3tasks model read-only; returns their names."""
    site = site or admin.site
    added = []
    for model in apps.get_app_config("s3tasks").get_models():
        if model._meta.model_name in NOT_SHOWN or site.is_registered(model):
            continue
        site.register(model, _admin_for(model))
        added.append(model.__name__)
    return added
