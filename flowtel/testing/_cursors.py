"""Opaque cursors: an HMAC-signed (endpoint, position, filter, issue time, lifetime) blob."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import struct

import attrs

_LAYOUT = struct.Struct(">BQqqqH")  # endpoint, position, since, until, issued ms, lifetime s
_NONE = -(2**63)  # "no bound" inside the blob
_MAC = 12


@attrs.frozen
class Cursor:
    endpoint: int  # 0 = listing, 1 = feed
    position: int  # index of the next event to serve
    since: int | None
    until: int | None
    issued_ms: int  # simulator clock at issue, in ms
    lifetime_s: int


class CursorError(Exception):
    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")


class CursorCodec:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def _mac(self, blob: bytes) -> bytes:
        return hmac.new(self._key, blob, hashlib.sha256).digest()[:_MAC]

    def encode(self, cursor: Cursor) -> str:
        blob = _LAYOUT.pack(
            cursor.endpoint,
            cursor.position,
            _NONE if cursor.since is None else cursor.since,
            _NONE if cursor.until is None else cursor.until,
            cursor.issued_ms,
            cursor.lifetime_s,
        )
        return base64.urlsafe_b64encode(blob + self._mac(blob)).decode().rstrip("=")

    def decode(self, text: str, now_s: float) -> Cursor:
        """The cursor, or CursorError(CURSOR_INVALID | CURSOR_EXPIRED)."""
        invalid = CursorError("CURSOR_INVALID", "Invalid cursor")
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            raise invalid from None
        if len(raw) != _LAYOUT.size + _MAC:
            raise invalid
        blob, mac = raw[: _LAYOUT.size], raw[_LAYOUT.size :]
        if not hmac.compare_digest(mac, self._mac(blob)):
            raise invalid
        endpoint, position, since, until, issued, lifetime = _LAYOUT.unpack(blob)
        cursor = Cursor(
            endpoint,
            position,
            None if since == _NONE else since,
            None if until == _NONE else until,
            issued,
            lifetime,
        )
        age_s = now_s - issued / 1000
        if age_s > lifetime:
            minutes = max(1, round(age_s / 60))
            raise CursorError("CURSOR_EXPIRED", f"Cursor expired {minutes} minute(s) ago")
        return cursor


def seconds_left(deadline: float, now: float) -> int:
    """Whole seconds until `deadline`, rounded up (never below 1)."""
    return max(1, math.ceil(deadline - now - 1e-9))
