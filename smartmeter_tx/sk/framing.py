"""
SKSTACK IP byte framing, sans I/O: bytes in, typed items out.

Both ends of the serial line use one L{Reader}:

 - the host (L{smartmeter_tx.sk.protocol.SKStackProtocol}) reads the module's
   output: lines end with CR LF, or with CR alone while ROPT/WOPT is in flight
   (their answers, C{OK 01\\r}, have no LF); after the head of a binary ERXUDP
   whose payload held CR LF it asks for the rest of the payload as raw bytes;
 - the emulated module (L{smartmeter_tx.emulator.module.ModuleProtocol}) reads
   host commands: CR LF, CR or LF end a line, and C{SKSENDTO <args> <LEN> } is
   followed by exactly LEN raw payload bytes with no line end.

Pure: no Twisted, no I/O.  The consumer calls L{Reader.feed} with whatever the
port delivered and then L{Reader.next} until it returns L{NEED_DATA}.  Items
are L{Line}, L{Raw}, L{Dropped} and, for a module-side reader, L{SendtoHeader}.
How the input is split into chunks never changes the items.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Final, Iterator, Literal, Optional, Union

from smartmeter_tx.sk.values import Dialect

__all__ = [
    "Reader", "Line", "Raw", "Dropped", "SendtoHeader", "NEED_DATA", "Item",
    "parse_sendto_header", "INCOMPLETE",
]

CR, LF = 0x0D, 0x0A
_HEX = re.compile(rb"^[0-9A-Fa-f]{1,4}\Z")
_SENDTO = b"SKSENDTO "
#: How far an unfinished SKSENDTO argument may run before the input is taken
#: for an ordinary (malformed) line instead of a header still arriving.
_SENDTO_ARG_MAX = 64


class _Sentinel(enum.Enum):
    # An enum, so that a type checker narrows C{item is NEED_DATA}; shown by
    # its bare name.
    NEED_DATA = "NEED_DATA"
    INCOMPLETE = "INCOMPLETE"

    def __repr__(self) -> str:
        return self.value

    __str__ = __repr__


#: Returned by L{Reader.next} when no whole item is buffered.
NEED_DATA: Final = _Sentinel.NEED_DATA

#: Returned by L{parse_sendto_header} when more bytes are needed to decide.
INCOMPLETE: Final = _Sentinel.INCOMPLETE


@dataclass(frozen=True)
class Line:
    """
    One line, without its line end.  In host mode one leading LF is never
    part of it (see L{Reader}).
    """

    data: bytes


@dataclass(frozen=True)
class Raw:
    """
    The C{count} raw bytes asked for with L{Reader.read_raw}, whatever they
    contain.
    """

    data: bytes


@dataclass(frozen=True)
class Dropped:
    """
    A line longer than the reader's maximum was thrown away, up to and
    including its line end.

    @ivar count: its length in bytes, not counting the line end.
    """

    count: int


@dataclass(frozen=True)
class SendtoHeader:
    """
    C{SKSENDTO <args> <LEN> } as a host writes it (module-side readers only).
    The reader does not take the payload by itself: ask for it with
    C{reader.read_raw(header.length)}.

    @ivar data: the header bytes up to and including the space after LEN.
    @ivar form: the dialect whose argument count the host used.
    @ivar args: the arguments, LEN last, as text.
    @ivar length: LEN, the payload size.
    """

    data: bytes
    form: Dialect
    args: tuple
    length: int


Item = Union[Line, Raw, Dropped, SendtoHeader]


def parse_sendto_header(
        buf: bytes) -> Union[SendtoHeader, Literal[_Sentinel.INCOMPLETE], None]:
    """
    Split C{SKSENDTO <args> <LEN> } off the front of C{buf}.

    The form is told by the 5th argument: one character is the DSE SIDE, four
    hex digits the standard LEN, so the other dialect's form is still framed
    by its own LEN (a module answers it with ER05 and stays in step).

    @return: a L{SendtoHeader}; L{INCOMPLETE} when more bytes are needed;
        C{None} when this is not a well-formed header (a line end came first,
        or LEN is not hex): it is then an ordinary line.
    """
    if not buf.startswith(_SENDTO):
        return None if len(buf) >= len(_SENDTO) or not _SENDTO.startswith(buf) else INCOMPLETE
    pos, args, form = len(_SENDTO), [], None
    while True:
        space = buf.find(b" ", pos)
        stop = len(buf) if space < 0 else space
        if b"\r" in buf[pos:stop] or b"\n" in buf[pos:stop]:
            return None
        if space < 0:
            return INCOMPLETE if len(buf) - pos < _SENDTO_ARG_MAX else None
        args.append(buf[pos:space].decode("latin-1"))
        pos = space + 1
        if len(args) == 5 and form is None:
            form = Dialect.DSE if len(args[4]) == 1 else Dialect.STANDARD
        if (form is Dialect.STANDARD and len(args) == 5) or (form is Dialect.DSE and len(args) == 6):
            length = args[-1]
            if not _HEX.match(length.encode("latin-1")):
                return None
            return SendtoHeader(bytes(buf[:pos]), form, tuple(args), int(length, 16))


class Reader:
    """
    An incremental SKSTACK IP reader.

    Line ends: CR LF always; a lone CR while L{cr_ends_line} is set (the CR
    LF that may follow counts as one line end, even if the LF comes later);
    a bare LF only with C{lf_ends_line}.  Without C{lf_ends_line} (host mode)
    a line never starts with LF: one leading LF is dropped (it is the LF of a
    CR LF whose CR already ended the line before); any other LF is line data.
    Raw bytes (L{read_raw}) are never touched.

    A line longer than C{max_line} bytes is dropped up to its line end and
    reported as one L{Dropped}; the reader never stops.  Its bytes are not
    kept while it lasts, so runaway input costs no memory.

    @ivar cr_ends_line: whether a lone CR ends a line; the consumer may change
        it between two calls to L{next} (the host sets it while ROPT or WOPT
        is in flight).
    """

    def __init__(self, max_line: int = 4096, *, cr_ends_line: bool = False,
                 lf_ends_line: bool = False, sendto_headers: bool = False) -> None:
        """
        @param max_line: the longest line kept, in bytes without its end.
        @param lf_ends_line: a bare LF ends a line (module side: hosts such
            as terminals may send LF alone).
        @param sendto_headers: recognise C{SKSENDTO <args> <LEN> } at the
            start of a line and return it as a L{SendtoHeader} (module side).
        """
        if max_line < 1:
            raise ValueError("max_line must be positive")
        self.max_line = max_line
        self.cr_ends_line = cr_ends_line
        self._lf_ends_line = lf_ends_line
        self._sendto_headers = sendto_headers
        self._buf = bytearray()
        self._raw: Optional[int] = None
        self._dropping: Optional[int] = None
        # Swallow one LF if it is the next byte (see the class docstring).
        self._skip_lf = not lf_ends_line

    # -- input -------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Buffer C{data}; nothing is parsed until L{next}."""
        self._buf += data

    def read_raw(self, count: int) -> None:
        """
        Make the next C{count} bytes, whatever they hold, one L{Raw} item.
        Line framing resumes after them.

        @raise ValueError: C{count} is negative or raw bytes are already
            awaited (the consumer's mistake, not the peer's).
        """
        if count < 0:
            raise ValueError("a raw byte count cannot be negative")
        if self._raw is not None:
            raise ValueError("already reading %d raw bytes" % self._raw)
        self._raw = count
        self._skip_lf = False

    def cancel_raw(self) -> bytes:
        """
        Stop waiting for raw bytes: what was buffered is framed as lines
        again (the head of a payload that never completed was garbage).

        @return: the bytes buffered so far, for the consumer's log.
        """
        if self._raw is None:
            return b""
        self._raw = None
        self._skip_lf = not self._lf_ends_line
        return bytes(self._buf)

    # -- state -------------------------------------------------------------

    @property
    def raw_pending(self) -> Optional[int]:
        """The raw byte count awaited, or C{None} in line mode."""
        return self._raw

    @property
    def buffered(self) -> bytes:
        """The bytes received and not yet returned in an item."""
        return bytes(self._buf)

    # -- output ------------------------------------------------------------

    def __iter__(self) -> Iterator[Item]:
        """Every item that is complete now (stops at L{NEED_DATA})."""
        while True:
            item = self.next()
            if item is NEED_DATA:
                return
            yield item

    def next(self) -> Union[Item, Literal[_Sentinel.NEED_DATA]]:
        """
        @return: the next L{Line}, L{Raw}, L{Dropped} or L{SendtoHeader}, or
            L{NEED_DATA} when the buffer holds no whole item.
        """
        buf = self._buf
        if self._raw is not None:
            if len(buf) < self._raw:
                return NEED_DATA
            data = bytes(buf[:self._raw])
            del buf[:self._raw]
            self._raw = None
            self._skip_lf = not self._lf_ends_line
            return Raw(data)
        if self._dropping is not None:
            return self._drop_more()
        if self._skip_lf and buf:
            self._skip_lf = False
            if buf[0] == LF:
                del buf[:1]
        if not buf:
            return NEED_DATA
        if self._sendto_headers and buf[:1] == b"S":
            header = parse_sendto_header(bytes(buf[:len(_SENDTO) + 6 * (_SENDTO_ARG_MAX + 1)]))
            if header is INCOMPLETE:
                return NEED_DATA
            if header is not None:
                del buf[:len(header.data)]
                return header
        end, after = self._line_end()
        if end < 0:
            if self._unfinished_length() > self.max_line:
                self._dropping = 0
                return self._drop_more()
            return NEED_DATA
        data = self._take_line(end, after)
        if len(data) > self.max_line:
            return Dropped(len(data))
        return Line(data)

    # -- internals ---------------------------------------------------------

    def _line_end(self) -> tuple:
        """
        @return: C{(end, after)}: where the first buffered line end begins and
            where it stops, or C{(-1, -1)}.
        """
        buf = self._buf
        if self.cr_ends_line:
            end, width = buf.find(b"\r"), 1
        else:
            end, width = buf.find(b"\r\n"), 2
        if self._lf_ends_line:
            lf = buf.find(b"\n")
            if lf >= 0 and (end < 0 or lf < end):
                return lf, lf + 1
        if end < 0:
            return -1, -1
        return end, end + width

    def _unfinished_length(self) -> int:
        """
        The length of the unterminated buffered line, not counting a last CR
        that may be the first half of a CR LF.
        """
        n = len(self._buf)
        if n and not self.cr_ends_line and self._buf[-1] == CR:
            n -= 1
        return n

    def _take_line(self, end: int, after: int) -> bytes:
        """Remove the line ending at C{end} and its line end from the buffer."""
        buf = self._buf
        lone_cr = after - end == 1 and buf[end] == CR
        data = bytes(buf[:end])
        del buf[:after]
        # After a lone CR the LF of a CR LF may still come: it is no line.
        self._skip_lf = lone_cr or not self._lf_ends_line
        return data

    def _drop_more(self) -> Union[Dropped, Literal[_Sentinel.NEED_DATA]]:
        """Discard the over-long line in progress, up to its end."""
        dropped = self._dropping or 0  # set by the caller: a line is being dropped
        end, after = self._line_end()
        if end < 0:
            n = self._unfinished_length()
            self._dropping = dropped + n
            del self._buf[:n]
            return NEED_DATA
        count = dropped + end
        self._dropping = None
        self._take_line(end, after)
        return Dropped(count)
