"""S3's overlap rules (pure): which prefix/suffix pairs S3 would reject for one event type."""

from __future__ import annotations

import pytest

from s3tasks.rules.filters import FilterEntry, find_clashes, prefixes_overlap, suffixes_overlap


@pytest.mark.parametrize(
    ("first", "second", "overlap"),
    [
        ("", "", True),
        ("", "images/", True),
        ("images/", "images/", True),
        ("images/", "images/2024/", True),
        ("images/2024/", "images/", True),
        ("images/", "videos/", False),
        ("img", "images/", False),
        ("a", "ab", True),
        ("ab", "ac", False),
    ],
)
def test_prefixes_overlap_when_a_key_can_start_with_both(first, second, overlap):
    assert prefixes_overlap(first, second) is overlap


@pytest.mark.parametrize(
    ("first", "second", "overlap"),
    [
        ("", "", True),
        ("", ".jpg", True),
        ("jpg", "pg", True),
        ("pg", "jpg", True),
        (".jpg", ".jpeg", False),
        (".csv", ".CSV", False),
        (".tar.gz", ".gz", True),
        (".png", ".jpg", False),
    ],
)
def test_suffixes_overlap_when_a_key_can_end_with_both(first, second, overlap):
    assert suffixes_overlap(first, second) is overlap


@pytest.mark.parametrize(
    ("a", "b", "clash"),
    [
        # same event type, overlapping prefix and suffix, different destinations
        ((("ObjectCreated:*",), "", ""), (("ObjectCreated:Put",), "", ""), True),
        ((("ObjectCreated:*",), "in/", "jpg"), (("ObjectCreated:*",), "in/", "pg"), True),
        # disjoint suffixes or prefixes
        ((("ObjectCreated:*",), "in/", ".png"), (("ObjectCreated:*",), "in/", ".jpg"), False),
        ((("ObjectCreated:*",), "a/", ""), (("ObjectCreated:*",), "b/", ""), False),
        # different event types never clash
        ((("ObjectCreated:*",), "", ""), (("ObjectRemoved:*",), "", ""), False),
        ((("ObjectCreated:Put",), "", ""), (("ObjectCreated:Copy",), "", ""), False),
    ],
)
def test_find_clashes_names_entries_s3_would_reject(a, b, clash):
    first = FilterEntry("rule A", a[0], a[1], a[2], "queue one")
    second = FilterEntry("rule B", b[0], b[1], b[2], "queue two")
    clashes = find_clashes([first, second])
    assert bool(clashes) is clash
    if clash:
        assert "rule A" in clashes[0] and "rule B" in clashes[0]


def test_overlapping_entries_to_the_same_destination_are_not_a_clash():
    entries = [
        FilterEntry("rule A", ("ObjectCreated:*",), "", "", "queue one"),
        FilterEntry("rule B", ("ObjectCreated:*",), "in/", "", "queue one"),
    ]
    assert find_clashes(entries) == []
