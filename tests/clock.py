"""A clock for expiry tests that moves only when told."""

from __future__ import annotations


class FakeClock:
    """A clock that moves only when told, for expiry tests without sleeping."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
