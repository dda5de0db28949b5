"""
Exponential backoff with jitter, for everything the service retries (joins,
reopening the port).  Pure: the random source is injected.
"""

from __future__ import annotations

import random

__all__ = ["Backoff"]


class Backoff:
    """
    C{base * 2^n}, capped, times a random factor in [0.5, 1.5) so that many
    clients do not retry in step.

    @ivar failures: failures since the last L{reset}.
    """

    def __init__(self, base: float, cap: float, rng: random.Random) -> None:
        self.base = base
        self.cap = cap
        self.rng = rng
        self.failures = 0

    def next_delay(self) -> float:
        """@return: seconds to wait before the next try; counts a failure."""
        delay = min(self.cap, self.base * 2 ** self.failures)
        self.failures += 1
        return delay * (0.5 + self.rng.random())

    def reset(self) -> None:
        self.failures = 0
