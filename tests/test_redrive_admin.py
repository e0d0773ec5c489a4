"""The "Redrive dead-letter messages to this queue" action on Queue, through Django's test
client against moto's HTTP server: the confirmation page with the DLQ depth, a bounded move,
the limit's validation, and the custom permission."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType
from django.urls import reverse

from s3tasks.aws import client
from s3tasks.models import Queue
from tests.admin_support import login_staff
from tests.redrive_support import (
    WrappedSQS,
    depth,
    make_pair,
    originals,
    refusing,
    send_all,
)

pytestmark = [pytest.mark.django_db, pytest.mark.integration]


@pytest.fixture
def work(moto_endpoint) -> tuple[Queue, str, str]:
    source_url, dlq_url = make_pair("admin-work", "admin-work-dlq")
    send_all(dlq_url, originals(25))
    return Queue.objects.get(name="admin-work"), source_url, dlq_url


def redrive_action(client, queues, **extra):
    return client.post(
        reverse("admin:s3tasks_queue_changelist"),
        {"action": "redrive_dead_letters", "_selected_action": [q.pk for q in queues], **extra},
        follow=True,
    )


def test_the_action_first_shows_the_dead_letter_queue_and_its_depth(admin_client, work):
    queue, source_url, dlq_url = work
    response = redrive_action(admin_client, [queue])
    html = response.content.decode()
    assert response.templates[0].name == "admin/s3tasks/queue/redrive_confirmation.html"
    assert "admin-work-dlq" in html and '<td class="redrive-waiting">25</td>' in html
    assert 'name="limit" value="1000"' in html and 'id="redrive-confirm"' in html
    assert depth(source_url) == 0 and depth(dlq_url) == 25


def test_confirming_moves_up_to_the_limit_and_reports_the_counts(admin_client, work):
    queue, source_url, dlq_url = work
    response = redrive_action(admin_client, [queue], post="yes", limit="10")
    html = response.content.decode()
    assert (
        "Moved 10 messages from admin-work-dlq to admin-work; about 15 left in the "
        "dead-letter queue." in html
    )
    assert depth(source_url) == 10 and depth(dlq_url) == 15


def test_a_limit_out_of_range_shows_the_page_again_and_moves_nothing(admin_client, work):
    queue, source_url, _ = work
    response = redrive_action(admin_client, [queue], post="yes", limit="0")
    assert response.templates[0].name == "admin/s3tasks/queue/redrive_confirmation.html"
    assert "greater than or equal to 1" in response.content.decode()
    assert depth(source_url) == 0


def test_a_queue_without_a_dead_letter_queue_says_so_and_offers_no_move(admin_client, work):
    client("sqs").create_queue(QueueName="admin-plain")
    plain = Queue.objects.create(name="admin-plain")
    html = redrive_action(admin_client, [plain]).content.decode()
    assert "has no dead-letter queue" in html and 'id="redrive-confirm"' not in html


def redrive_permission() -> str:
    """The custom permission `Queue.Meta.permissions` declares (made by migrate)."""
    assert Permission.objects.filter(
        codename="redrive_queue", content_type=ContentType.objects.get_for_model(Queue)
    ).exists()
    return "s3tasks.redrive_queue"


def test_staff_without_the_redrive_permission_are_not_offered_the_action(
    client, django_user_model, work
):
    queue, source_url, _ = work
    login_staff(client, django_user_model, "s3tasks.view_queue", "s3tasks.change_queue")
    listing = client.get(reverse("admin:s3tasks_queue_changelist")).content.decode()
    assert 'value="redrive_dead_letters"' not in listing
    response = redrive_action(client, [queue], post="yes", limit="10")  # posted anyway
    assert response.templates[0].name == "admin/change_list.html"  # no confirmation page
    assert depth(source_url) == 0


def test_staff_with_the_redrive_permission_can_redrive_with_view_permission_only(
    client, django_user_model, work
):
    queue, source_url, _ = work
    login_staff(client, django_user_model, "s3tasks.view_queue", redrive_permission())
    listing = client.get(reverse("admin:s3tasks_queue_changelist")).content.decode()
    assert 'value="redrive_dead_letters"' in listing
    response = redrive_action(client, [queue], post="yes", limit="5")
    assert "Moved 5 messages" in response.content.decode()
    assert depth(source_url) == 5


def test_copies_sqs_refuses_are_reported_and_stay_in_the_dead_letter_queue(
    admin_client, work, monkeypatch
):
    queue, source_url, dlq_url = work
    sqs = WrappedSQS(client("sqs"), send_message_batch=refusing(('"n": 3}',)))
    monkeypatch.setattr("s3tasks.aws.client", lambda service, **kwargs: sqs)
    html = redrive_action(admin_client, [queue], post="yes", limit="1000").content.decode()
    assert "Moved 24 messages from admin-work-dlq to admin-work; about 1 left" in html
    assert (
        "1 could not be moved and stays in the dead-letter queue: admin-work refused the copy: "
        "InternalError try later." in html
    )
    assert depth(source_url) == 24 and depth(dlq_url) == 1


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_an_operator_redrives_a_dead_letter_queue_in_chromium(
    live_server, moto_endpoint, django_user_model, tmp_path, monkeypatch
):
    from tests.browser_support import chromium_page, log_in

    source_url, dlq_url = make_pair("browser-work", "browser-work-dlq")
    send_all(dlq_url, originals(12))
    queue = Queue.objects.get(name="browser-work")
    django_user_model.objects.create_superuser("admin", "admin@example.com", "pw")
    with chromium_page(monkeypatch, width=1400, height=900) as page:
        log_in(page, live_server.url)
        page.goto(f"{live_server.url}{reverse('admin:s3tasks_queue_changelist')}")
        page.check(f"input[name=_selected_action][value='{queue.pk}']")
        page.select_option("select[name=action]", "redrive_dead_letters")
        page.click("button[name=index]")
        page.wait_for_selector("#redrive-confirm")
        assert page.inner_text("td.redrive-waiting") == "12"
        page.screenshot(path=tmp_path / "redrive-confirmation.png")
        page.fill("input[name=limit]", "5")
        page.click("#redrive-confirm")
        message = page.wait_for_selector("ul.messagelist li.success")
        assert "Moved 5 messages from browser-work-dlq to browser-work" in message.inner_text()
        page.screenshot(path=tmp_path / "redrive-done.png")
    assert depth(source_url) == 5 and depth(dlq_url) == 7
