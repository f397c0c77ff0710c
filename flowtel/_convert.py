"""The one cattrs converter: how API values become flowtel's value objects, and back.

`converter.structure(wire_event, Event)` reads an event in the API's own shape (contract §4:
`timestamp`, `sessionId`, `userId`, `session.deviceType`, `session.browser`) and is strict: any
value that is not exactly what an `Event` column can hold raises (ValueError, TypeError,
KeyError). The Normalizer relies on that: a clean event takes this one hook and nothing
else; an event that raises is repaired field by field and then structured here again.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from typing import Any, Final

import cattrs
import orjson
from asyncpg.pgproto.pgproto import UUID as _PgUUID

from flowtel._model import Event
from flowtel._timestamps import format_instant, parse_instant

__all__ = [
    "MAX_PROPERTIES_BYTES",
    "all_properties_storable",
    "check_properties",
    "check_text",
    "converter",
    "jsonb_text",
    "parse_uuid",
    "parse_uuids",
    "structure_event",
]

# Larger properties are not stored (they would bloat every page of the table and COPY buffer);
# the event is stored with properties null and its raw form is kept aside with the reason.
MAX_PROPERTIES_BYTES: Final = 1 << 20  # 1 MiB of serialized JSON


def parse_uuid(value: object) -> uuid.UUID:
    """A UUID from its hyphenated 8-4-4-4-12 text, any case, optionally in braces.

    Stricter than `uuid.UUID(text)`, which also takes `urn:uuid:` prefixes, bare hex and
    hyphens anywhere: an id is identity, so only the forms that unambiguously name one are read.
    The result is asyncpg's UUID, a `uuid.UUID` subclass in C: parsed 7x faster than by
    `uuid.UUID` and copied as 16 bytes by COPY (no `.bytes` in Python per event).
    """
    if type(value) is str:
        text = value
        if len(text) == 38 and text[0] == "{" and text[37] == "}":
            text = text[1:37]
        # With the four hyphens in place, the C parser (which skips hyphens) must find 32 hex
        # digits in the other 32 characters, or it raises.
        if len(text) == 36 and text[8] == text[13] == text[18] == text[23] == "-":
            try:
                parsed: uuid.UUID = _PgUUID(text)
            except ValueError:
                pass
            else:
                return parsed
    elif isinstance(value, uuid.UUID):
        return value
    raise ValueError(f"not a UUID: {value!r:.60}")


def parse_uuids(values: list[Any]) -> list[uuid.UUID]:
    """`parse_uuid` of each value of a page's column, when every one is a hyphenated UUID text.

    Raises ValueError or TypeError otherwise, braced ones included: the caller then goes value
    by value. `parse_uuid`'s checks run over the whole column at once, in C: the types, then
    each hyphen's position as one strided slice of the texts joined. The C parser, which takes
    32 to 36 characters, skips hyphens and wants 32 hex digits, refuses each text that is not
    36 characters long: the first such text would have its four hyphens where they belong
    (the texts before it being 36 long), so more than 36 characters or fewer than 32 digits.
    """
    if values and set(map(type, values)) != {str}:
        raise TypeError("not all texts")
    joined = "".join(values)
    hyphens = "-" * len(values)
    if not joined[8::36] == joined[13::36] == joined[18::36] == joined[23::36] == hyphens:
        raise ValueError("not all hyphenated UUID texts")
    return list(map(_PgUUID, values))


def _optional_uuid(value: object) -> uuid.UUID | None:
    return None if value is None else parse_uuid(value)


# userId repeats across events (3,000 users in 3M events), so its parsed form is memoized: the
# memo stays small and in cache. sessionId (60,000 sessions) is parsed each time: a memo that
# large missed the cache on most lookups and cost more than parsing (5 % of the client's CPU in
# an interleaved A/B over 1M events). Bounded: cleared wholesale when it grows past a limit.
_USER_MEMO: dict[str, uuid.UUID] = {}
_USER_MEMO_MAX = 50_000


def _optional_user_uuid(value: object) -> uuid.UUID | None:
    if value is None:
        return None
    try:
        return _USER_MEMO[value]  # type: ignore[index]
    except (KeyError, TypeError):  # TypeError: unhashable value, refused below
        pass
    parsed = parse_uuid(value)
    if type(value) is str:
        if len(_USER_MEMO) >= _USER_MEMO_MAX:
            _USER_MEMO.clear()
        _USER_MEMO[value] = parsed
    return parsed


def check_text(value: object) -> str:
    """`value` if it is a str PostgreSQL can store (no NUL, no lone surrogate); raises if not."""
    if type(value) is not str:
        raise TypeError(f"not a string: {value!r:.60}")
    if "\x00" in value:
        raise ValueError("contains NUL")
    if not value.isascii():
        value.encode()  # UnicodeEncodeError (a ValueError) on a lone surrogate
    return value


def _optional_text(value: object) -> str | None:
    return None if value is None else check_text(value)


def jsonb_text(value: Any) -> bytes:
    """`value` as JSON text that jsonb accepts.

    Raises TypeError (orjson.JSONEncodeError) for what orjson refuses: lone surrogates, non-str
    keys, non-JSON types, absurd depth; ValueError for a NUL in a string, which jsonb refuses.
    """
    data = orjson.dumps(value)
    # The bytes search may be a false alarm (the text `\\u0000` serializes as `\\\\u0000`),
    # so a hit is confirmed on the value itself.
    if b"\\u0000" in data and _contains_nul(value):
        raise ValueError("properties contain NUL")
    return data


def check_properties(value: Any) -> Any:
    """`value` if it serializes to JSON that jsonb accepts and is at most 1 MiB; raises if not."""
    if value is None:
        return None
    data = jsonb_text(value)
    if len(data) > MAX_PROPERTIES_BYTES:
        raise ValueError(f"properties too large ({len(data)} bytes)")
    return value


def _contains_nul(value: Any) -> bool:
    """Whether a string in this JSON value, a key or a value, holds NUL."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_contains_nul(k) or _contains_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_contains_nul(item) for item in value)
    return False


def all_properties_storable(events: list[Event]) -> bool:
    """True when every event's `properties` passes `check_properties`.

    One serialization of the page's properties instead of one per event (which took 6 % of the
    client's CPU; this, half of that): if the list serializes, holds no NUL escape and is at
    most the limit in all, so is each of its elements. Otherwise each is checked on its own.
    """
    values = [event.properties for event in events]
    try:
        data = orjson.dumps(values)
    except Exception:
        pass
    else:
        if len(data) <= MAX_PROPERTIES_BYTES and b"\\u0000" not in data:
            return True
    try:
        for value in values:
            check_properties(value)
    except Exception:
        return False
    return True


def _instant(value: object, _: object = None) -> dt.datetime:
    return parse_instant(value)


converter: Final = cattrs.Converter(detailed_validation=False)
converter.register_structure_hook(uuid.UUID, lambda value, _: parse_uuid(value))
converter.register_structure_hook(dt.datetime, _instant)
converter.register_unstructure_hook(uuid.UUID, str)
converter.register_unstructure_hook(dt.datetime, format_instant)


def structure_event(
    wire: Any, _: object = None, check: Callable[[Any], Any] | None = check_properties
) -> Event:
    """Event from the API's wire shape: each field through its own strict check.

    The converter's hook for `Event`, written out: cattrs' generated one (with these same
    per-field hooks as overrides) builds a dict of the present fields and calls `Event(**res)`
    for every event; this one passes fields by position (4.1 -> 3.3 µs/event). A missing key
    reads as null, as the defaults of `Event` would; device_type and browser both read the
    nested `session` object. `check=None` leaves `properties` unchecked, for a caller that
    checks a whole page's at once (`all_properties_storable`).
    """
    get = wire.get
    session = get("session")
    if session is None:
        device_type = browser = None
    elif type(session) is dict:
        device_type = session.get("deviceType")
        browser = session.get("browser")
    else:
        raise TypeError(f"session is not an object: {session!r:.60}")
    kind = get("type")
    name = get("name")
    # A clean event's four texts are checked in one pass (one allocation) instead of four calls.
    if not (
        type(kind) is str
        and type(name) is str
        and type(device_type) is str
        and type(browser) is str
        and (joined := f"{kind}{name}{device_type}{browser}").isascii()
        and "\x00" not in joined
    ):
        for text in (kind, name, device_type, browser):
            _optional_text(text)
    return Event(
        parse_uuid(wire["id"]),
        parse_instant(wire["timestamp"]),
        _optional_uuid(get("sessionId")),
        _optional_user_uuid(get("userId")),
        kind,
        name,
        get("properties") if check is None else check(get("properties")),
        device_type,
        browser,
    )


converter.register_structure_hook(Event, structure_event)
