"""Time-ordered unique ids: UUID version 7 (RFC 9562), as text.

seawall keys its rows with these: cases, outbox events (and so inbox rows),
documents, webhook deliveries. A version 7 UUID starts with the Unix time in
milliseconds, so ids made one after the other sort together and new rows go to
the right-hand edge of their B-tree indexes. Random (version 4) UUIDs land
anywhere in the index instead, and an insert into a large table then reads and
dirties a page of its own: in a 100,000-record CRM resync that made the database's
share of each record grow from about 25 to 80 µs on SQLite, and cost PostgreSQL a
third more (docs/BENCHMARKS.md, "CRM sync").

Layout, from the most significant bit: 48 bits of Unix milliseconds, the version
(``0111``), 12 bits of the time below the millisecond (RFC 9562's "increased
clock precision", so that one process's ids follow its clock to about 0.25 µs),
the variant (``10``) and 62 random bits. Ids made in the same call share the
time; their random bits keep them apart (a clash needs two of 2^62 values to meet
within the same quarter of a microsecond).
"""

from __future__ import annotations

import os
import time
from typing import Final

__all__ = ["new_id", "new_ids"]

_VERSION: Final = 0x7 << 76
_VARIANT: Final = 0b10 << 62
_RANDOM: Final = (1 << 62) - 1


def new_id() -> str:
    """A fresh UUID version 7, e.g. ``019af0c2-5a4e-7b3d-9f12-8c4d2e6a1b70``."""
    return new_ids(1)[0]


def new_ids(count: int) -> list[str]:
    """*count* fresh UUIDs version 7 sharing the current time, from one read of randomness.

    Cheaper per id than `new_id` or `uuid.uuid4` (no `uuid.UUID` object, one
    ``os.urandom`` call), for code that makes many at once.
    """
    milliseconds, rest = divmod(time.time_ns(), 1_000_000)
    below_millisecond = rest * 4096 // 1_000_000
    head = (milliseconds << 80) | _VERSION | (below_millisecond << 64) | _VARIANT
    data = os.urandom(8 * count)
    ids: list[str] = []
    for start in range(0, 8 * count, 8):
        text = f"{head | int.from_bytes(data[start : start + 8]) & _RANDOM:032x}"
        ids.append(f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}")
    return ids
