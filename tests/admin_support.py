"""Helpers shared by the admin page tests."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import Permission


def login_staff(client: Any, user_model: Any, *perms: str) -> Any:
    """`client`, logged in as a staff user holding exactly the given `app.codename` perms."""
    user = user_model.objects.create_user("staff", password="pw", is_staff=True)
    for perm in perms:
        app_label, codename = perm.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    client.force_login(user)
    return client
