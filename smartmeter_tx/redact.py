"""
The one place that keeps secrets out of text: logs, transcripts, error
messages.  Pure (no Twisted, no I/O).

The B-route ID also travels in hex inside PANA payloads, so both forms of
every secret are scrubbed.
"""

from __future__ import annotations

from typing import Iterable

__all__ = ["Redactor", "REDACTED", "FRAGMENT"]

REDACTED = "<redacted>"
#: The shortest piece of a secret that L{Redactor.scrub_fragments} hides.
FRAGMENT = 6


class Redactor:
    """
    A set of secrets and a L{scrub} that replaces each of them in a text.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        self._plain: set[str] = set()
        for secret in secrets:
            self.add(secret)

    def scrub_fragments(self, text: str) -> str:
        """
        L{scrub}, and also every piece of a secret of L{FRAGMENT} or more
        characters: for text that may hold a secret cut short (a garbled
        line from an interrupted run, a parser's quote of part of a token).
        """
        text = self.scrub(text)
        for secret in sorted(self._plain, key=len, reverse=True):
            for size in range(len(secret) - 1, FRAGMENT - 1, -1):
                for start in range(len(secret) - size + 1):
                    piece = secret[start:start + size]
                    if piece in text:
                        text = text.replace(piece, REDACTED)
        return text

    def add(self, secret: str) -> None:
        """
        Never let C{secret}, nor its upper-case hex form, through L{scrub}.
        Empty values are ignored.
        """
        if secret:
            self._plain.add(secret)
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
