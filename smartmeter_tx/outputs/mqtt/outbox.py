"""
The messages that wait for the broker, in the order they were made.

At most one message per topic is handed to the broker connection and not yet
acknowledged (PUBACK).  That is what keeps a retained state from going back
in time: a broker that stalls holds at most the oldest unacknowledged state
of each topic; the newer ones wait here, and when the connection is lost the
unacknowledged one goes back to the front of its topic, so whatever the
broker receives, it receives in order.  (paho's own queue, which would
replay its backlog after newer messages on a new connection, is never given
more than this one message per topic, and is thrown away with its client.)

The outbox is bounded: past C{limit} waiting messages the oldest is dropped
and counted.  A message put with C{latest_only} (availability, discovery,
link) replaces the one of its topic still waiting, uncounted: only its newest
value matters, so those are as many as their topics and do not count against
the limit.

Pure: no Twisted, no I/O.
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Dict, List, Optional, Tuple

__all__ = ["Outbox"]


class Outbox:
    """
    Ordered messages for the broker, keyed by topic (any string that names
    one), at most one in flight per topic.

    @ivar dropped: messages dropped because the outbox was full.
    @ivar delivered: messages the broker acknowledged.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.dropped = 0
        self.delivered = 0
        self._seq = 0
        #: key -> deque of ((priority, seq), payload, bounded), oldest first.
        self._waiting: Dict[str, deque] = {}
        self._count = 0
        self._bounded = 0
        self._in_flight: Dict[str, tuple] = {}

    @property
    def waiting(self) -> int:
        """Messages not yet handed to the connection."""
        return self._count

    @property
    def in_flight(self) -> int:
        """Messages handed to the connection and not yet acknowledged."""
        return len(self._in_flight)

    def __len__(self) -> int:
        """Messages not yet acknowledged."""
        return self._count + len(self._in_flight)

    def holds(self, key: str) -> bool:
        """Whether a message of C{key} waits or is in flight."""
        return key in self._in_flight or bool(self._waiting.get(key))

    def put(self, key: str, payload: bytes, latest_only: bool = False,
            urgent: bool = False) -> int:
        """
        Queue a message.

        @param latest_only: replace the waiting message of C{key}, if any;
            not counted against the limit.
        @param urgent: go before every message that is not urgent.
        @return: how many messages were dropped to make room.
        """
        self._seq += 1
        queue = self._waiting.setdefault(key, deque())
        if latest_only:
            while queue:
                self._forget(queue.popleft())
        self._add(queue.append, ((0 if urgent else 1, self._seq), payload, not latest_only))
        return self._trim()

    def _add(self, where: Callable[[tuple], object], item: tuple) -> None:
        where(item)
        self._count += 1
        self._bounded += item[2]

    def _forget(self, item: tuple) -> None:
        self._count -= 1
        self._bounded -= item[2]

    def take_ready(self, only: Optional[Callable[[str], bool]] = None) -> List[Tuple[str, bytes]]:
        """
        The messages that may be handed to the connection now (the oldest of
        each topic without one in flight), oldest first, marked in flight.

        @param only: when given, take only the keys for which it is true;
            the others wait, in their order.
        """
        heads = sorted((queue[0][0], key) for key, queue in self._waiting.items()
                       if queue and key not in self._in_flight and (only is None or only(key)))
        ready = []
        for _, key in heads:
            item = self._waiting[key].popleft()
            self._forget(item)
            self._in_flight[key] = item
            ready.append((key, item[1]))
        return ready

    def acknowledged(self, key: str) -> None:
        """The broker acknowledged the message of C{key} in flight."""
        if self._in_flight.pop(key, None) is not None:
            self.delivered += 1

    def requeue(self) -> int:
        """
        The connection is gone: each message in flight goes back to the
        front of its topic (it may or may not have arrived; it is sent again,
        still before anything newer of its topic).

        @return: how many messages were dropped to make room.
        """
        for key, item in self._in_flight.items():
            self._add(self._waiting.setdefault(key, deque()).appendleft, item)
        self._in_flight.clear()
        return self._trim()

    def _trim(self) -> int:
        dropped = 0
        while self._bounded > self.limit:
            oldest = min((queue[0][0], key) for key, queue in self._waiting.items()
                         if queue and queue[0][2])
            self._forget(self._waiting[oldest[1]].popleft())
            dropped += 1
        self.dropped += dropped
        return dropped
