"""Forms of the s3tasks admin: event-name checkboxes, handler dropdowns and the
hypothetical-event form."""

from __future__ import annotations

from typing import Any

from django import forms
from django.utils.text import capfirst
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from s3tasks.models import Bucket, HandlerBinding
from s3tasks.rules.filters import S3_EVENT_TYPES, normalize_event_pattern
from s3tasks.rules.registry import registry

# Concrete event names only: a real event is never a wildcard.
EVENT_NAME_CHOICES = [(name, f"s3:{name}") for name in sorted(S3_EVENT_TYPES) if "*" not in name]


# Families in the order people look for them; a family S3 adds later goes last.
EVENT_FAMILIES = (
    "ObjectCreated",
    "ObjectRemoved",
    "ObjectRestore",
    "ObjectTagging",
    "ObjectAcl",
    "Replication",
    "LifecycleExpiration",
    "LifecycleTransition",
    "IntelligentTiering",
    "ReducedRedundancyLostObject",
)


def event_pattern_choices() -> list[tuple[str, list[tuple[str, str]]]]:
    """Every event type S3 notifications accept, as `s3:` names grouped by family, each
    family's wildcard first."""
    families: dict[str, list[str]] = {}
    for name in sorted(S3_EVENT_TYPES):  # "*" sorts before letters: wildcards come first
        families.setdefault(name.split(":")[0], []).append(f"s3:{name}")
    order = {family: i for i, family in enumerate(EVENT_FAMILIES)}
    return [
        (family, [(name, name) for name in names])
        for family, names in sorted(families.items(), key=lambda f: (order.get(f[0], 99), f[0]))
    ]


def s3_event_names(patterns: Any) -> list[str]:
    """Stored patterns (`ObjectCreated:*` or `s3:ObjectCreated:*`) as the checkboxes' values;
    a value that is not an S3 event type is kept as it is (and rejected on save)."""
    if not isinstance(patterns, (list, tuple)):
        return []
    names = []
    for pattern in patterns:
        try:
            names.append("s3:" + normalize_event_pattern(str(pattern)))
        except ValueError:
            names.append(str(pattern))
    return names


class S3EventPatternsField(forms.MultipleChoiceField):
    """A rule's events as one checkbox per S3 event type, stored as a list of `s3:` names."""

    widget = forms.CheckboxSelectMultiple(attrs={"class": "s3tasks-event-names"})

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("choices", event_pattern_choices)
        kwargs.setdefault(
            "help_text",
            _(
                "The S3 events this rule sends on. A family's “*” covers all its events, "
                "including ones S3 adds later."
            ),
        )
        kwargs.setdefault(
            "error_messages",
            {"required": _("Choose at least one S3 event, e.g. s3:ObjectCreated:*.")},
        )
        super().__init__(**kwargs)

    def prepare_value(self, value: Any) -> Any:
        return s3_event_names(value)

    def has_changed(self, initial: Any, data: Any) -> bool:
        return super().has_changed(s3_event_names(initial), data)


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
