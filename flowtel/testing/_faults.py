"""Which fault, if any, a response gets: seeded draws, one stream per endpoint."""

from __future__ import annotations

import random

from flowtel.testing._config import Faults

HTML_5XX = (
    b"<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
    b"<center><h1>{status} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n"
    b"</body>\r\n</html>\r\n"
)
REASONS = {502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}


class FaultDice:
    """Draws faults for one endpoint from its own seeded stream."""

    def __init__(self, faults: Faults, seed: int) -> None:
        self.faults = faults
        self.rng = random.Random(seed)
        self._kinds = [(k, r) for k, r in faults.transport_kinds() if r > 0]

    def transport(self) -> str | None:
        """At most one transport fault kind for this response."""
        if not self._kinds:
            return None
        x = self.rng.random()
        for kind, rate in self._kinds:
            if x < rate:
                return kind
            x -= rate
        return None

    def chance(self, rate: float) -> bool:
        return rate > 0 and self.rng.random() < rate

    def uniform(self, bounds: tuple[float, float]) -> float:
        lo, hi = bounds
        return lo if hi <= lo else self.rng.uniform(lo, hi)

    def html_5xx(self, status: int) -> bytes:
        reason = REASONS.get(status, "Error")
        return HTML_5XX.replace(b"{status}", str(status).encode()).replace(
            b"{reason}", reason.encode()
        )
