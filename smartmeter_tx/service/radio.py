"""
The service's radio budget beyond its polls: the frames the meter's record
(the backfill) and the LAN's requests (the ECHONET Lite bridge) may put on
the air in any hour, counted in one window that both spend from.  Pure.

ARIB STD-T108 caps a module's transmit time at 360 s an hour; a Get frame
takes well under 0.1 s on the air, so 120 frames an hour beyond the polls
stay within about 3 % of it, whoever asks for them.
"""

from __future__ import annotations

from collections import deque

__all__ = ["FrameWindow"]


class FrameWindow:
    """
    Frames spent in the last hour, on an injected monotonic clock.

    @ivar limit: frames an hour at most.
    """

    HOUR = 3600.0

    def __init__(self, limit: int = 120) -> None:
        self.limit = limit
        self._spent: deque[tuple[float, int]] = deque()

    def spend(self, now: float, frames: int) -> None:
        """Count C{frames} put on the air at C{now}."""
        if frames > 0:
            self._spent.append((now, frames))

    def spent(self, now: float) -> int:
        """@return: the frames counted in the hour before C{now}."""
        while self._spent and self._spent[0][0] <= now - self.HOUR:
            self._spent.popleft()
        return sum(frames for _, frames in self._spent)

    def room(self, now: float) -> bool:
        """@return: whether another frame fits in the hour before C{now}."""
        return self.spent(now) < self.limit
