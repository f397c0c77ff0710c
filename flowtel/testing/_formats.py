"""Timestamp renderings of contract §4, each the exact canonical instant, as JSON literals."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Mapping

from flowtel.testing._config import FORMATS, LOSSY_FORMATS

_EPOCH = dt.date(1970, 1, 1)
_MS = [f".{m:03d}" for m in range(1000)]
_OFFSETS = ((120, "+02:00"), (-300, "-05:00"), (330, "+05:30"), (0, "+00:00"))
_STRAY = ("\\u200b", "\\t", "\\u200b ", "\\n", "\\ufeff")


_HMS: list[str] = []  # "HH:MM:SS" for every second of a day, built on first use
_DAYS: dict[int, str] = {}  # day number -> "YYYY-MM-DDT" (bounded below)


def _tables() -> None:
    if not _HMS:
        _HMS.extend(f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}" for s in range(86400))


def _day(day: int) -> str:
    if len(_DAYS) > 4096:
        _DAYS.clear()
    text = _DAYS[day] = (_EPOCH + dt.timedelta(days=day)).isoformat() + "T"
    return text


def iso(ms: int, sep: str = "T") -> str:
    """`2026-01-27T19:19:13.629` (no zone suffix)."""
    _tables()
    day, rem = divmod(ms, 86_400_000)
    date = _DAYS.get(day) or _day(day)
    if sep != "T":
        date = date[:-1] + sep
    return f"{date}{_HMS[rem // 1000]}{_MS[rem % 1000]}"


def _ms(t: int, r: int) -> str:
    return str(t)


def _iso_z(t: int, r: int) -> str:
    day, rem = divmod(t, 86_400_000)
    return f'"{_DAYS.get(day) or _day(day)}{_HMS[rem // 1000]}{_MS[rem % 1000]}Z"'


def _seconds(t: int, r: int) -> str:
    return str(t // 1000)


def _ms_string(t: int, r: int) -> str:
    return f'"{t}"'


def _seconds_string(t: int, r: int) -> str:
    return f'"{t // 1000}"'


def _space(t: int, r: int) -> str:
    return f'"{iso(t, " ")[:-4]}"'


def _no_zone(t: int, r: int) -> str:
    return f'"{iso(t)}"'


def _offset(t: int, r: int) -> str:
    minutes, suffix = _OFFSETS[r % len(_OFFSETS)]
    return f'"{iso(t + minutes * 60_000)}{suffix}"'


def _stray(t: int, r: int) -> str:
    junk = _STRAY[r % len(_STRAY)]
    inner = iso(t) + "Z" if r & 8 else str(t)
    return f'"{junk}{inner}"' if r & 16 else f'"{inner}{junk}"'


RENDERERS: dict[str, Callable[[int, int], str]] = {
    "ms": _ms,
    "iso_z": _iso_z,
    "seconds": _seconds,
    "ms_string": _ms_string,
    "seconds_string": _seconds_string,
    "space": _space,
    "no_zone": _no_zone,
    "offset": _offset,
    "stray": _stray,
}
assert set(RENDERERS) == set(FORMATS)

TABLE_SIZE = 256


@functools.lru_cache(maxsize=32)
def _table(weights: tuple[tuple[str, float], ...]) -> tuple[Callable[[int, int], str], ...]:
    total = sum(w for _, w in weights)
    table: list[Callable[[int, int], str]] = []
    acc = 0.0
    for name, w in weights:
        acc += w
        while len(table) < round(acc / total * TABLE_SIZE):
            table.append(RENDERERS[name])
    return tuple(table)


class FormatMix:
    """Picks a rendering from weights, lossy formats only for whole-second instants."""

    def __init__(self, weights: Mapping[str, float]) -> None:
        _tables()
        every = tuple((k, float(w)) for k, w in sorted(weights.items()) if w > 0)
        exact = tuple((k, w) for k, w in every if k not in LOSSY_FORMATS) or (("iso_z", 1.0),)
        self.whole_second = _table(every)
        self.with_ms = _table(exact)
        self.names = tuple(k for k, _ in every)

    def render(self, t: int, r: int) -> str:
        """The JSON literal for instant `t` (ms), picked by the random bits `r`."""
        table = self.with_ms if t % 1000 else self.whole_second
        return table[r & 0xFF](t, r >> 8)
