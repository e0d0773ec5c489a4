from __future__ import annotations

import pytest

from s3tasks.rules.registry import HandlerRegistry, on_s3_event, s3_handler


@pytest.fixture
def local_registry():
    return HandlerRegistry()


def test_decorator_registers_handler_under_its_module_and_function_name(local_registry):
    @on_s3_event("uploads", registry=local_registry)
    def resize(event):
        return "done"

    handler = local_registry.get(
        f"{__name__}.test_decorator_registers_handler_under_its_module"
        "_and_function_name.<locals>.resize"
    )
    assert handler.func is resize
    assert resize("x") == "done"  # the function stays a plain, callable function


def test_decorator_declares_a_code_binding_with_normalized_events(local_registry):
    @on_s3_event(
        "uploads",
        events=["s3:ObjectCreated:Put", "ObjectRemoved:*"],
        prefix="in/",
        suffix=".csv",
        name="csv",
        registry=local_registry,
    )
    def handle(event):
        pass

    (binding,) = local_registry.get("csv").bindings
    assert binding.bucket == "uploads"
    assert binding.events == ("ObjectCreated:Put", "ObjectRemoved:*")
    assert (binding.prefix, binding.suffix) == ("in/", ".csv")


def test_handler_becomes_a_json_celery_task_named_like_the_handler(local_registry):
    @s3_handler(name="tests.registry.named", max_retries=7, registry=local_registry)
    def handle(event):
        pass

    task = local_registry.get("tests.registry.named").task
    assert task.name == "tests.registry.named"
    assert task.serializer == "json"
    assert task.max_retries is None  # s3tasks counts attempts itself (outages do not count)
    assert local_registry.get("tests.registry.named").max_retries == 7
    assert task.acks_late and task.reject_on_worker_lost  # a lost worker's task is redelivered


def test_stacked_decorators_bind_one_handler_to_several_buckets(local_registry):
    @on_s3_event("a", name="multi", registry=local_registry)
    @on_s3_event("b", prefix="x/", name="multi", registry=local_registry)
    def handle(event):
        pass

    handler = local_registry.get("multi")
    assert sorted(b.bucket for b in handler.bindings) == ["a", "b"]
    assert len(local_registry) == 1


def test_plain_registration_declares_no_binding(local_registry):
    @s3_handler(registry=local_registry)
    def only_in_admin(event):
        pass

    (handler,) = list(local_registry)
    assert handler.bindings == ()


def test_two_functions_cannot_share_a_handler_name(local_registry):
    @s3_handler(name="same", registry=local_registry)
    def first(event):
        pass

    with pytest.raises(ValueError, match="already registered"):

        @s3_handler(name="same", registry=local_registry)
        def second(event):
            pass


def test_unknown_event_pattern_is_rejected_at_declaration(local_registry):
    with pytest.raises(ValueError, match="not an S3 event type"):
        on_s3_event("uploads", events=["ObjectUploaded"], registry=local_registry)


def test_unknown_handler_lookup_names_the_registered_ones(local_registry):
    @s3_handler(name="known", registry=local_registry)
    def handle(event):
        pass

    with pytest.raises(LookupError, match="known"):
        local_registry.get("missing")


def test_writes_to_is_parsed_into_bucket_and_prefix(local_registry):
    @on_s3_event("in", writes_to=["out/reports/"], name="w", registry=local_registry)
    def handle(event):
        pass

    (output,) = local_registry.get("w").writes_to
    assert (output.bucket, output.prefix) == ("out", "reports/")


def test_handler_names_that_are_not_identifiers_still_make_celery_tasks(local_registry):
    @s3_handler(name="reports.nightly-export 2", registry=local_registry)
    def export(event):
        pass

    assert local_registry.get("reports.nightly-export 2").task.name == "reports.nightly-export 2"


def test_every_public_name_is_importable_from_the_package():
    import s3tasks

    assert sorted(s3tasks.__all__) == sorted(s3tasks._EXPORTS)
    for name in s3tasks.__all__:
        assert getattr(s3tasks, name) is not None
