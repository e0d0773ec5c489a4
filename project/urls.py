"""The example project's URLs: the admin only. The demo pages are mounted by
`project.demo.site_urls`, which settings select only while the demo runs (S3TASKS_DEMO=1)."""

from django.contrib import admin
from django.urls import path
from django.views.generic import RedirectView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
]
