"""`manage.py s3tasks_demo`: the whole s3tasks loop on an embedded AWS emulator."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from project.demo.launcher import INNER_FLAG, INTERRUPTED, launch
from s3tasks.logs import configure_command_logging


class Command(BaseCommand):
    help = (
        "Start moto's AWS emulator on 127.0.0.1, migrate a demo SQLite database, sync the demo "
        "configuration, start the worker, upload sample CSV files (and remove one) and show "
        "the events flowing through the handlers and their follow-up commands."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--once",
            action="store_true",
            help="Exit when the loop completed (0) or the timeout passed (1); otherwise keep "
            "running with the admin and the upload page served until Ctrl-C, SIGTERM or "
            "SIGHUP, which end every process the demo started.",
        )
        parser.add_argument(
            "--port", type=int, default=0, help="Port of the AWS emulator (default: a free one)."
        )
        parser.add_argument(
            "--web-port",
            type=int,
            default=8000,
            help="Port of the admin and upload page without --once (default 8000).",
        )
        parser.add_argument(
            "--data-dir",
            default=".demo",
            help="Where the demo database and logs go (default .demo/; reset on every run, "
            "as the emulator starts empty).",
        )
        parser.add_argument(
            "--timeout",
            type=float,
            default=60.0,
            help="Seconds the loop may take before the demo gives up (default 60).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        configure_command_logging(options["verbosity"])
        data_dir = Path(options["data_dir"]).resolve()
        if os.environ.get(INNER_FLAG) == "1":
            from project.demo.loop import run_loop
            from project.demo.processes import interrupt_on_shutdown_signals

            interrupt_on_shutdown_signals()  # the launcher ends the demo with SIGTERM
            try:
                code = run_loop(
                    once=options["once"],
                    timeout=options["timeout"],
                    web_port=options["web_port"],
                    data_dir=data_dir,
                )
            except KeyboardInterrupt:
                code = INTERRUPTED
        else:
            argv = [
                "--web-port",
                str(options["web_port"]),
                "--data-dir",
                str(data_dir),
                "--timeout",
                str(options["timeout"]),
            ] + (["--once"] if options["once"] else [])
            try:
                code = launch(argv, port=options["port"], data_dir=data_dir)
            except RuntimeError as exc:
                raise CommandError(str(exc))
        if code == INTERRUPTED:
            self.stdout.write("Stopped.")
        elif code:
            raise CommandError(f"The demo did not complete (exit code {code}).", returncode=code)
