"""Fixed windows anchored at the first request of the window, one per key."""

from __future__ import annotations

import math

import attrs


@attrs.frozen
class Verdict:
    allowed: bool
    limit: int
    remaining: int
    reset_s: int  # whole seconds left in the window, rounded up


@attrs.define
class FixedWindow:
    limit: int
    window_s: float
    _start: float | None = None
    _count: int = 0

    def hit(self, now: float) -> Verdict:
        """Count one request at `now` (a refused one does not count)."""
        if self._start is None or now >= self._start + self.window_s:
            self._start = now
            self._count = 0
        reset = max(1, math.ceil(self._start + self.window_s - now - 1e-9))
        if self.limit <= 0:
            return Verdict(True, 0, 0, reset)
        if self._count >= self.limit:
            return Verdict(False, self.limit, 0, reset)
        self._count += 1
        return Verdict(True, self.limit, self.limit - self._count, reset)


@attrs.define
class Windows:
    """One FixedWindow per key."""

    limit: int
    window_s: float
    _by_key: dict[str, FixedWindow] = attrs.field(factory=dict)

    def hit(self, key: str, now: float) -> Verdict:
        w = self._by_key.get(key)
        if w is None:
            w = self._by_key[key] = FixedWindow(self.limit, self.window_s)
        return w.hit(now)
