"""Turn any timestamp the API sends into an aware UTC datetime, exact to the millisecond.

The API's precision is the millisecond, so every result is truncated (floored) to the
millisecond: a sub-millisecond part (`.123999`, `1769541612369.9`) is dropped, never rounded
up, so an instant never moves into the next millisecond (or the next day, at 23:59:59.9995).

Epoch numbers are told apart by magnitude: |v| < 1e11 is seconds, anything larger is
milliseconds. 1e11 seconds is the year 5138 and 1e11 milliseconds is 1973-03-03T09:46:40Z, so
the rule is unambiguous for every plausible instant; the price is that a millisecond value
before 1973-03-03 is read as seconds (and then lands in the far future and is rejected, or, if
tiny, in January 1970). The data spans 2025-2026, so nothing real is affected.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from decimal import Decimal, InvalidOperation
from itertools import repeat
from operator import truediv
from typing import Any

__all__ = [
    "MAX_INSTANT",
    "MIN_INSTANT",
    "BadTimestamp",
    "event_instant",
    "format_instant",
    "parse_instant",
    "parse_instants",
]

UTC = dt.UTC
EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
MIN_INSTANT = EPOCH  # earlier instants are corrupt data, not history
# Anything from here on is a corrupt or mis-scaled value (e.g. microseconds read as ms), not an
# event: the dataset spans weeks around 2026.
MAX_INSTANT = dt.datetime(2100, 1, 1, tzinfo=UTC)
_MAX_MS = 4_102_444_800_000  # MAX_INSTANT in epoch ms
_SECONDS_BELOW = 100_000_000_000  # |v| < 1e11: epoch seconds; else epoch milliseconds
_MAX_TEXT = 200  # longer "timestamps" are garbage; refuse before doing any work on them

_fromtimestamp = dt.datetime.fromtimestamp

# Stray characters removed anywhere in a string: C0/C1 controls (\t \n \x00 ...), soft hyphen,
# zero-width and bidi marks, line/paragraph separators, word joiners, BOM, interlinear marks.
_STRAY = re.compile(
    "[\x00-\x1f\x7f-\x9f\u00ad\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb]"
)
_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
# ISO-8601 extended format, with `T`, space(s) or nothing between date and time (a stray tab
# between them was removed above), an optional fraction of any length and an optional zone.
_ISO = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[ ]*[Tt]?[ ]*"
    r"([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:[.,]([0-9]+))?)?"
    r"[ ]*(?:([Zz]|UTC|utc|GMT|gmt)|([+-])([0-9]{2})(?::?([0-9]{2}))?)?"
)


class BadTimestamp(ValueError):
    """A value that is not a plausible instant. The message says why, in a few words."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _from_ms(ms: int, value: object) -> dt.datetime:
    if ms < 0:
        raise BadTimestamp(f"before 1970: {_show(value)}")
    if ms >= _MAX_MS:
        raise BadTimestamp(f"after 2100: {_show(value)}")
    # timedelta arithmetic on ints is exact; fromtimestamp(ms / 1000) goes through a float.
    return EPOCH + dt.timedelta(milliseconds=ms)


def _from_decimal(number: Decimal, value: object) -> dt.datetime:
    if not number.is_finite():
        raise BadTimestamp(f"not a finite number: {_show(value)}")
    if number < 0:
        raise BadTimestamp(f"before 1970: {_show(value)}")
    # Compare before scaling, so that 1e999999 never reaches integer arithmetic.
    if number >= _MAX_MS:
        raise BadTimestamp(f"after 2100: {_show(value)}")
    if number < _SECONDS_BELOW:
        sign, digits, exponent = number.as_tuple()
        number = Decimal((sign, digits, int(exponent) + 3))  # seconds -> ms, exactly
    return _from_ms(int(number), value)  # int() truncates: drops the sub-millisecond part


def _from_datetime(value: dt.datetime, original: object) -> dt.datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        value = value.replace(tzinfo=UTC)  # no zone means UTC
    if value.microsecond % 1000:
        value = value.replace(microsecond=value.microsecond // 1000 * 1000)
    try:
        value = value.astimezone(UTC)
    except OverflowError:  # year 1 with a positive offset, year 9999 with a negative one
        raise BadTimestamp(f"out of range: {_show(original)}") from None
    if value < MIN_INSTANT:
        raise BadTimestamp(f"before 1970: {_show(original)}")
    if value >= MAX_INSTANT:
        raise BadTimestamp(f"after 2100: {_show(original)}")
    return value


def _parse_text(text: str, value: object) -> dt.datetime:
    if len(text) > _MAX_TEXT:
        raise BadTimestamp(f"text too long ({len(text)} characters)")
    text = _STRAY.sub("", text).strip()
    if not text:
        raise BadTimestamp(f"empty: {_show(value)}")
    if _NUMBER.fullmatch(text):
        try:
            return _from_decimal(Decimal(text), value)
        except InvalidOperation:  # unreachable given the pattern; kept so nothing escapes
            raise BadTimestamp(f"not a number: {_show(value)}") from None
    match = _ISO.fullmatch(text)
    if match is None:
        if text.lower().lstrip("+-") in ("nan", "inf", "infinity"):
            raise BadTimestamp(f"not a finite number: {_show(value)}")
        raise BadTimestamp(f"unparseable: {_show(value)}")
    year, month, day, hour, minute, second, fraction, utc, sign, off_h, off_m = match.groups()
    millis = int((fraction or "0")[:3].ljust(3, "0"))  # truncate to ms
    if utc is not None or sign is None:
        zone = UTC
    else:
        offset = dt.timedelta(hours=int(off_h), minutes=int(off_m or 0))
        if offset >= dt.timedelta(hours=24) or int(off_m or 0) >= 60:
            raise BadTimestamp(f"bad UTC offset: {_show(value)}")
        zone = dt.timezone(-offset if sign == "-" else offset)
    try:
        instant = dt.datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second or 0),
            millis * 1000, tzinfo=zone,
        )  # fmt: skip
    except ValueError:  # month 13, February 30, 24:00, a leap second...
        raise BadTimestamp(f"not a valid date and time: {_show(value)}") from None
    return _from_datetime(instant, value)


def parse_instant(value: object) -> dt.datetime:
    """Return `value` as an aware UTC datetime, truncated to the millisecond.

    Accepts epoch milliseconds or seconds (int, float or numeric text; told apart by
    magnitude, see the module docstring), ISO-8601 text with `Z`, an offset (`+02:00`,
    `+0200`, `+02`) or no zone (meaning UTC), with `T` or a space between date and time, any
    number of fractional digits, and stray control or zero-width characters anywhere.
    Raises `BadTimestamp` for anything else: bool, None, NaN/inf, garbage, pre-1970 or
    2100-and-later instants.
    """
    kind = type(value)
    # Fast paths first: the two formats the API actually sends.
    if kind is int:
        ms: int = value  # type: ignore[assignment]
        if ms >= _SECONDS_BELOW:
            if ms >= _MAX_MS:
                raise BadTimestamp(f"after 2100: {_show(value)}")
            # Exact: below 2**32 s (2106) a double's error on ms / 1000 is under 0.48 µs and
            # fromtimestamp rounds to the nearest µs (tested over the whole range). Twice as
            # fast as EPOCH + timedelta(milliseconds=ms).
            return _fromtimestamp(ms / 1000, UTC)
        return _from_ms(ms * 1000 if ms > -_SECONDS_BELOW else ms, value)
    if kind is str:
        text: str = value  # type: ignore[assignment]
        # "2026-01-27T19:19:13.629Z": fromisoformat is C code and gives the UTC singleton.
        if len(text) == 24 and text[23] == "Z" and text[10] == "T" and text[19] == ".":
            try:
                instant = dt.datetime.fromisoformat(text)
            except ValueError:
                pass
            else:
                if "1970" <= text[:4] < "2100":  # fromisoformat checked these are 4 digits
                    return instant
        return _parse_text(text, value)
    if kind is bool or value is None:
        raise BadTimestamp(f"not a timestamp: {_show(value)}")
    if isinstance(value, int):  # an int subclass (bool was refused above)
        return _from_decimal(Decimal(int(value)), value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise BadTimestamp(f"not a finite number: {_show(value)}")
        # repr() is the shortest text that reads back as this float: 1769541612.369 stays
        # .369, where value * 1000 would give 1769541612368.9998 and lose a millisecond.
        return _from_decimal(Decimal(repr(float(value))), value)
    if isinstance(value, str):
        return _parse_text(str(value), value)
    if isinstance(value, dt.datetime):
        return _from_datetime(value, value)
    raise BadTimestamp(f"not a timestamp: {type(value).__name__}")


def parse_instants(values: list[Any]) -> list[dt.datetime]:
    """`parse_instant` of each value of a page's column, in order; raises as it does.

    The feed sends only integer milliseconds: when every value is one, in range, the column is
    converted in C loops, as `parse_instant` would convert each (the same float, the same call).
    """
    only_ms = values and set(map(type, values)) == {int}
    if only_ms and min(values) >= _SECONDS_BELOW and max(values) < _MAX_MS:
        seconds = map(truediv, values, repeat(1000))
        return list(map(_fromtimestamp, seconds, repeat(UTC)))
    return list(map(parse_instant, values))


def event_instant(raw: object) -> dt.datetime | None:
    """The instant of a raw event as the API sent it, or None if it has no usable one (not an
    object, or its `timestamp` missing or unreadable)."""
    if not isinstance(raw, dict):
        return None
    try:
        return parse_instant(raw.get("timestamp"))
    except BadTimestamp:
        return None


def format_instant(instant: dt.datetime) -> str:
    """The API's own format, `2026-01-27T19:19:13.629Z`, for an aware datetime."""
    instant = instant.astimezone(UTC)
    return instant.strftime("%Y-%m-%dT%H:%M:%S.") + f"{instant.microsecond // 1000:03d}Z"


def to_ms(instant: dt.datetime) -> int:
    """Epoch milliseconds of an aware instant, exactly (no float on the way)."""
    return (instant - EPOCH) // dt.timedelta(milliseconds=1)
