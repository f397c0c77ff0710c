"""The one cattrs converter: how API values become flowtel's value objects, and back.

`converter.structure(wire_event, Event)` reads an event in the API's own shape (contract §4:
`timestamp`, `sessionId`, `userId`, `session.deviceType`, `session.browser`) and is strict: any
value that is not exactly what an `Event` column can hold raises (ValueError, TypeError,
KeyError). The Normalizer relies on that: a clean event takes this one generated function and
nothing else; an event that raises is repaired field by field and then structured here again.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Any, Final

import cattrs
import orjson
from cattrs.gen import make_dict_structure_fn, override

from flowtel._model import Event
from flowtel._timestamps import format_instant, parse_instant

__all__ = [
    "MAX_PROPERTIES_BYTES",
    "check_properties",
    "check_text",
    "converter",
    "parse_uuid",
]

# Larger properties are not stored (they would bloat every page of the table and COPY buffer);
# the event is stored with properties null and its raw form is kept aside with the reason.
MAX_PROPERTIES_BYTES: Final = 1 << 20  # 1 MiB of serialized JSON

_HEX = "[0-9a-fA-F]"
_UUID = re.compile(f"{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}")


_new = object.__new__
_set_int = uuid.UUID.__dict__["int"].__set__
_set_is_safe = uuid.UUID.__dict__["is_safe"].__set__
_UNKNOWN = uuid.SafeUUID.unknown


def _uuid_from_int(number: int) -> uuid.UUID:
    """What `uuid.UUID(int=number)` builds, without its pure-Python checks (0.55 -> 0.19 µs).

    UUID keeps its state in two slots, `int` and `is_safe` (what unpickling restores too),
    written here through their slot descriptors. The result is checked against the public
    constructor at import, which is the fallback should a future Python change the layout.
    """
    made = _new(uuid.UUID)
    _set_int(made, number)
    _set_is_safe(made, _UNKNOWN)
    return made


_SAMPLE = uuid.UUID("3f2b8c1e-9a4d-4e6f-8b2a-1c3d5e7f9a0b")
if not (
    _uuid_from_int(_SAMPLE.int) == _SAMPLE
    and repr(_uuid_from_int(_SAMPLE.int)) == repr(_SAMPLE)
    and hash(_uuid_from_int(_SAMPLE.int)) == hash(_SAMPLE)
):  # pragma: no cover - a future Python changed UUID's layout
    _uuid_from_int = lambda number: uuid.UUID(int=number)  # noqa: E731


def parse_uuid(value: object) -> uuid.UUID:
    """A UUID from its hyphenated 8-4-4-4-12 text, any case, optionally in braces.

    Stricter than `uuid.UUID(text)`, which also takes `urn:uuid:` prefixes, bare hex and
    hyphens anywhere: an id is identity, so only the forms that unambiguously name one are read.
    """
    if type(value) is str:
        text = value
        if len(text) == 38 and text[0] == "{" and text[37] == "}":
            text = text[1:37]
        if len(text) == 36 and _UUID.fullmatch(text):
            return _uuid_from_int(int(text.replace("-", ""), 16))
    elif isinstance(value, uuid.UUID):
        return value
    raise ValueError(f"not a UUID: {value!r:.60}")


# sessionId and userId repeat across events (60,000 sessions, 3,000 users in 3M events), so
# their parsed form is memoized. Bounded: cleared wholesale when it grows past a limit.
_UUID_MEMO: dict[str, uuid.UUID] = {}
_UUID_MEMO_MAX = 200_000


def _optional_uuid(value: object, _: object = None) -> uuid.UUID | None:
    if value is None:
        return None
    try:
        return _UUID_MEMO[value]  # type: ignore[index]
    except (KeyError, TypeError):  # TypeError: unhashable value, refused below
        pass
    parsed = parse_uuid(value)
    if type(value) is str:
        if len(_UUID_MEMO) >= _UUID_MEMO_MAX:
            _UUID_MEMO.clear()
        _UUID_MEMO[value] = parsed
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


def _optional_text(value: object, _: object = None) -> str | None:
    return None if value is None else check_text(value)


def check_properties(value: Any, _: object = None) -> Any:
    """`value` if it serializes to JSON that jsonb accepts and is at most 1 MiB; raises if not."""
    if value is None:
        return None
    # orjson refuses lone surrogates, non-str keys, non-JSON types and absurd depth.
    data = orjson.dumps(value)
    if len(data) > MAX_PROPERTIES_BYTES:
        raise ValueError(f"properties too large ({len(data)} bytes)")
    if b"\\u0000" in data:  # jsonb refuses the NUL escape (may be a false alarm on `\\u0000`)
        raise ValueError("properties contain NUL")
    return value


def _session_text(key: str) -> Any:
    def hook(session: object, _: object = None) -> str | None:
        if session is None:
            return None
        if type(session) is not dict:
            raise TypeError(f"session is not an object: {session!r:.60}")
        return _optional_text(session.get(key))

    return hook


def _instant(value: object, _: object = None) -> dt.datetime:
    return parse_instant(value)


converter: Final = cattrs.Converter(detailed_validation=False)
converter.register_structure_hook(uuid.UUID, lambda value, _: parse_uuid(value))
converter.register_structure_hook(dt.datetime, _instant)
converter.register_unstructure_hook(uuid.UUID, str)
converter.register_unstructure_hook(dt.datetime, format_instant)

# Event from the API's wire shape. Per-field hooks are given directly, so the generated function
# calls them without the converter's Optional/union dispatch (bench: 6.0 -> 3.9 µs/event).
# device_type and browser both read the nested `session` object, each its own key of it.
converter.register_structure_hook(
    Event,
    make_dict_structure_fn(
        Event,
        converter,
        _cattrs_detailed_validation=False,
        id=override(struct_hook=lambda value, _: parse_uuid(value)),
        occurred_at=override(rename="timestamp", struct_hook=_instant),
        session_id=override(rename="sessionId", struct_hook=_optional_uuid),
        user_id=override(rename="userId", struct_hook=_optional_uuid),
        type=override(struct_hook=_optional_text),
        name=override(struct_hook=_optional_text),
        properties=override(struct_hook=check_properties),
        device_type=override(rename="session", struct_hook=_session_text("deviceType")),
        browser=override(rename="session", struct_hook=_session_text("browser")),
    ),
)
