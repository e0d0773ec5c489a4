"""One exception hierarchy: what s3tasks raises (`S3TasksError`) and, apart from it, what
handlers raise (`HandlerFailure`); errors about a missing package name the extra to install."""

from __future__ import annotations

import importlib
import inspect
import pickle
import pkgutil
import sys

import pytest

import s3tasks
from s3tasks import exceptions
from s3tasks.emulator import LocalEmulator
from s3tasks.exceptions import (
    HandlerFailure,
    ImproperlyInstalled,
    OverlappingRules,
    PermanentFailure,
    S3TasksError,
    TemporaryFailure,
)

# Raised by a stand-in for a boto3 client, shaped like botocore's errors, not by s3tasks.
NOT_OURS = {"s3tasks.worker.memory_sqs.MemorySQSError"}


def exception_classes(module: object) -> list[type[BaseException]]:
    return [
        value
        for value in vars(module).values()
        if inspect.isclass(value)
        and issubclass(value, BaseException)
        and value.__module__ == getattr(module, "__name__", "")
    ]


def test_every_exception_is_in_exactly_one_of_the_two_families():
    classes = exception_classes(exceptions)
    assert classes
    for cls in classes:
        ours, handlers = issubclass(cls, S3TasksError), issubclass(cls, HandlerFailure)
        assert ours != handlers, cls


def test_catching_s3tasks_errors_never_swallows_a_handler_failure():
    for failure in (PermanentFailure("x"), TemporaryFailure("x"), HandlerFailure("x")):
        assert not isinstance(failure, S3TasksError)
    assert PermanentFailure("x").permanent and not TemporaryFailure("x").permanent


def test_handler_failures_are_importable_from_the_package_root():
    assert s3tasks.PermanentFailure is PermanentFailure
    assert s3tasks.TemporaryFailure is TemporaryFailure
    assert s3tasks.HandlerFailure is HandlerFailure


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("s3tasks.lambda_handler", "HandlersFailed"),
        ("s3tasks.lambda_handler", "UnidentifiedRecords"),
        ("s3tasks.followups.outbox", "UnknownTarget"),
        ("s3tasks.worker.runner", "QueueSelectionError"),
        ("s3tasks.worker", "QueueSelectionError"),
        ("s3tasks.processing.execution", "SwallowedDatabaseError"),
        ("s3tasks.processing.execution", "UndeclaredDatabaseUse"),
    ],
)
def test_old_import_locations_give_the_one_class_from_exceptions(module, name):
    cls = getattr(importlib.import_module(module), name)
    assert cls is getattr(exceptions, name)
    assert issubclass(cls, S3TasksError)


def test_no_module_of_the_package_defines_an_exception_of_its_own():
    found = []
    for info in pkgutil.walk_packages(s3tasks.__path__, "s3tasks."):
        if ".migrations" in info.name or info.name == "s3tasks.exceptions":
            continue
        module = importlib.import_module(info.name)
        found += [f"{info.name}.{cls.__name__}" for cls in exception_classes(module)]
    assert set(found) == NOT_OURS


def test_improperly_installed_names_the_package_and_the_extra_and_is_an_import_error():
    error = ImproperlyInstalled("redis", "redis", "a Redis broker")

    assert str(error) == (
        "s3tasks needs the 'redis' package for a Redis broker: pip install 's3tasks[redis]'"
    )
    assert (error.missing_package, error.install_extra, error.name) == ("redis", "redis", "redis")
    assert isinstance(error, ImportError) and isinstance(error, S3TasksError)


def test_exceptions_with_their_own_arguments_survive_pickling():
    # Celery and multiprocessing pickle exceptions; the attributes must come back.
    installed = pickle.loads(pickle.dumps(ImproperlyInstalled("moto", "demo", "the emulator")))
    assert (installed.missing_package, installed.install_extra) == ("moto", "demo")
    assert str(installed) == str(ImproperlyInstalled("moto", "demo", "the emulator"))
    clashes = pickle.loads(pickle.dumps(OverlappingRules(["a/b", "c/d"])))
    assert clashes.clashes == ["a/b", "c/d"]
    failure = pickle.loads(pickle.dumps(HandlerFailure("no", permanent=True)))
    assert failure.permanent and str(failure) == "no"


@pytest.mark.parametrize(
    ("module", "package"), [("moto", "moto"), ("flask", "flask"), ("flask_cors", "flask-cors")]
)
def test_the_emulator_without_moto_server_says_to_install_the_demo_extra(
    monkeypatch, module, package
):
    monkeypatch.setitem(sys.modules, module, None)  # importing it now fails
    emulator = LocalEmulator()

    with pytest.raises(ImproperlyInstalled, match=r"pip install 's3tasks\[demo\]'") as caught:
        emulator.start()

    assert (caught.value.missing_package, caught.value.install_extra) == (package, "demo")
    assert package in str(caught.value)
    assert emulator.process is None  # nothing was started
