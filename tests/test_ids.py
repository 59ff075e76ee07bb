"""Time-ordered ids: valid UUIDs version 7, unique, sorted by the time they were made."""

from __future__ import annotations

import time
import uuid

from seawall.ids import new_id, new_ids


def _milliseconds(text: str) -> int:
    return int(text.replace("-", "")[:12], 16)


def test_an_id_is_a_version_7_uuid_of_now() -> None:
    before = time.time_ns() // 1_000_000
    text = new_id()
    after = time.time_ns() // 1_000_000

    parsed = uuid.UUID(text)
    assert (parsed.version, parsed.variant) == (7, uuid.RFC_4122)
    assert str(parsed) == text  # canonical: lower case, hyphens in place
    assert before <= _milliseconds(text) <= after


def test_ids_made_one_after_another_sort_in_that_order() -> None:
    made = []
    for _ in range(200):
        made.append(new_id())
        time.sleep(0.000_5)  # past the 12 bits of sub-millisecond time (0.25 µs)

    assert made == sorted(made)


def test_a_batch_is_distinct_version_7_uuids_that_sort_after_earlier_ids() -> None:
    earlier = new_id()
    time.sleep(0.001)
    ids = new_ids(5000)

    parsed = [uuid.UUID(text) for text in ids]
    assert len(set(ids)) == 5000
    assert {(one.version, one.variant) for one in parsed} == {(7, uuid.RFC_4122)}
    assert [str(one) for one in parsed] == ids
    assert min(ids) > earlier
    assert new_ids(0) == []


def test_many_ids_never_clash() -> None:
    ids = [new_id() for _ in range(20_000)] + new_ids(20_000)

    assert len(set(ids)) == 40_000
