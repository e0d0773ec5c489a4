#!/usr/bin/env python
"""Django's command-line utility for the s3tasks example project."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    if sys.argv[1:2] == ["s3tasks_demo"]:
        # The demo runs on loopback against an emulator: demo mode (a throwaway SECRET_KEY,
        # DEBUG on, the /demo/ pages), inherited by every process the demo starts.
        os.environ["S3TASKS_DEMO"] = "1"
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
