"""s3tasks' own logs, in process: the stderr handler commands add when the project configured
none, `-v` levels, the JSON formatter, the fields of run lines, the worker's start and
shutdown lines. The same seen from real `manage.py` processes: tests/test_logs_commands.py."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from django.core.exceptions import ImproperlyConfigured

from s3tasks.conf import build_settings
from s3tasks.logs import (
    AWS_SDK_LOGGERS,
    RUN_FIELDS,
    CommandLogHandler,
    JsonFormatter,
    configure_command_logging,
)
from s3tasks.processing.dispatch import dispatch_event
from s3tasks.processing.messages import InboundMessage, process_message
from s3tasks.worker.memory_sqs import MemorySQS
from s3tasks.worker.runner import connection_hints
from tests.factories import make_event, routes
from tests.payload_files import load_payload
from tests.worker_support import Recorder, consumer, make_queue

TOUCHED = ("", "s3tasks", *AWS_SDK_LOGGERS)  # "" is the root logger


@contextmanager
def bare_logging() -> Iterator[None]:
    """A process whose project configured no logging (as with no LOGGING setting), restored
    afterwards: no handler on the root (pytest's are taken off meanwhile) or on s3tasks."""
    saved = {}
    for name in TOUCHED:
        logger = logging.getLogger(name)
        saved[name] = (list(logger.handlers), logger.level, logger.propagate)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.setLevel(logging.WARNING if name == "" else logging.NOTSET)
    try:
        yield
    finally:
        for name, (handlers, level, propagate) in saved.items():
            logger = logging.getLogger(name)
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
            for handler in handlers:
                logger.addHandler(handler)
            logger.setLevel(level)
            logger.propagate = propagate


def ours(name: str) -> list[logging.Handler]:
    return [h for h in logging.getLogger(name).handlers if isinstance(h, CommandLogHandler)]


# --- where lines go ----------------------------------------------------------------------


def test_without_logging_configured_commands_log_to_stderr_with_time_level_and_logger(capsys):
    with bare_logging():
        assert configure_command_logging(1, "text") is True
        logging.getLogger("s3tasks.worker").info("s3tasks worker: consuming jobs")
        logging.getLogger("s3tasks.worker").debug("not at verbosity 1")
        err = capsys.readouterr().err

    (line,) = err.splitlines()
    assert line.endswith(" INFO s3tasks.worker: s3tasks worker: consuming jobs")
    assert line[:4].isdigit()  # starts with the time
    assert logging.getLogger("s3tasks").propagate  # a project's root handler still gets them


@pytest.mark.parametrize(
    "verbosity, shown, hidden",
    [
        (0, ["WARNING"], ["INFO", "DEBUG"]),
        (1, ["WARNING", "INFO"], ["DEBUG"]),
        (2, ["WARNING", "INFO", "DEBUG"], []),
        (3, ["WARNING", "INFO", "DEBUG"], []),
    ],
)
def test_verbosity_sets_the_s3tasks_level_as_django_commands_do(capsys, verbosity, shown, hidden):
    with bare_logging():
        configure_command_logging(verbosity, "text")
        logger = logging.getLogger("s3tasks.processing")
        for level in ("WARNING", "INFO", "DEBUG"):
            logger.log(getattr(logging, level), "line at %s", level)
        err = capsys.readouterr().err

    for level in shown:
        assert f"line at {level}" in err
    for level in hidden:
        assert f"line at {level}" not in err


def test_verbosity_3_also_shows_the_aws_sdk_at_info_but_never_its_debug_dumps(capsys):
    with bare_logging():
        configure_command_logging(3, "text")
        logging.getLogger("botocore.credentials").info("Found credentials in environment")
        logging.getLogger("botocore.endpoint").debug("Sending http request: <secret body>")
        err = capsys.readouterr().err

    assert "INFO botocore.credentials: Found credentials in environment" in err
    assert "secret body" not in err


def test_below_verbosity_3_the_aws_sdk_is_left_alone(capsys):
    with bare_logging():
        configure_command_logging(2, "text")
        assert not ours("botocore") and logging.getLogger("botocore").level == logging.NOTSET
        logging.getLogger("botocore.credentials").info("Found credentials in environment")
        assert "Found credentials" not in capsys.readouterr().err


def test_a_project_that_configured_logging_gets_no_handler_and_keeps_its_levels():
    project_handler = logging.StreamHandler(sys.stdout)
    with bare_logging():
        logging.getLogger().addHandler(project_handler)  # e.g. LOGGING with a root handler
        logging.getLogger("s3tasks").setLevel(logging.ERROR)

        assert configure_command_logging(2, "json") is False

        s3tasks_logger = logging.getLogger("s3tasks")
        assert s3tasks_logger.handlers == [] and s3tasks_logger.level == logging.ERROR
        assert not ours("botocore")


def test_turning_propagation_off_counts_as_configuring_the_s3tasks_logger():
    with bare_logging():
        logging.getLogger("s3tasks").propagate = False  # silenced on purpose

        assert configure_command_logging(1, "text") is False
        assert logging.getLogger("s3tasks").handlers == []


def test_configuring_again_replaces_the_handler_and_the_last_verbosity_wins(capsys):
    with bare_logging():
        configure_command_logging(3, "text")
        configure_command_logging(0, "text")

        assert len(ours("s3tasks")) == 1
        assert logging.getLogger("s3tasks").level == logging.WARNING
        assert not ours("botocore") and logging.getLogger("botocore").level == logging.NOTSET
        logging.getLogger("s3tasks.worker").warning("once")
        assert capsys.readouterr().err.count("once") == 1


def test_the_handler_writes_to_whatever_stderr_is_when_a_line_is_logged(monkeypatch):
    import io

    with bare_logging():
        configure_command_logging(1, "text")
        redirected = io.StringIO()
        monkeypatch.setattr(sys, "stderr", redirected)
        logging.getLogger("s3tasks").info("after the redirect")

    assert "after the redirect" in redirected.getvalue()


def s3tasks_commands() -> list[str]:
    from pathlib import Path

    from django.core.management import find_commands

    import s3tasks

    return sorted(find_commands(str(Path(s3tasks.__file__).parent / "management")))


@pytest.mark.parametrize("name", s3tasks_commands())
def test_every_s3tasks_command_offers_log_format_and_verbosity(name):
    from django.core.management import load_command_class

    usage = load_command_class("s3tasks", name).create_parser("manage.py", name).format_help()
    assert "--log-format {text,json}" in usage and "-v {0,1,2,3}" in usage


# --- JSON ------------------------------------------------------------------------------------


def test_log_format_json_writes_one_object_per_line(capsys):
    with bare_logging():
        configure_command_logging(1, "json")
        logging.getLogger("s3tasks.worker").info("two\nlines", extra={"queues": ["a", "b"]})
        err = capsys.readouterr().err

    (line,) = err.splitlines()
    entry = json.loads(line)
    assert entry["message"] == "two\nlines" and entry["queues"] == ["a", "b"]
    assert (entry["level"], entry["logger"]) == ("INFO", "s3tasks.worker")
    assert entry["timestamp"].endswith("Z")


def test_the_log_format_setting_is_the_default_of_the_flag(capsys, settings):
    settings.S3TASKS = {**settings.S3TASKS, "LOG_FORMAT": "json"}
    with bare_logging():
        configure_command_logging(1)
        logging.getLogger("s3tasks").info("from the setting")
        err = capsys.readouterr().err

    assert json.loads(err)["message"] == "from the setting"


def test_a_wrong_log_format_setting_says_which_values_are_allowed():
    with pytest.raises(ImproperlyConfigured, match="LOG_FORMAT.*'text', 'json'"):
        build_settings({"LOG_FORMAT": "xml"})
    assert build_settings(None).LOG_FORMAT == "text"


def test_json_formatter_keeps_extra_fields_tracebacks_and_stringifies_the_rest():
    logger = logging.getLogger("s3tasks.test")
    try:
        raise ValueError("boom")
    except ValueError:
        record = logger.makeRecord(
            logger.name,
            logging.ERROR,
            __file__,
            1,
            "failed %s",
            ("x",),
            sys.exc_info(),
            extra={"run_id": 7, "when": object.__new__(object)},
        )

    entry = json.loads(JsonFormatter().format(record))

    assert entry["message"] == "failed x" and entry["run_id"] == 7
    assert entry["when"].startswith("<object object")
    assert "ValueError: boom" in entry["exception"]
    assert "args" not in entry and "levelno" not in entry  # LogRecord's own attributes


# --- what the lines carry --------------------------------------------------------------------


@pytest.mark.django_db
def test_a_finished_run_logs_its_event_and_run_fields(caplog):
    import tests.handlers_for_dispatch  # noqa: F401 (registers the handlers)

    event = make_event("logged.csv")
    with caplog.at_level(logging.DEBUG, logger="s3tasks"):
        outcome = dispatch_event(event, routes=routes("tests.dispatch.count"), mode="inline")

    started, finished = [r for r in caplog.records if getattr(r, "run_id", None)]
    assert "started" in started.getMessage() and started.levelno == logging.DEBUG
    assert finished.levelno == logging.INFO
    assert "tests.dispatch.count succeeded on s3://" in finished.getMessage()
    fields = {name: getattr(finished, name) for name in RUN_FIELDS}
    assert fields == {
        "dedup_key": event.dedup_key,
        "bucket": event.bucket,
        "key": "logged.csv",
        "handler": "tests.dispatch.count",
        "run_id": outcome.runs[0].run_id,
        "attempt": 1,
        "duration_ms": fields["duration_ms"],
        "outcome": "succeeded",
    }
    assert fields["duration_ms"] >= 0


@pytest.mark.django_db
def test_a_failed_run_logs_its_fields_with_the_outcome(caplog, django_capture_on_commit_callbacks):
    import tests.handlers_for_dispatch  # noqa: F401 (registers the handlers)

    with caplog.at_level(logging.INFO, logger="s3tasks"):
        with django_capture_on_commit_callbacks(execute=True):
            dispatch_event(
                make_event("bad.csv"),
                routes=routes("tests.dispatch.write_then_fail"),
                mode="inline",
            )

    (line,) = [r for r in caplog.records if getattr(r, "run_id", None)]
    assert line.levelno == logging.WARNING
    assert (line.handler, line.key, line.attempt, line.outcome) == (
        "tests.dispatch.write_then_fail",
        "bad.csv",
        1,
        "retrying",
    )


@pytest.mark.django_db
def test_a_hand_off_to_celery_logs_the_run_fields_with_outcome_sent(
    caplog, django_capture_on_commit_callbacks
):
    import tests.handlers_for_dispatch  # noqa: F401 (registers the handlers)

    with caplog.at_level(logging.DEBUG, logger="s3tasks"):
        with django_capture_on_commit_callbacks(execute=True):
            outcome = dispatch_event(
                make_event("celery.csv"), routes=routes("tests.dispatch.count"), mode="celery"
            )

    (sent,) = [r for r in caplog.records if getattr(r, "outcome", None) == "sent"]
    assert "sent to Celery" in sent.getMessage()
    assert (sent.handler, sent.key, sent.run_id) == (
        "tests.dispatch.count",
        "celery.csv",
        outcome.runs[0].run_id,
    )


@pytest.mark.parametrize(
    "body, outcome",
    [(load_payload("test_event"), "test_event"), ("{not json", "malformed")],
)
def test_lines_about_a_whole_message_carry_its_id_queue_and_outcome(caplog, body, outcome):
    message = InboundMessage(message_id="m-7", body=body, receive_count=2, queue_name="jobs")

    with caplog.at_level(logging.INFO, logger="s3tasks"):
        process_message(message)

    (line,) = [r for r in caplog.records if getattr(r, "message_id", None) == "m-7"]
    assert (line.queue, line.receive_count, line.outcome) == ("jobs", 2, outcome)


def test_the_worker_start_line_names_queues_dispatch_concurrency_and_hints(caplog):
    sqs = MemorySQS()
    make_queue(sqs, "jobs")
    make_queue(sqs, "more")
    worker = consumer(sqs, Recorder(), "jobs", "more", dispatch="inline", concurrency=3)
    worker.hints = ["DATABASES['default']['CONN_MAX_AGE'] is 0, so …"]

    with caplog.at_level(logging.INFO, logger="s3tasks"):
        worker.run()

    (start,) = [r for r in caplog.records if "consuming" in r.getMessage()]
    assert start.getMessage().startswith(
        "s3tasks worker: consuming jobs, more (dispatch inline, concurrency 3,"
    )
    assert "; hint: DATABASES['default']['CONN_MAX_AGE'] is 0" in start.getMessage()
    assert (start.queues, start.dispatch, start.concurrency) == (["jobs", "more"], "inline", 3)


def test_the_worker_logs_when_its_shutdown_begins_and_ends_with_the_final_counts(caplog):
    sqs = MemorySQS()
    url = make_queue(sqs, "jobs")
    sqs.send_message(QueueUrl=url, MessageBody="one")

    with caplog.at_level(logging.INFO, logger="s3tasks"):
        final = consumer(sqs, Recorder(), shutdown_timeout=7).run()

    messages = [r.getMessage() for r in caplog.records]
    begins = messages.index(
        "s3tasks worker: shutting down: waiting up to 7s for 0 in-flight message(s)"
    )
    (ends,) = [r for r in caplog.records if r.getMessage().startswith("s3tasks worker: stopped;")]
    assert messages.index(ends.getMessage()) > begins
    assert "received=1 handled=1" in ends.getMessage()
    assert ends.counts["received"] == final.received == 1


@pytest.mark.django_db
def test_a_database_that_reconnects_per_message_gets_a_start_line_hint():
    from django.db import connections

    database = connections["default"].settings_dict
    before = database["CONN_MAX_AGE"]
    try:
        database["CONN_MAX_AGE"] = 0
        assert any("DATABASES['default']['CONN_MAX_AGE'] is 0" in h for h in connection_hints())
        database["CONN_MAX_AGE"] = 60
        assert not any("'default'" in h for h in connection_hints())
    finally:
        database["CONN_MAX_AGE"] = before
