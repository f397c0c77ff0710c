"""Checking a submission against the dataset: a bitmap of N bits, ids decoded to indices."""

from __future__ import annotations

from flowtel.testing._dataset import Dataset


class IdCheck:
    """Feed ids (or chunks of newline-separated text); read the counts at the end."""

    def __init__(self, dataset: Dataset) -> None:
        self._dataset = dataset
        self._seen = bytearray((len(dataset) + 7) // 8)
        self._rest = b""
        self.distinct = 0
        self.extra = 0
        self.repeated = 0
        self.lines = 0

    def add(self, event_id: str) -> None:
        event_id = event_id.strip()
        if not event_id:
            return
        self.lines += 1
        i = self._dataset.index_of(event_id)
        if i is None:
            self.extra += 1
            return
        byte, bit = i >> 3, 1 << (i & 7)
        if self._seen[byte] & bit:
            self.repeated += 1
        else:
            self._seen[byte] |= bit
            self.distinct += 1

    def feed(self, chunk: bytes) -> None:
        data = self._rest + chunk
        lines = data.split(b"\n")
        self._rest = lines.pop()
        for line in lines:
            self.add(line.decode("utf-8", "replace"))

    def close(self) -> None:
        if self._rest:
            self.add(self._rest.decode("utf-8", "replace"))
            self._rest = b""

    @property
    def missing(self) -> int:
        return len(self._dataset) - self.distinct
