"""RFC 3339 timestamps with nanoseconds, as Go's ``time.Time`` marshals them.

Times are carried as integer nanoseconds since the Unix epoch (UTC) so that identity
(node, image, startedAt) compares exactly and no float rounding creeps into keys.
"""

from __future__ import annotations

import calendar
import datetime
import functools
import re
import time

NS = 1_000_000_000

# ASCII digits only, and nothing after the zone (not even the newline ``$`` lets through).
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})",
    re.ASCII,
)


# Seconds since the epoch of "YYYY-MM-DDTHH:MM:SS" prefixes already read in full with a
# "Z" zone, so that Go's usual form needs only a dictionary look-up and int() of the
# fraction. Bounded: emptied when full.
_UTC_SECONDS: dict[str, int] = {}
_UTC_SECONDS_MAX = 4096
# Nanoseconds of one unit of the last digit of a fraction of 1-9 digits (index: digits).
_FRACTION_UNIT: tuple[int, ...] = (0, *(10 ** (9 - d) for d in range(1, 10)))


def parse_rfc3339(text: str) -> int | None:
    """Nanoseconds since the epoch, or None for Go's zero time (year 1: "not set").

    Raises ValueError for anything that is not an RFC 3339 date-time.
    """
    size = len(text)
    if text[-1:] == "Z" and (size == 20 or (22 <= size <= 30 and text[19] == ".")):
        seconds = _UTC_SECONDS.get(text[:19])
        if seconds is not None:
            if size == 20:
                return seconds * NS
            digits = text[20:-1]
            # isdigit() alone lets other scripts' digits through; int() would take them.
            if digits.isdigit() and digits.isascii():
                return seconds * NS + int(digits) * _FRACTION_UNIT[size - 21]
    return _parse_rfc3339(text)


def _parse_rfc3339(text: str) -> int | None:
    m = _RFC3339.fullmatch(text)
    if m is None:
        raise ValueError(f"not an RFC 3339 time: {text!r} (expected e.g. 2024-05-01T12:00:00.5Z)")
    frac = int((m.group(7) or "").ljust(9, "0"))
    # Every field but the fraction, once: a report's times mostly share their second.
    try:
        seconds = _seconds(m.group(1, 2, 3, 4, 5, 6, 8))
    except ValueError as exc:
        raise ValueError(f"not an RFC 3339 time: {text!r} ({exc})") from exc
    if seconds is None:
        return None if frac == 0 else _ZERO_SECOND_NS + frac
    if m.group(8) == "Z":
        if len(_UTC_SECONDS) >= _UTC_SECONDS_MAX:
            _UTC_SECONDS.clear()
        _UTC_SECONDS[text[:19]] = seconds
    return seconds * NS + frac


_ZERO_SECOND_NS = calendar.timegm((1, 1, 1, 0, 0, 0, 0, 0, 0)) * NS


@functools.lru_cache(maxsize=4096)
def _seconds(fields: tuple[str, ...]) -> int | None:
    """Seconds since the epoch of the date, time and zone fields; None for 0001-01-01
    00:00:00Z (Go's zero time, if its fraction is zero too)."""
    year, month, day, hour, minute, second = (int(f) for f in fields[:6])
    zone = fields[6]
    if (year, month, day, hour, minute, second) == (1, 1, 1, 0, 0, 0) and zone in ("Z", "z"):
        return None
    datetime.date(year, month, day)  # the day exists in that month, or ValueError says why
    offset = 0
    if zone not in ("Z", "z"):
        hours, minutes = int(zone[1:3]), int(zone[4:6])
        if hours > 23 or minutes > 59:
            raise ValueError("the offset is out of range")
        offset = (1 if zone[0] == "+" else -1) * (hours * 3600 + minutes * 60)
    if hour > 23 or minute > 59 or second > 60:
        raise ValueError("a field is out of range")
    return calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)) - offset


# Texts already formatted, by nanoseconds (a report's times mostly repeat, and the next
# report of a node repeats those of its finished layers), and the "YYYY-MM-DDTHH:MM:SS"
# of seconds already formatted. Both bounded like _UTC_SECONDS.
_FORMATTED: dict[int, str] = {}
_UTC_TEXT: dict[int, str] = {}


def format_rfc3339(ns: int) -> str:
    """Go's RFC3339Nano: UTC, trailing zeros of the fraction dropped."""
    text = _FORMATTED.get(ns)
    if text is not None:
        return text
    seconds, frac = divmod(ns, NS)
    base = _UTC_TEXT.get(seconds)
    if base is None:
        base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        if len(_UTC_TEXT) >= _UTC_SECONDS_MAX:
            _UTC_TEXT.clear()
        _UTC_TEXT[seconds] = base
    text = f"{base}.{frac:09d}".rstrip("0") + "Z" if frac else base + "Z"
    if len(_FORMATTED) >= _FORMATTED_MAX:
        _FORMATTED.clear()
    _FORMATTED[ns] = text
    return text


_FORMATTED_MAX = 8192


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": NS, "m": 60 * NS,
            "h": 3600 * NS}


def parse_duration(text: str) -> int:
    """A Go duration string ("500ms", "1h30m", "10m") or plain seconds ("30") as nanoseconds."""
    text = text.strip()
    try:
        return round(float(text) * NS)
    except ValueError:
        pass
    pos = 0
    total = 0.0
    for m in _DURATION_PART.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT_NS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise ValueError(f"not a duration: {text!r} (expected e.g. 500ms, 30s, 10m, 1h30m)")
    return round(total)
