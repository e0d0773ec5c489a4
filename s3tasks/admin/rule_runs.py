"""Handler runs "by rule": a run does not record its rule, so the runs a rule routes are found
by what the rule matches (docs/admin.md, "See runs")."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

from s3tasks.models import NotificationRule
from s3tasks.rules.filters import normalize_event_pattern

RULE_PARAMETER = "rule"


def runs_of_rule(rule: NotificationRule) -> Q:
    """The runs a rule routes: handlers bound to it, on events of its bucket whose name and key
    its filters let through.

    A run does not record its rule (it is one per event and handler, whichever rules matched),
    so this matches the rule as it is now: runs routed under an earlier prefix are left out,
    and a handler that two overlapping rules bind shows under both.
    """
    events = Q()
    for pattern in rule.events:
        try:
            name = normalize_event_pattern(str(pattern))
        except ValueError:
            continue
        if name.endswith("*"):
            events |= Q(event__event_name__startswith=name[:-1])
        else:
            events |= Q(event__event_name=name)
    if not events:
        return Q(pk__in=[])
    return events & Q(
        handler_name__in=[b.handler_name for b in rule.bindings.all()],
        event__bucket=rule.bucket.name,
        event__key__startswith=rule.prefix,
        event__key__endswith=rule.suffix,
    )


class RuleFilter(admin.SimpleListFilter):
    """The list filter "By rule": the runs a notification rule routes (`runs_of_rule`)."""

    title = _("rule")
    parameter_name = RULE_PARAMETER

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list:
        rules = NotificationRule.objects.select_related("bucket")
        return [(str(rule.pk), str(rule)) for rule in rules]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() is None:
            return queryset
        rule = NotificationRule.objects.select_related("bucket").filter(pk=self.value()).first()
        return queryset.filter(runs_of_rule(rule)) if rule else queryset.none()
