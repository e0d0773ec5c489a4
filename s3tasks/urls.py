"""URLs of s3tasks for your project's URLconf: `path("s3tasks/", include("s3tasks.urls"))`.

`sns/` is the SNS HTTP(S) endpoint (docs/sns-endpoint.md): subscribe
`https://<your host>/s3tasks/sns/` to a topic (a `Subscription` row with that endpoint, and
`manage.py sync_notifications`). Needs `pip install 's3tasks[sns]'`.
"""

from __future__ import annotations

from django.urls import path

from s3tasks.sns.views import sns_endpoint

app_name = "s3tasks"

urlpatterns = [
    path("sns/", sns_endpoint, name="sns-endpoint"),
]
