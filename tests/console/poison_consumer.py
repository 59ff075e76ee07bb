"""A consumer group that refuses "poison" cases while a flag file exists (browser test).

`seawall serve` loads it with ``SEAWALL_CONSUMER_MODULES``; the flag file is named
by ``CONSOLE_E2E_POISON_FLAG``. The test process never imports it (its
``@consumer`` would join every later in-process worker).
"""

from __future__ import annotations

import os

from sqlalchemy.ext.asyncio import AsyncSession

from seawall.messaging import Event, Unprocessable, consumer

AUDIT = "audit__from_cases"


@consumer(durable=AUDIT, subjects=["seawall.cases.case.created"])
async def audit(event: Event, session: AsyncSession) -> None:
    """Accept every case, except a poison one while the flag file is there."""
    flag = os.environ.get("CONSOLE_E2E_POISON_FLAG")
    title = str((event.data or {}).get("title", ""))
    if flag and os.path.exists(flag) and title.startswith("poison"):  # noqa: ASYNC240
        raise Unprocessable(f"audit refuses {title!r}: the poison flag is up")
