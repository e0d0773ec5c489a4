"""Example Django project using s3tasks (settings, Celery app, demo handlers)."""

from project.celery import app as celery_app

__all__ = ["celery_app"]
