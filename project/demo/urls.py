from django.urls import path

from project.demo import views

app_name = "demo"

urlpatterns = [
    path("", views.upload_page, name="upload"),
    path("presign/", views.presign, name="presign"),
    path("runs/", views.recent_runs, name="runs"),
]
