"""Capped, jittered exponential backoff."""

from __future__ import annotations

import random

import attrs


@attrs.frozen
class Backoff:
    base: float = 0.5
    cap: float = 30.0
    max_retries: int = 12
    rng: random.Random = attrs.field(factory=random.Random, eq=False, repr=False)

    def delay(self, attempt: int) -> float:
        """Seconds before retry number `attempt` (1-based): half fixed, half jitter, capped."""
        ceiling = min(self.cap, self.base * 2 ** min(attempt - 1, 32))
        return self.rng.uniform(ceiling / 2, ceiling)
