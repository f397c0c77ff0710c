"""normalize(): clean events, repairs, rejects; and that no input ever makes it raise."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any
from unittest import mock

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowtel._convert import MAX_PROPERTIES_BYTES, converter, parse_uuid, parse_uuids
from flowtel._model import Event, Rejected
from flowtel._normalize import _clean_page, _normalize, normalize, raw_text

ID = "3f2b8c1e-9a4d-4e6f-8b2a-1c3d5e7f9a0b"
SID = "4a1b2c3d-0000-4e6f-8b2a-1c3d5e7f9a0b"
UID = "5b2c3d4e-1111-4e6f-8b2a-1c3d5e7f9a0b"
WHEN = dt.datetime(2026, 1, 27, 19, 19, 13, 629000, tzinfo=dt.UTC)


def wire(**changes: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "id": ID,
        "sessionId": SID,
        "userId": UID,
        "type": "page_view",
        "name": "event_e8o287",
        "properties": {"page": "/home"},
        "timestamp": "2026-01-27T19:19:13.629Z",
        "session": {"id": SID, "deviceType": "mobile", "browser": "Chrome"},
    }
    for key, value in changes.items():
        if value is ...:
            del event[key]
        else:
            event[key] = value
    return event


CLEAN = Event(
    id=uuid.UUID(ID),
    occurred_at=WHEN,
    session_id=uuid.UUID(SID),
    user_id=uuid.UUID(UID),
    type="page_view",
    name="event_e8o287",
    properties={"page": "/home"},
    device_type="mobile",
    browser="Chrome",
)


def one(raw: object) -> tuple[Event | None, Rejected | None]:
    events, rejected = normalize([raw])
    assert len(events) <= 1 and len(rejected) <= 1
    return (events[0] if events else None), (rejected[0] if rejected else None)


def test_clean_event() -> None:
    assert normalize([wire()]) == ([CLEAN], [])


def test_int_ms_timestamp() -> None:
    event, rejected = one(wire(timestamp=1769541612369))
    assert rejected is None and event is not None
    assert event.occurred_at == dt.datetime(2026, 1, 27, 19, 20, 12, 369000, tzinfo=dt.UTC)


def test_converter_reads_the_wire_shape() -> None:
    assert converter.structure(wire(), Event) == CLEAN


@pytest.mark.parametrize(
    "raw_id", [ID.upper(), "{" + ID + "}", "{" + ID.upper() + "}", uuid.UUID(ID)]
)
def test_id_any_case_or_braces_is_canonical(raw_id: object) -> None:
    event, rejected = one(wire(id=raw_id))
    assert rejected is None and event is not None
    assert event.id == uuid.UUID(ID) and str(event.id) == ID


def test_missing_fields_are_null_without_a_reject() -> None:
    raw = {"id": ID, "timestamp": 1769541612369}
    event, rejected = one(raw)
    assert rejected is None
    assert event == Event(id=uuid.UUID(ID), occurred_at=parse_instant_ms(1769541612369))
    nulls = wire(sessionId=None, userId=None, type=None, name=None, properties=None, session=None)
    event, rejected = one(nulls)
    assert rejected is None and event is not None
    assert event.session_id is None and event.device_type is None


def parse_instant_ms(ms: int) -> dt.datetime:
    return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=ms)


def test_session_id_falls_back_to_session_dot_id() -> None:
    for raw in (wire(sessionId=...), wire(sessionId=None)):
        event, rejected = one(raw)
        assert rejected is None and event == CLEAN


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, "event is not a JSON object: NoneType None"),
        ([1, 2], "event is not a JSON object: list [1, 2]"),
        ("x", "event is not a JSON object: str 'x'"),
        (42, "event is not a JSON object: int 42"),
        (wire(id=...), "missing id"),
        (wire(id=None), "missing id"),
        (wire(id="abc"), "id is not a UUID: 'abc'"),
        (wire(id=123), "id is not a UUID: 123"),
        (wire(id=ID.replace("-", "")), "id is not a UUID: '3f2b8c1e9a4d4e6f8b2a1c3d5e7f9a0b'"),
        (wire(id="urn:uuid:" + ID), "id is not a UUID: 'urn:uuid:" + ID + "'"),
        (wire(id=" " + ID), "id is not a UUID: ' " + ID + "'"),
        (wire(timestamp=...), "missing timestamp"),
        (wire(timestamp=None), "missing timestamp"),
        (wire(timestamp="soon"), "bad timestamp: unparseable: 'soon'"),
        (wire(timestamp=True), "bad timestamp: not a timestamp: True"),
        (wire(timestamp=-5), "bad timestamp: before 1970: -5"),
        (wire(timestamp="2200-01-01T00:00:00Z"), "bad timestamp: after 2100"),
        (wire(id=None, timestamp="x"), "missing id; bad timestamp: unparseable: 'x'"),
    ],
)
def test_not_stored(raw: object, reason: str) -> None:
    event, rejected = one(raw)
    assert event is None and rejected is not None
    assert rejected.reason.startswith(reason)
    assert rejected.stored is False
    assert rejected.raw == raw_text(raw)


@pytest.mark.parametrize(
    ("changes", "field", "reason"),
    [
        ({"type": 123}, "type", "type is not a string: 123, stored as null"),
        ({"name": ["a"]}, "name", "name is not a string: ['a'], stored as null"),
        ({"userId": "nope"}, "user_id", "userId is not a UUID: 'nope', stored as null"),
        ({"sessionId": 7}, "session_id", "sessionId is not a UUID: 7, stored as null"),
        ({"session": "x"}, "device_type", "session is not an object: 'x', stored as null"),
        (
            {"session": {"deviceType": 1, "browser": "Chrome"}, "sessionId": SID},
            "device_type",
            "session.deviceType is not a string: 1, stored as null",
        ),
        (
            {"sessionId": None, "session": {"id": "bad"}},
            "session_id",
            "session.id is not a UUID: 'bad', stored as null",
        ),
    ],
)
def test_stored_with_repairs(changes: dict[str, Any], field: str, reason: str) -> None:
    raw = wire(**changes)
    event, rejected = one(raw)
    assert event is not None and rejected is not None
    assert getattr(event, field) is None
    assert event.id == uuid.UUID(ID) and event.occurred_at == WHEN
    assert rejected == Rejected(raw=orjson.dumps(raw).decode(), reason=reason, stored=True)


def test_all_repairs_of_one_event_in_one_reject() -> None:
    event, rejected = one(wire(type=1, userId="u", name="a\x00b"))
    assert event is not None and rejected is not None
    assert rejected.reason == (
        "userId is not a UUID: 'u', stored as null; type is not a string: 1, stored as null; "
        "name: NUL replaced with U+FFFD"
    )


def test_nul_is_replaced_everywhere() -> None:
    raw = wire(
        type="page\x00view",
        session={"deviceType": "mob\x00ile", "browser": "Chrome"},
        properties={"k\x00ey": ["v\x00", {"deep\x00": "\x00"}]},
    )
    event, rejected = one(raw)
    assert event is not None and rejected is not None
    assert event.type == "page\ufffdview"
    assert event.device_type == "mob\ufffdile"
    assert event.properties == {"k\ufffdey": ["v\ufffd", {"deep\ufffd": "\ufffd"}]}
    assert rejected.stored
    assert rejected.reason == (
        "type: NUL replaced with U+FFFD; session.deviceType: NUL replaced with U+FFFD; "
        "properties: NUL replaced with U+FFFD"
    )
    assert "\x00" not in rejected.raw and "\\u0000" in rejected.raw


def test_lone_surrogates_are_replaced_and_pairs_joined() -> None:
    raw = json.loads(
        '{"id": "ID", "timestamp": 1769541612369, "name": "a\\ud800b",'
        ' "properties": {"\\udfff": "x\\ud83d\\ude00"}}'.replace("ID", ID)
    )
    event, rejected = one(raw)
    assert event is not None and rejected is not None
    assert event.name == "a\ufffdb"
    assert event.properties == {"\ufffd": "x\U0001f600"}
    assert rejected.reason == (
        "name: lone surrogate replaced with U+FFFD; properties: lone surrogate replaced with U+FFFD"
    )
    # orjson refuses the surrogate: the raw text is the stdlib's ASCII-escaped JSON
    assert "\\ud800" in rejected.raw
    rejected.raw.encode()  # storable: valid UTF-8


def test_two_surrogate_code_points_in_a_str_are_joined() -> None:
    event, rejected = one(wire(name="\ud83d\ude00"))
    assert event is not None and event.name == "\U0001f600"
    assert rejected is not None and rejected.stored


def test_huge_properties_are_stored_as_null() -> None:
    raw = wire(properties={"blob": "x" * MAX_PROPERTIES_BYTES})
    event, rejected = one(raw)
    assert event is not None and event.properties is None
    assert rejected is not None and rejected.stored
    assert rejected.reason == (
        f"properties too large ({MAX_PROPERTIES_BYTES + 11} bytes > {MAX_PROPERTIES_BYTES}),"
        " stored as null"
    )
    assert rejected.raw == orjson.dumps(raw).decode()  # the raw keeps the properties


def test_properties_at_the_limit_are_kept() -> None:
    properties = {"blob": "x" * (MAX_PROPERTIES_BYTES - 11)}
    assert len(orjson.dumps(properties)) == MAX_PROPERTIES_BYTES
    event, rejected = one(wire(properties=properties))
    assert rejected is None and event is not None and event.properties == properties


def test_properties_any_json_value() -> None:
    values: tuple[object, ...] = ([1, "a", None], "text", 3.5, 0, False, {"a": {"b": [{}]}})
    for value in values:
        event, rejected = one(wire(properties=value))
        assert rejected is None and event is not None and event.properties == value


def test_unstorable_properties_are_null() -> None:
    deep: Any = []
    for _ in range(300):
        deep = [deep]
    cases = [
        ({1: "a"}, "key is not a string: 1"),
        ({"a": {1, 2}}, "not a JSON value: set"),
        ({"a": 10**30}, "Integer exceeds 64-bit range"),
        (deep, "nested deeper than 200"),
    ]
    for properties, why in cases:
        event, rejected = one(wire(properties=properties))
        assert event is not None and event.properties is None
        assert rejected is not None and rejected.stored
        assert rejected.reason.startswith("properties are not storable JSON")
        assert why in rejected.reason


def test_a_page_checks_its_properties_as_each_event_would() -> None:
    # The Normalizer checks a page's properties in one serialization; the outcome must be the
    # one of each event alone: a page over the limit in all keeps events each under it, and one
    # bad value among clean ones is repaired alone, in page order.
    half = {"blob": "x" * (MAX_PROPERTIES_BYTES * 6 // 10)}
    page: list[object] = [
        wire(id=f"00000000-0000-4000-8000-00000000000{i}", properties=properties)
        for i, properties in enumerate(
            [half, half, {"a": "nul\x00"}, {"page": "/home"}, {"k": "\\u0000 is text"}, {1: 2}]
        )
    ]
    events, rejected = normalize(page)
    alone = [normalize([raw]) for raw in page]
    assert events == [e for evs, _ in alone for e in evs]
    assert rejected == [r for _, rs in alone for r in rs]
    assert [e.properties for e in events] == [
        half,
        half,
        {"a": "nul\ufffd"},
        {"page": "/home"},
        {"k": "\\u0000 is text"},
        None,
    ]
    assert [r.reason for r in rejected] == [
        "properties: NUL replaced with U+FFFD",
        "properties are not storable JSON (key is not a string: 1), stored as null",
    ]


def test_raw_text_never_fails() -> None:
    assert raw_text({"a": 1}) == '{"a":1}'
    assert raw_text("\ud800") == '"\\ud800"'
    assert raw_text({(1, 2): 3}) == "{(1, 2): 3}"
    loop: list[Any] = []
    loop.append(loop)
    assert raw_text(loop) == "[[...]]"
    assert raw_text({"s": {1}}) == '{"s": "{1}"}'


def test_mixed_page_keeps_order_and_loses_nothing() -> None:
    page: list[object] = [
        wire(),
        wire(id="00000000-0000-4000-8000-000000000001", timestamp=1769541612369),
        None,
        wire(id="00000000-0000-4000-8000-000000000002", type=5),
        wire(id=None),
        wire(id="00000000-0000-4000-8000-000000000003", timestamp="2026-01-27 19:19:13"),
        wire(),  # a repeat: deduplication is the Writer's job, on id
    ]
    events, rejected = normalize(page)
    assert [str(e.id) for e in events] == [
        ID,
        "00000000-0000-4000-8000-000000000001",
        "00000000-0000-4000-8000-000000000002",
        "00000000-0000-4000-8000-000000000003",
        ID,
    ]
    assert [(r.stored, r.reason.split(":")[0]) for r in rejected] == [
        (False, "event is not a JSON object"),
        (True, "type is not a string"),
        (False, "missing id"),
    ]


NOT_UUIDS = (
    "",
    ID[:-1],
    ID + "0",
    ID.replace("-", "_"),
    "0x" + ID[2:],
    f"{{{ID}",
    ID[:7] + "-" + ID[7] + ID[9:],  # 36 characters, a hyphen one place early
    "-" + ID[1:],  # 36 characters, five hyphens, 31 hex digits
    None,
)


def test_parse_uuid_is_strict() -> None:
    assert parse_uuid(ID) == uuid.UUID(ID)
    assert parse_uuid(ID).is_safe is uuid.SafeUUID.unknown
    for bad in NOT_UUIDS:
        with pytest.raises(ValueError):
            parse_uuid(bad)


def test_a_column_of_uuids_is_as_strict_as_each_alone() -> None:
    texts: list[object] = [ID, SID.upper(), UID]
    assert parse_uuids(texts) == [parse_uuid(text) for text in texts]
    assert parse_uuids([]) == []
    for bad in (*NOT_UUIDS, f"{{{ID}}}", uuid.UUID(ID)):  # braces, a UUID: value by value
        with pytest.raises((ValueError, TypeError)):
            parse_uuids([*texts, bad])
    # Lengths that make up for each other keep the later hyphens in their places; the C
    # parser still refuses the first text of the wrong length.
    bare = ID.replace("-", "")
    for misaligned in ([ID + "0", ID[1:]], [bare, "1234" + ID]):
        with pytest.raises(ValueError):
            parse_uuids(misaligned)


# --- a clean page at once ---------------------------------------------------------------------


def clean_event(i: int, **changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "id": f"00000000-0000-4000-8000-{i:012x}",
        "timestamp": 1769541612369 - i,
    }
    return wire(**{**fields, **changes})


def test_a_clean_page_is_normalized_at_once_as_event_by_event() -> None:
    page: list[Any] = [
        clean_event(0),
        clean_event(1, timestamp="2026-01-27T19:19:13.629Z", userId=None),
        clean_event(2, id=ID.upper(), type="vidéo", name=""),
        clean_event(
            3,
            timestamp=1769541612,
            properties=None,
            session={"id": SID, "deviceType": "d", "browser": "b"},
        ),
    ]
    at_once = _clean_page(page)
    assert at_once is not None
    assert at_once == _normalize(page, None)[0]
    assert normalize(page) == (at_once, [])
    assert [e.user_id for e in at_once] == [uuid.UUID(UID), None, uuid.UUID(UID), uuid.UUID(UID)]
    assert at_once[3].occurred_at == dt.datetime(2026, 1, 27, 19, 20, 12, tzinfo=dt.UTC)


# One field of one event that the clean-page path must leave to the event-by-event path (which
# stores, repairs or rejects it as it always did).
NOT_CLEAN = {
    "braced id": {"id": f"{{{ID}}}"},
    "id with a hyphen one place early": {"id": ID[:7] + "-" + ID[7] + ID[9:]},
    "sessionId null, session.id there": {"sessionId": None},
    "sessionId missing": {"sessionId": ...},
    "no session": {"session": ...},
    "session not an object": {"session": "web"},
    "browser null": {"session": {"id": SID, "deviceType": "mobile", "browser": None}},
    "type null": {"type": None},
    "type a number": {"type": 7},
    "name with NUL": {"name": "a\x00b"},
    "name with a lone surrogate": {"name": "a\ud800b"},
    "timestamp unreadable": {"timestamp": "soon"},
    "timestamp after 2100": {"timestamp": 4_102_444_800_000},
    "timestamp missing": {"timestamp": ...},
    "userId not a UUID": {"userId": "nobody"},
}


@pytest.mark.parametrize("changes", NOT_CLEAN.values(), ids=NOT_CLEAN.keys())
def test_a_page_with_one_event_not_clean_goes_event_by_event(changes: dict[str, Any]) -> None:
    page: list[Any] = [clean_event(0), clean_event(1, **changes), clean_event(2)]
    assert _clean_page([clean_event(0), clean_event(2)]) is not None
    assert _clean_page(page) is None
    events, rejected = normalize(page)
    alone = [normalize([raw]) for raw in page]
    assert events == [e for evs, _ in alone for e in evs]
    assert rejected == [r for _, rs in alone for r in rs]


def test_a_page_with_a_non_object_goes_event_by_event() -> None:
    assert _clean_page([clean_event(0), None]) is None
    assert _clean_page([clean_event(0), [1]]) is None
    assert _clean_page([]) == []


# --- properties -------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
ANY_UUID = st.uuids().map(str) | st.uuids().map(lambda u: str(u).upper()) | JSON
ANY_TIME = (
    st.integers(min_value=0, max_value=4_102_444_799_999)
    | st.datetimes(min_value=dt.datetime(1970, 1, 1), max_value=dt.datetime(2099, 12, 31)).map(
        lambda d: d.isoformat() + "Z"
    )
    | JSON
)
FIELD_VALUES = {
    "id": ANY_UUID,
    "timestamp": ANY_TIME,
    "sessionId": ANY_UUID,
    "userId": ANY_UUID,
    "type": JSON,
    "name": JSON,
    "properties": JSON,
    "session": JSON | st.fixed_dictionaries({}, optional={"id": ANY_UUID, "browser": JSON}),
}
EVENTS = JSON | st.fixed_dictionaries({}, optional=FIELD_VALUES)


@settings(max_examples=300)
@given(st.lists(EVENTS, max_size=5))
def test_never_raises_and_loses_nothing(page: list[object]) -> None:
    events, rejected = normalize(page)
    not_stored = [r for r in rejected if not r.stored]
    # every raw event is either stored or kept aside as not stored, never both, never neither
    assert len(events) + len(not_stored) == len(page)
    for reject in rejected:
        assert reject.reason and not reject.reason.startswith("unexpected")
        assert "\x00" not in reject.raw
        reject.raw.encode()  # no lone surrogate
    for event in events:
        assert event.occurred_at.tzinfo is dt.UTC
        for text in (event.type, event.name, event.device_type, event.browser):
            assert text is None or "\x00" not in text
            if text is not None:
                text.encode()  # no lone surrogate (an empty name is fine)
        data = orjson.dumps(event.properties)  # serializable, so the Writer can store it
        assert b"\\u0000" not in data or b"\\\\u0000" in data


@settings(max_examples=200)
@given(st.lists(EVENTS, max_size=6))
def test_a_page_normalizes_as_its_events_one_by_one(page: list[object]) -> None:
    events, rejected = normalize(page)
    alone = [normalize([raw]) for raw in page]
    assert events == [e for evs, _ in alone for e in evs]
    assert rejected == [r for _, rs in alone for r in rs]


# Events that are clean more often than not, each field sometimes off, so that generated pages
# take the clean-page path often and miss it in every way.
NEARLY_CLEAN_FIELDS = {
    "id": st.uuids().map(str) | st.uuids().map(lambda u: str(u).upper()) | ANY_UUID,
    "timestamp": st.integers(min_value=100_000_000_000, max_value=4_102_444_799_999) | ANY_TIME,
    "sessionId": st.uuids().map(str) | ANY_UUID,
    "userId": st.uuids().map(str) | st.none() | ANY_UUID,
    "type": st.text(max_size=3) | JSON,
    "name": st.text(max_size=3) | JSON,
    "properties": JSON,
    "session": st.fixed_dictionaries(
        {"deviceType": st.text(max_size=3), "browser": st.text(max_size=3)},
        optional={"id": ANY_UUID},
    )
    | JSON,
}
NEARLY_CLEAN = st.fixed_dictionaries(NEARLY_CLEAN_FIELDS) | EVENTS


@settings(max_examples=300)
@given(st.lists(NEARLY_CLEAN, max_size=4))
def test_the_clean_page_path_gives_what_event_by_event_gives(page: list[Any]) -> None:
    at_once = _clean_page(page)
    one_by_one, rejected = _normalize(page, None)
    if at_once is not None:
        assert at_once == one_by_one
        assert rejected == []
    with mock.patch("flowtel._normalize._clean_page", return_value=None):
        event_by_event = normalize(page)
    assert normalize(page) == event_by_event
