"""A test-only Django app whose `handlers` module s3tasks autodiscovers (in-process and in
the awslambdaric subprocess, which runs with `DJANGO_SETTINGS_MODULE=lambda_settings`)."""
