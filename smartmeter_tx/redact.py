"""
The one place that keeps secrets out of text: logs, transcripts, error
messages.  Pure (no Twisted, no I/O).

The B-route ID also travels in hex inside PANA payloads, so both forms of
every secret are scrubbed.
"""

from __future__ import annotations

from typing import Iterable

__all__ = ["Redactor", "REDACTED"]

REDACTED = "<redacted>"


class Redactor:
    """
    A set of secrets and a L{scrub} that replaces each of them in a text.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str) -> None:
        """
        Never let C{secret}, nor its upper-case hex form, through L{scrub}.
        Empty values are ignored.
        """
        if secret:
            self._secrets.add(secret)
            self._secrets.add(secret.encode().hex().upper())

    def __bool__(self) -> bool:
        return bool(self._secrets)

    def __repr__(self) -> str:
        return f"<Redactor of {len(self._secrets) // 2} secrets>"

    def scrub(self, text: str) -> str:
        """
        @return: C{text} with every secret replaced by C{<redacted>}; the
            longest secrets first, so that one secret inside another is never
            left half shown.
        """
        for secret in sorted(self._secrets, key=len, reverse=True):
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text
