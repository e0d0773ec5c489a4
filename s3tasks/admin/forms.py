"""Forms of the s3tasks admin: handler dropdowns and the hypothetical-event form."""

from __future__ import annotations

from typing import Any

from django import forms
from django.utils.text import capfirst
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from s3tasks.models import Bucket, HandlerBinding
from s3tasks.rules.filters import S3_EVENT_TYPES
from s3tasks.rules.registry import registry

# Concrete event names only: a real event is never a wildcard.
EVENT_NAME_CHOICES = [(name, f"s3:{name}") for name in sorted(S3_EVENT_TYPES) if "*" not in name]


def handler_choices(current: str = "") -> list[tuple[str, str]]:
    """Registered handler names; keeps an unknown current value visible (so it can be fixed)."""

    names = registry.names()
    choices = [("", "---------")] + [(n, n) for n in names]
    if current and current not in names:
        label = gettext("%(handler)s (not registered)") % {"handler": current}
        choices.append((current, label))
    return choices


class HandlerBindingForm(forms.ModelForm):
    """A binding whose handler is picked from the registry instead of typed."""

    class Meta:
        model = HandlerBinding
        fields = ["handler_name", "celery_queue", "access", "enabled"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "handler_name" not in self.fields:  # read-only (declared in code): shown as text
            return
        current = self.instance.handler_name if self.instance and self.instance.pk else ""
        self.fields["handler_name"] = forms.ChoiceField(
            label=capfirst(HandlerBinding._meta.get_field("handler_name").verbose_name),
            choices=handler_choices(current),
            help_text=_("Handlers registered with @on_s3_event or @s3_handler."),
        )


class HypotheticalEventForm(forms.Form):
    """Bucket + key + event name: the minimum that routing looks at."""

    bucket = forms.CharField(label=_("Bucket"), max_length=63)
    key = forms.CharField(
        label=_("Key"),
        max_length=1024,
        help_text=_("The object key, as stored (not URL-encoded)."),
    )
    event_name = forms.ChoiceField(
        label=_("Event name"), choices=EVENT_NAME_CHOICES, initial="ObjectCreated:Put"
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)

        names = list(Bucket.objects.values_list("name", flat=True))
        self.fields["bucket"].widget = forms.TextInput(attrs={"list": "s3tasks-buckets"})
        self.bucket_names = names


class TestEventForm(HypotheticalEventForm):
    """A hypothetical event that is actually dispatched."""

    size = forms.IntegerField(
        label=_("Size"), required=False, min_value=0, help_text=_("Optional object size.")
    )
    mode = forms.ChoiceField(
        label=_("Mode"),
        choices=[
            ("", _("Default (S3TASKS['DISPATCH'])")),
            ("inline", _("Inline")),
            ("celery", _("Celery")),
        ],
        required=False,
        help_text=_("Inline runs the handlers in this web request and shows their result."),
    )
