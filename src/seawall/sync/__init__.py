"""Sync from a paged change feed: durable cursors and a loop that applies each page once.

`PagedSync` reads a source's change feed ("changes since cursor", paged) and
hands each page to an *apply* function inside a database transaction that also
advances the page's cursor in `Cursors` (the ``sync_cursors`` table). The page
and its cursor commit together, so a run killed at any moment resumes exactly
where it stopped: nothing is skipped, nothing applied twice. What a change
means (upsert a case, close it) is the *apply* function's business; the cases
service's CRM sync is one (``seawall sync crm``, see ``docs/sync.md``).
"""

from seawall.sync._cursors import MAX_CURSOR_CHARS, Cursors
from seawall.sync._loop import (
    FULL_SUFFIX,
    ApplyPage,
    CursorMoved,
    FetchPage,
    Page,
    PagedSync,
    SyncProgress,
)

__all__ = [
    "FULL_SUFFIX",
    "MAX_CURSOR_CHARS",
    "ApplyPage",
    "CursorMoved",
    "Cursors",
    "FetchPage",
    "Page",
    "PagedSync",
    "SyncProgress",
]
