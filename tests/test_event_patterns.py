from __future__ import annotations

import pytest

from s3tasks.rules.filters import (
    event_matches,
    events_overlap,
    normalize_event_pattern,
    s3_event_type,
)


@pytest.mark.parametrize(
    "pattern, normalized",
    [
        ("s3:ObjectCreated:*", "ObjectCreated:*"),
        ("ObjectCreated:*", "ObjectCreated:*"),
        ("s3:ObjectRemoved:DeleteMarkerCreated", "ObjectRemoved:DeleteMarkerCreated"),
        (" s3:ObjectCreated:Put ", "ObjectCreated:Put"),
    ],
)
def test_patterns_accept_s3_prefixed_and_bare_forms(pattern, normalized):
    assert normalize_event_pattern(pattern) == normalized
    assert s3_event_type(pattern) == "s3:" + normalized


@pytest.mark.parametrize("pattern", ["ObjectCreated", "s3:ObjectCreated:Upload", "*", ""])
def test_non_s3_event_names_are_rejected_with_examples(pattern):
    with pytest.raises(ValueError, match="s3:ObjectCreated"):
        normalize_event_pattern(pattern)


@pytest.mark.parametrize(
    "pattern, name, matches",
    [
        ("ObjectCreated:*", "ObjectCreated:Put", True),
        ("ObjectCreated:*", "ObjectCreated:CompleteMultipartUpload", True),
        ("ObjectCreated:*", "ObjectRemoved:Delete", False),
        ("ObjectCreated:Put", "ObjectCreated:Put", True),
        ("ObjectCreated:Put", "ObjectCreated:Post", False),
    ],
)
def test_wildcard_and_exact_patterns_match_event_names(pattern, name, matches):
    assert event_matches(pattern, name) is matches


def test_wildcard_overlaps_its_members_but_not_other_families():
    assert events_overlap(["ObjectCreated:*"], ["ObjectCreated:Copy"])
    assert events_overlap(["ObjectCreated:Copy"], ["ObjectCreated:*"])
    assert not events_overlap(["ObjectCreated:*"], ["ObjectRemoved:*"])
