"""The project's URLs plus the demo pages: ROOT_URLCONF while `manage.py s3tasks_demo` runs.

A separate URLconf rather than a flag inside `project.urls`, so a copy of the project (or a
deployment that sets no demo mode) cannot serve the demo's presigned uploads by accident.
"""

from django.urls import include, path
from django.views.generic import RedirectView

from project.urls import urlpatterns as project_urlpatterns

urlpatterns = [
    path("demo/", include("project.demo.urls")),
    path("", RedirectView.as_view(url="/demo/", permanent=False)),
    *project_urlpatterns,
]
