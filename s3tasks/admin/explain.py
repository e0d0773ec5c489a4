""" "Which handlers would run?": the routing answer for a hypothetical event, with reasons.

The answer itself comes from the same compiled index the workers use (`load_index()`, read
fresh so the admin never shows a stale cache); the per-rule reasons are computed beside it so
a user can see why a rule they expected did not match.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.utils.translation import gettext as _

from s3tasks.events import EventSource, S3Event
from s3tasks.models import NotificationRule
from s3tasks.rules.filters import event_matches, normalize_event_pattern
from s3tasks.rules.routing import Route, load_index


@dataclass(frozen=True)
class RuleVerdict:
    """One rule of the bucket and whether (and why not) it lets the event through."""

    rule_id: int
    label: str
    matched: bool
    reasons: tuple[str, ...] = ()
    handlers: tuple[str, ...] = ()


@dataclass(frozen=True)
class RoutingExplanation:
    event_name: str
    bucket: str
    key: str
    routes: list[Route] = field(default_factory=list)
    verdicts: list[RuleVerdict] = field(default_factory=list)


def rule_mismatch_reasons(
    patterns: list[str], prefix: str, suffix: str, event_name: str, key: str
) -> list[str]:
    """Why a rule's filters reject (event_name, key); empty when they accept it."""
    reasons = []
    try:
        normalized = [normalize_event_pattern(str(p)) for p in patterns]
    except ValueError as exc:
        return [_("the rule has an invalid event pattern: %(error)s") % {"error": exc}]
    if not any(event_matches(p, event_name) for p in normalized):
        patterns_text = ", ".join(normalized) or _("none")
        reasons.append(
            _("event %(event)s is not one of %(patterns)s")
            % {"event": event_name, "patterns": patterns_text}
        )
    if not key.startswith(prefix):
        reasons.append(_("key does not start with %(prefix)r") % {"prefix": prefix})
    if not key.endswith(suffix):
        reasons.append(_("key does not end with %(suffix)r") % {"suffix": suffix})
    return reasons


def explain_routing(bucket: str, key: str, event_name: str) -> RoutingExplanation:
    """The handlers an event would run, and a verdict for every rule of its bucket."""

    event_name = normalize_event_pattern(event_name)
    event = S3Event(bucket=bucket, key=key, event_name=event_name, source=EventSource.ADMIN)
    routes = load_index().route(event)
    verdicts = []
    rules = NotificationRule.objects.filter(bucket__name=bucket).prefetch_related("bindings")
    for rule in rules:
        reasons = rule_mismatch_reasons(rule.events, rule.prefix, rule.suffix, event_name, key)
        bindings = list(rule.bindings.all())
        enabled = [b.handler_name for b in bindings if b.enabled]
        if not rule.enabled:
            reasons.append(_("the rule is disabled"))
        elif not enabled:
            reasons.append(_("the rule has no enabled handler binding"))
        verdicts.append(
            RuleVerdict(rule.pk, str(rule), not reasons, tuple(reasons), tuple(enabled))
        )
    return RoutingExplanation(event_name, bucket, key, routes, verdicts)
