"""parse_instant: every format of contract §4, exact to the millisecond, and every refusal."""

from __future__ import annotations

import datetime as dt
import math
import random

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from flowtel._timestamps import (
    MAX_INSTANT,
    BadTimestamp,
    format_instant,
    parse_instant,
    parse_instants,
)

UTC = dt.UTC
EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
MAX_MS = 4_102_444_800_000  # 2100-01-01T00:00:00Z
# 1769541612369 ms: 20480 days (2026-01-27) + 69612 s (19:20:12) + 369 ms.
T_MS = dt.datetime(2026, 1, 27, 19, 20, 12, 369000, tzinfo=UTC)
T_ISO = dt.datetime(2026, 1, 27, 19, 19, 13, 629000, tzinfo=UTC)
T_S = dt.datetime(2026, 1, 27, 19, 19, 13, tzinfo=UTC)


def at_ms(ms: int) -> dt.datetime:
    return EPOCH + dt.timedelta(milliseconds=ms)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # epoch milliseconds and seconds, told apart by magnitude
        (1769541612369, T_MS),
        (1769541612369.0, T_MS),
        (1769541612369.9, T_MS),  # sub-millisecond part truncated
        (1769541612, T_MS.replace(microsecond=0)),
        (1769541612.369, T_MS),  # not .368: the float's repr is read, not value * 1000
        ("1769541612369", T_MS),
        ("1769541612", T_MS.replace(microsecond=0)),
        ("1769541612.369", T_MS),
        ("1.769541612369e12", T_MS),
        ("+1769541612369", T_MS),
        (4_102_444_799, at_ms(MAX_MS - 1000)),  # seconds: 2099-12-31T23:59:59Z
        (100_000_000_000, at_ms(100_000_000_000)),  # 1e11: milliseconds, 1973-03-03T09:46:40Z
        (0, EPOCH),
        # ISO-8601
        ("2026-01-27T19:19:13.629Z", T_ISO),
        ("2026-01-27T19:19:13.629z", T_ISO),
        ("2026-01-27T19:19:13Z", T_S),
        ("2026-01-27T19:19:13.629", T_ISO),  # no zone: UTC
        ("2026-01-27T19:19:13", T_S),
        ("2026-01-27 19:19:13", T_S),
        ("2026-01-27 19:19:13.629", T_ISO),
        ("2026-01-27 19:19:13.629Z", T_ISO),
        ("2026-01-27T21:19:13.629+02:00", T_ISO),
        ("2026-01-27T21:19:13.629+0200", T_ISO),
        ("2026-01-27T21:19:13.629+02", T_ISO),
        ("2026-01-27T14:49:13.629-04:30", T_ISO),
        ("2026-01-28T01:19:13.629+06:00", T_ISO),  # another calendar day locally
        ("2026-01-27T19:19:13.629+00:00", T_ISO),
        ("2026-01-27T19:19:13.629999Z", T_ISO),  # microseconds truncated
        ("2026-01-27T19:19:13.6299999999Z", T_ISO),
        ("2026-01-27T19:19:13.6Z", T_ISO.replace(microsecond=600000)),
        ("2026-01-27T19:19:13,629Z", T_ISO),
        ("2026-01-27T19:19Z", T_S.replace(second=0)),
        ("2026-01-27T19:19:13.629 UTC", T_ISO),
        ("1970-01-01T00:00:00.000Z", EPOCH),
        ("2099-12-31T23:59:59.999Z", at_ms(MAX_MS - 1)),
        # stray control and zero-width characters, around and inside
        ("\u200b2026-01-27T19:19:13.629Z", T_ISO),
        ("\ufeff2026-01-27T19:19:13.629Z\n", T_ISO),
        ("  2026-01-27T19:19:13.629Z\t\r\n", T_ISO),
        ("2026-01-27T19:19:\x0013.629Z", T_ISO),
        ("2026-01-27\u200bT19:19:13.6\u200d29Z", T_ISO),
        ("2026-01-27\t19:19:13.629", T_ISO),  # a tab as the separator
        ("\x001769541612369\x00", T_MS),
        ("17695\u200b41612369", T_MS),
        ("\u2060\u00ad2026-01-27T19:19:13.629Z\u2028", T_ISO),
    ],
)
def test_formats(value: object, expected: dt.datetime) -> None:
    result = parse_instant(value)
    assert result == expected
    assert result.tzinfo is UTC


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (True, "not a timestamp"),
        (False, "not a timestamp"),
        (None, "not a timestamp"),
        ("", "empty"),
        ("  \u200b\t", "empty"),
        (math.nan, "not a finite number"),
        (math.inf, "not a finite number"),
        (-math.inf, "not a finite number"),
        ("NaN", "not a finite number"),
        ("-Infinity", "not a finite number"),
        ("yesterday", "unparseable"),
        ("2026-01-27", "unparseable"),  # a date alone: no time of day, not guessed
        ("2026-01-27T19:19:13.629Zjunk", "unparseable"),
        ("0x1234", "unparseable"),
        ("1_769_541_612_369", "unparseable"),
        ("١٧٦٩٥٤١٦١٢٣٦٩", "unparseable"),  # Arabic-Indic digits are not read as a number
        ("2026-13-01T00:00:00Z", "not a valid date"),
        ("2026-02-29T00:00:00Z", "not a valid date"),
        ("2026-01-27T24:00:00Z", "not a valid date"),
        ("2026-01-27T23:59:60Z", "not a valid date"),  # leap seconds do not exist in datetime
        ("2026-01-27T19:19:13+24:00", "bad UTC offset"),
        ("2026-01-27T19:19:13+02:60", "bad UTC offset"),
        (-1, "before 1970"),
        (-1769541612369, "before 1970"),
        ("1969-12-31T23:59:59.999Z", "before 1970"),
        ("1970-01-01T01:00:00+02:00", "before 1970"),
        (MAX_MS, "after 2100"),
        ("2100-01-01T00:00:00Z", "after 2100"),
        ("2099-12-31T23:00:00-01:00", "after 2100"),
        (1769541612369000, "after 2100"),  # microseconds are not a format of the API
        (5_000_000_000, "after 2100"),  # seconds in the year 2128
        (99_999_999_999, "after 2100"),  # just below 1e11: seconds, the year 5138
        (99_999_999_999.0, "after 2100"),
        (10**400, "after 2100"),
        ("1e999999999", "after 2100"),
        ("-1e999999999", "before 1970"),
        ("9" * 300, "too long"),
        (b"1769541612369", "not a timestamp"),
        ([1769541612369], "not a timestamp"),
        ({"ms": 1}, "not a timestamp"),
    ],
)
def test_rejects(value: object, reason: str) -> None:
    with pytest.raises(BadTimestamp, match=reason):
        parse_instant(value)


def test_bad_timestamp_is_a_value_error_with_a_reason() -> None:
    with pytest.raises(ValueError) as info:
        parse_instant("nope")
    assert isinstance(info.value, BadTimestamp)
    assert info.value.reason == "unparseable: 'nope'"


def test_datetimes_pass_through_in_utc_truncated() -> None:
    paris = dt.timezone(dt.timedelta(hours=1))
    assert parse_instant(dt.datetime(2026, 1, 27, 20, 19, 13, 629999, tzinfo=paris)) == T_ISO
    assert parse_instant(dt.datetime(2026, 1, 27, 19, 19, 13, 629000)) == T_ISO  # naive: UTC


def test_int_ms_fast_path_is_exact_over_the_whole_range() -> None:
    # The fast path goes through the float ms / 1000; it must land on the exact millisecond.
    rng = random.Random(7)
    samples = [rng.randrange(100_000_000_000, MAX_MS) for _ in range(100_000)]
    samples += range(MAX_MS - 20_000, MAX_MS)  # where a double's spacing is widest
    samples += range(100_000_000_000, 100_000_000_000 + 5_000)
    for ms in samples:
        assert parse_instant(ms) == at_ms(ms), ms
    # A page's column of them at once (the Normalizer's clean-page path) lands on each too.
    assert parse_instants(samples) == [at_ms(ms) for ms in samples]


def test_format_instant_round_trips() -> None:
    assert format_instant(T_ISO) == "2026-01-27T19:19:13.629Z"
    assert format_instant(EPOCH) == "1970-01-01T00:00:00.000Z"
    assert parse_instant(format_instant(T_MS)) == T_MS


# --- properties -------------------------------------------------------------------------------

STRAY = st.sampled_from(["\u200b", "\ufeff", "\t", "\n", "\r", "\x00", "\x7f", "\u200e", "\u2060"])
OFFSETS = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59)


def renderings(ms: int, offset_minutes: int, extra_digits: str) -> list[object]:
    """Every way the contract allows to write the instant `ms`, that carries it exactly."""
    instant = at_ms(ms)
    base = instant.strftime("%Y-%m-%dT%H:%M:%S")
    frac = f"{ms % 1000:03d}"
    seconds, millis = divmod(ms, 1000)
    out: list[object] = [
        f"{base}.{frac}Z",
        f"{base}.{frac}",
        f"{base}.{frac}{extra_digits}Z",  # sub-ms digits are truncated
        f"{base.replace('T', ' ')}.{frac}",
        f"{base.replace('T', ' ')}.{frac}Z",
        f"{seconds}.{millis:03d}",
        ms / 1000,  # float seconds: its repr is exact to the ms
    ]
    zone = dt.timezone(dt.timedelta(minutes=offset_minutes))
    local = instant.astimezone(zone)
    sign = "-" if offset_minutes < 0 else "+"
    hh, mm = divmod(abs(offset_minutes), 60)
    local_text = local.strftime("%Y-%m-%dT%H:%M:%S") + f".{frac}"
    if 1 <= local.year <= 9999:
        out += [f"{local_text}{sign}{hh:02d}:{mm:02d}", f"{local_text}{sign}{hh:02d}{mm:02d}"]
    if ms >= 100_000_000_000:  # below 1e11 a number is read as seconds, by design
        out += [ms, float(ms), str(ms), f"{ms}.{extra_digits}"]
    if millis == 0:  # seconds-only formats carry only whole seconds
        out += [seconds, float(seconds), str(seconds), f"{base}Z", base, base.replace("T", " ")]
    return out


@given(
    ms=st.integers(min_value=0, max_value=MAX_MS - 1)
    | st.integers(min_value=1_700_000_000, max_value=1_800_000_000).map(lambda s: s * 1000),
    offset_minutes=OFFSETS,
    extra_digits=st.text("0123456789", min_size=1, max_size=6),
    before=st.lists(STRAY, max_size=3),
    inside=st.lists(st.tuples(st.integers(0, 40), STRAY), max_size=3),
    after=st.lists(STRAY, max_size=3),
)
@example(ms=MAX_MS - 1, offset_minutes=-1, extra_digits="999", before=[], inside=[], after=[])
@example(ms=0, offset_minutes=1, extra_digits="0", before=[], inside=[], after=[])
def test_every_rendering_reads_back_exactly(
    ms: int,
    offset_minutes: int,
    extra_digits: str,
    before: list[str],
    inside: list[tuple[int, str]],
    after: list[str],
) -> None:
    expected = at_ms(ms)
    for value in renderings(ms, offset_minutes, extra_digits):
        assert parse_instant(value) == expected, value
        if isinstance(value, str):
            text = value
            for position, char in inside:
                text = text[:position] + char + text[position:]
            text = "".join(before) + text + "".join(after)
            result = parse_instant(text)
            assert result == expected, text
            assert result.tzinfo is UTC


ANYTHING = st.one_of(
    st.text(),
    st.text("0123456789-+:.TZ eE\u200b\x00\t", max_size=40),
    st.integers(),
    st.floats(),
    st.booleans(),
    st.none(),
    st.binary(),
    st.lists(st.integers(), max_size=2),
    st.datetimes(timezones=st.none() | st.timezones()),
)


@given(ANYTHING)
def test_anything_is_an_instant_or_bad_timestamp(value: object) -> None:
    try:
        result = parse_instant(value)
    except BadTimestamp as exc:
        assert exc.reason
    else:
        assert result.tzinfo is UTC
        assert EPOCH <= result < MAX_INSTANT
        assert result.microsecond % 1000 == 0


# Integers on both sides of the column path's bounds (1e11: seconds below, milliseconds above;
# 2100), and anything else among them: the column is never read otherwise than value by value.
EDGES = st.sampled_from([99_999_999_999, 100_000_000_000, MAX_MS - 1, MAX_MS, 0, -1])
COLUMN_VALUES = st.integers(min_value=100_000_000_000, max_value=MAX_MS - 1) | EDGES | ANYTHING


@given(st.lists(COLUMN_VALUES, max_size=6))
def test_a_column_of_instants_reads_as_each_value_alone(values: list[object]) -> None:
    try:
        alone = [parse_instant(value) for value in values]
    except BadTimestamp:
        with pytest.raises(BadTimestamp):
            parse_instants(values)
    else:
        assert parse_instants(values) == alone
