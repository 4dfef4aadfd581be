"""Business hours, pure: is the office open at a given moment?

The weekly ranges and closed dates of ``[business_hours]`` are read in its time zone;
the moment comes from the caller (the PBX's injectable wall clock), so a test can be
"after hours" without waiting.
"""

from __future__ import annotations

import zoneinfo
from datetime import datetime

from .config import BusinessHours


def is_open(hours: BusinessHours | None, when: datetime) -> bool:
    """``when`` (timezone-aware) falls in an open range of a day that is not closed.
    No business hours configured: always open."""
    if hours is None:
        return True
    local = when.astimezone(zoneinfo.ZoneInfo(hours.timezone))
    day = local.date().isoformat()
    for closed in hours.closed:
        first, _, last = closed.partition("..")
        if first <= day <= (last or first):
            return False
    clock = local.strftime("%H:%M")
    return any(start <= clock < end for start, end in hours.ranges(local.weekday()))
