"""The Normalizer: raw events of one page -> `Event`s to store and `Rejected`s to keep aside.

Pure and synchronous. It never raises for bad input: every raw event yields an `Event`, a
`Rejected`, or both (an event stored with repairs is also kept aside, so that nothing is ever
lost silently).

Rules (contract §4):
- not a JSON object, no usable `id` (UUID text, any case, optionally in braces) or no usable
  `timestamp` (see `parse_instant`): not stored; `Rejected(stored=False)` with every reason.
- `sessionId`, `userId` not UUIDs, `type`, `name`, `session.deviceType`, `session.browser`
  not strings, `session` not an object: stored with that field null.
- NUL and lone surrogates in any text (PostgreSQL stores neither), `properties` keys and values
  included: replaced with U+FFFD (a valid surrogate pair written as two code points is joined).
- `properties` that do not serialize to JSON or exceed `MAX_PROPERTIES_BYTES`: stored null.
- `sessionId` missing or null: `session.id` is used instead. When both are there, `sessionId`
  wins; fields the contract does not name are ignored (a new upstream field must not turn
  every event into a reject).
Each repair is named in the reason of one `Rejected(stored=True)` per event.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from itertools import chain, repeat
from typing import Any, Final

import orjson

from flowtel._convert import (
    MAX_PROPERTIES_BYTES,
    _optional_user_uuid,
    all_properties_storable,
    check_properties,
    check_text,
    converter,
    parse_uuid,
    parse_uuids,
    structure_event,
)
from flowtel._model import Event, Rejected
from flowtel._timestamps import BadTimestamp, parse_instant, parse_instants

__all__ = ["MAX_PROPERTIES_BYTES", "normalize", "raw_text"]

_MAX_DEPTH: Final = 200  # properties nested deeper are not stored (orjson's own limit is 254)


def normalize(raw_events: list[Any]) -> tuple[list[Event], list[Rejected]]:
    """Normalize one page: the events to store, and the rejects to keep aside, in page order."""
    events = _clean_page(raw_events)
    if events is None:
        events, rejected = _normalize(raw_events, None)
    else:
        rejected = []
    # The properties of the whole page are checked at once, after the loop. In the rare page
    # where one of them must be repaired, the page is normalized again, checking each event.
    if not all_properties_storable(events):
        events, rejected = _normalize(raw_events, check_properties)
    return events, rejected


_WIRE_FIELDS: Final = ("id", "timestamp", "sessionId", "userId", "type", "name", "properties")


def _clean_page(raw_events: list[Any]) -> list[Event] | None:
    """The events of a page in which every event is clean and complete, or None.

    What the converter's Event hook does for one event, done for the whole page field by
    field, each field's checks and conversion in C loops over the page: 1.2 µs an event less
    than event by event. Clean and complete: every event an object with every field of the
    contract, each as the hook takes it without a repair (`session` an object, its device
    type and browser texts; `userId` may be null). On any other page this gives up, and the
    events go one by one, as the hook decides (`properties` are checked by the caller).
    """
    get: Callable[[Any, str], Any] = dict.get
    try:
        ids, instants, session_ids, user_ids, kinds, names, properties = (
            list(map(get, raw_events, repeat(key))) for key in _WIRE_FIELDS
        )
        sessions = list(map(get, raw_events, repeat("session")))
        # dict.get raises TypeError on what is not an object (an event, a session, null).
        devices = list(map(get, sessions, repeat("deviceType")))
        browsers = list(map(get, sessions, repeat("browser")))
        # The four texts of every event checked at once; the join raises if one is not a str.
        check_text("".join(chain(kinds, names, devices, browsers)))
        columns = (
            parse_uuids(ids),
            parse_instants(instants),
            parse_uuids(session_ids),
            list(map(_optional_user_uuid, user_ids)),
        )
    except (TypeError, ValueError):  # a field to repair, or missing
        return None
    return list(map(Event, *columns, kinds, names, properties, devices, browsers))


def _normalize(
    raw_events: list[Any], check: Callable[[Any], Any] | None
) -> tuple[list[Event], list[Rejected]]:
    events: list[Event] = []
    rejected: list[Rejected] = []
    structure = structure_event
    for raw in raw_events:
        # Fast path: a clean event is one call of the converter's Event hook, which raises on
        # anything it would have to repair (`check` None: except its properties).
        try:
            event = structure(raw, Event, check)
        except Exception:
            pass
        else:
            if event.session_id is not None or not _has_session_id(raw):
                events.append(event)
                continue
        try:
            _normalize_slowly(raw, events, rejected)
        except Exception as exc:  # a bug, not bad data: still keep the event, with the cause
            rejected.append(Rejected(raw_text(raw), f"unexpected error: {exc!r:.200}"))
    return events, rejected


def _has_session_id(raw: dict[str, Any]) -> bool:
    session = raw.get("session")
    return type(session) is dict and session.get("id") is not None


def _normalize_slowly(raw: object, events: list[Event], rejected: list[Rejected]) -> None:
    if not isinstance(raw, dict):
        reason = f"event is not a JSON object: {type(raw).__name__} {_show(raw)}"
        rejected.append(Rejected(raw_text(raw), reason))
        return
    wire, problems, repairs = _repair(raw)
    if problems:
        rejected.append(Rejected(raw_text(raw), "; ".join(problems)))
        return
    events.append(converter.structure(wire, Event))
    if repairs:
        rejected.append(Rejected(raw_text(raw), "; ".join(repairs), stored=True))


def _repair(raw: dict[Any, Any]) -> tuple[dict[str, Any], list[str], list[str]]:
    """The event in the wire shape with every field fixed, the fatal problems, the repairs."""
    wire: dict[str, Any] = {}
    problems: list[str] = []
    repairs: list[str] = []

    value = raw.get("id")
    if value is None:
        problems.append("missing id")
    else:
        try:
            wire["id"] = parse_uuid(value)
        except ValueError:
            problems.append(f"id is not a UUID: {_show(value)}")

    value = raw.get("timestamp")
    if value is None:
        problems.append("missing timestamp")
    else:
        try:
            wire["timestamp"] = parse_instant(value)
        except BadTimestamp as exc:
            problems.append(f"bad timestamp: {exc.reason}")
    if problems:
        return wire, problems, repairs

    for key in ("sessionId", "userId"):
        wire[key] = _uuid_field(key, raw.get(key), repairs)
    for key in ("type", "name"):
        wire[key] = _text_field(key, raw.get(key), repairs)

    session = raw.get("session")
    if session is not None and not isinstance(session, dict):
        repairs.append(f"session is not an object: {_show(session)}, stored as null")
    elif session is not None:
        wire["session"] = {
            key: _text_field(f"session.{key}", session.get(key), repairs)
            for key in ("deviceType", "browser")
        }
        if wire["sessionId"] is None and raw.get("sessionId") is None:
            wire["sessionId"] = _uuid_field("session.id", session.get("id"), repairs)

    wire["properties"] = _properties_field(raw.get("properties"), repairs)
    return wire, problems, repairs


def _uuid_field(key: str, value: object, repairs: list[str]) -> object:
    if value is None:
        return None
    try:
        return parse_uuid(value)
    except ValueError:
        repairs.append(f"{key} is not a UUID: {_show(value)}, stored as null")
        return None


def _text_field(key: str, value: object, repairs: list[str]) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        repairs.append(f"{key} is not a string: {_show(value)}, stored as null")
        return None
    found: set[str] = set()
    fixed = _fix_text(str(value), found)
    if found:
        repairs.append(f"{key}: {' and '.join(sorted(found))} replaced with U+FFFD")
    return fixed


def _fix_text(text: str, found: set[str]) -> str:
    """`text` with NUL and lone surrogates replaced by U+FFFD; adds what it replaced to `found`."""
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
        found.add("NUL")
    try:
        text.encode()
    except UnicodeEncodeError:
        # Through UTF-16, a pair of surrogates becomes the character it encodes; a lone one
        # becomes U+FFFD.
        text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
        found.add("lone surrogate")
    return text


class _Unstorable(Exception):
    pass


def _properties_field(value: object, repairs: list[str]) -> object:
    if value is None:
        return None
    try:
        return check_properties(value)
    except Exception:
        pass
    found: set[str] = set()
    try:
        value = _fix_json(value, found, 0)
        data = orjson.dumps(value)
    except (_Unstorable, TypeError, ValueError, RecursionError) as exc:
        repairs.append(f"properties are not storable JSON ({_reason(exc)}), stored as null")
        return None
    if len(data) > MAX_PROPERTIES_BYTES:
        repairs.append(
            f"properties too large ({len(data)} bytes > {MAX_PROPERTIES_BYTES}), stored as null"
        )
        return None
    if found:
        repairs.append(f"properties: {' and '.join(sorted(found))} replaced with U+FFFD")
    return value


def _fix_json(value: object, found: set[str], depth: int) -> object:
    """A copy of `value` with every string (keys too) storable by jsonb."""
    if depth > _MAX_DEPTH:
        raise _Unstorable(f"nested deeper than {_MAX_DEPTH}")
    if isinstance(value, str):
        return _fix_text(str(value), found)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, dict):
        result = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise _Unstorable(f"key is not a string: {_show(key)}")
            result[_fix_json(key, found, depth + 1)] = _fix_json(item, found, depth + 1)
        return result
    if isinstance(value, list | tuple):
        return [_fix_json(item, found, depth + 1) for item in value]
    raise _Unstorable(f"not a JSON value: {type(value).__name__}")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return str(exc)[:100]


def raw_text(raw: object) -> str:
    """The JSON text of what was received, for `Rejected.raw`; never raises.

    orjson first; it refuses lone surrogates, non-str keys and foreign types, so then the
    stdlib with ASCII escapes (a lone surrogate becomes `\\ud800`) and repr() for the rest;
    repr() itself as the last resort. The result never contains NUL or a lone surrogate.
    """
    try:
        return orjson.dumps(raw).decode()
    except Exception:
        pass
    try:
        return json.dumps(raw, ensure_ascii=True, default=repr)
    except Exception:
        pass
    try:
        return ascii(raw)
    except Exception:
        return f"<{type(raw).__name__} that cannot be shown>"


def _show(value: object) -> str:
    try:
        text = ascii(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 60 else text[:57] + "..."
