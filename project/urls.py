"""The example project's URLs: the admin, and s3tasks' SNS endpoint at `/s3tasks/sns/`
(docs/sns-endpoint.md). The demo pages are mounted by `project.demo.site_urls`, which settings
select only while the demo runs (S3TASKS_DEMO=1)."""

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("s3tasks/", include("s3tasks.urls")),
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
]
