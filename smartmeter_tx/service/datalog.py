"""
The data log: one JSON object per line, one file per day.

A line is written whole or not at all: one C{write} of the whole line to a
file opened for appending, then C{fsync}; a short write or a failed sync is
cut back off the file.  A record that cannot be written (disk full, an I/O
error, a directory gone read-only) is dropped and counted, never kept in a
buffer to be written later, so no line is ever written twice; the log warns
once when writing starts failing and once when it recovers.  Before each write
it checks that the day's file is still the one at its path (not deleted,
replaced or moved away with its directory) and opens it again there if not.
A file whose last line was cut short (a power cut) is continued on a new
line, so the torn line stays the only one lost.

The date of a line (and so its file) comes from the reading's own time, not
from when the line was written.

A directory has one writer: the service's data log takes it (L{DataLog.lock},
an exclusive C{flock} on the directory) before it starts and holds it until
it stops, so that a second service on the same directory is refused instead
of writing every line twice.  The readers never take it.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
from typing import Callable, Iterable, Iterator, Optional

from twisted.logger import Logger
from zope.interface import implementer

from smartmeter_tx.errors import SmartMeterError
from smartmeter_tx.model import json_value, parse_json_object
from smartmeter_tx.service.interfaces import Figure, IMetricsSource

__all__ = ["DataLog", "DataLogInUse", "read_history_records"]

#: Bad lines reported one by one per file before a summary.
_BAD_LINES_SHOWN = 5


class DataLogInUse(SmartMeterError):
    """
    Another data log (another service, most likely) holds the directory's lock.

    @ivar directory: the data log's directory.
    """

    def __init__(self, directory: str) -> None:
        super().__init__(f"another data log writes in {directory}")
        self.directory = directory


@implementer(IMetricsSource)
class DataLog:
    """
    Append-only JSON-lines log rotated daily: C{<directory>/<prefix>-YYYY-MM-DD.jsonl}.

    @ivar utc: name files by the UTC date of each record (default: local date,
        as Japanese meters keep local time).
    @ivar lines_written: lines written since start.
    @ivar lines_lost: records dropped because they could not be written.
    @ivar failing: whether the last write failed (and none has succeeded since).
    """

    log = Logger()

    def __init__(self, directory: str, prefix: str = "smartmeter", utc: bool = False,
                 write: Callable[[int, bytes], int] = os.write,
                 fsync: Callable[[int], None] = os.fsync) -> None:
        """
        @param write: C{os.write}; tests give one that fails like a full disk.
        @param fsync: C{os.fsync}, likewise.
        """
        self.directory = directory
        self.prefix = prefix
        self.utc = utc
        self._os_write = write
        self._os_fsync = fsync
        self._path: Optional[str] = None
        self._fd: Optional[int] = None
        self._lock_fd: Optional[int] = None
        self.lines_written = 0
        self.lines_lost = 0
        self.failing = False
        self._lost_while_failing = 0

    def path_for(self, when: float) -> str:
        stamp = (datetime.datetime.fromtimestamp(when, datetime.timezone.utc) if self.utc
                 else datetime.datetime.fromtimestamp(when))
        return os.path.join(self.directory, f"{self.prefix}-{stamp:%Y-%m-%d}.jsonl")

    def write(self, record: dict, when: float) -> bool:
        """
        Append C{record} (plus C{"time"}, the epoch seconds C{when}) as one
        line, whole or not at all.

        @return: whether the line was written; when not, the record is
            dropped and counted in L{lines_lost}.
        """
        line = {"time": round(when, 3)}
        line.update({k: json_value(v) for k, v in record.items()})
        data = (json.dumps(line, sort_keys=True, separators=(",", ":")) + "\n").encode("utf-8")
        try:
            fd = self._open(self.path_for(when))
            self._append(fd, data)
        except OSError as e:
            self._lost(e)
            return False
        if self.failing:
            self.failing = False
            self.log.warn("the data log is written again; {n} records were lost while it "
                          "could not be", n=self._lost_while_failing)
            self._lost_while_failing = 0
        self.lines_written += 1
        return True

    def metrics(self) -> list:
        """
        @return: the data log's L{Figure}s, for C{/metrics}.
        """
        return [
            Figure("smartmeter_datalog_lines", "counter", "Lines written to the data log",
                   self.lines_written),
            Figure("smartmeter_datalog_lost", "counter",
                   "Records the data log could not write (disk full, I/O error)",
                   self.lines_lost),
            Figure("smartmeter_datalog_failing", "gauge",
                   "1 while the data log cannot be written", 1 if self.failing else 0),
        ]

    def history_records(self, since: datetime.date) -> list:
        """See L{read_history_records}, for this log's directory and prefix."""
        return read_history_records(self.directory, self.prefix, since)

    def readings(self, since: float, until: float) -> Iterator[tuple[float, dict]]:
        """
        The reading records (no C{kind}) taken from C{since} to C{until}
        (epoch seconds), from the files that can hold them: a file is named by
        the host's date or UTC's, not Japan's, so a Japanese day may span two.
        Of a file over L{READ_LIMIT} bytes only its last L{READ_LIMIT} are
        read: a day at a one-second interval is well under it.  Damaged lines
        are skipped with a warning; reading takes no lock.

        @return: C{(time, record)}, in file order, read as they are asked for.
        """
        paths = {self.path_for(until)}
        t = since
        while t < until:  # hourly and both ends: no date of the span is missed
            paths.add(self.path_for(t))
            t += 3600
        for path in sorted(paths):
            try:
                with open(path, "rb") as f:
                    size = f.seek(0, os.SEEK_END)
                    start = f.seek(max(0, size - READ_LIMIT))
                    where = path
                    if start:
                        f.readline()  # the cut line
                        where = f"{path} from byte {f.tell()}"  # lines counted from there
                    for record in _records(f, where, lambda text: '"kind"' not in text):
                        when = record.get("time")
                        if (isinstance(when, (int, float)) and not isinstance(when, bool)
                                and since <= when <= until):
                            yield float(when), record
            except FileNotFoundError:
                continue  # no reading that day
            except OSError as e:
                self.log.warn("cannot read the data log {path}: {why}", path=path,
                              why=e.strerror or str(e))

    def last_reading_time(self) -> Optional[float]:
        """
        When the newest reading in the log was taken (its C{time}), from the
        tail of the newest file; C{None} when there is none.
        """
        try:
            names = sorted(n for n in os.listdir(self.directory)
                           if n.startswith(self.prefix + "-") and n.endswith(".jsonl"))
        except OSError:
            return None
        for name in reversed(names):
            try:
                with open(os.path.join(self.directory, name), "rb") as f:
                    f.seek(max(0, f.seek(0, os.SEEK_END) - _TAIL))
                    lines = f.read().split(b"\n")
            except OSError:
                continue
            for raw in reversed(lines):
                record = parse_json_object(raw)  # None: a cut or damaged line
                if record is not None and "kind" not in record and isinstance(
                        record.get("time"), (int, float)):
                    return float(record["time"])
        return None

    def lock(self) -> None:
        """
        Take the directory for this data log alone, until L{close}: an
        exclusive C{flock} on the directory itself, which the kernel drops
        when the process ends, however it ends (kill -9, a power cut), so no
        lock is ever left stale, and which leaves no file behind.  Taking it
        again is a no-op.

        @raise DataLogInUse: another data log, of this process or another,
            holds it.
        @raise OSError: the directory cannot be opened or locked (it is
            missing, not readable, or on a file system without C{flock} on
            directories, such as NFS).
        """
        if self._lock_fd is not None:
            return
        fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DataLogInUse(self.directory) from None
        except OSError:
            os.close(fd)
            raise
        self._lock_fd = fd

    def close(self) -> None:
        """Close the day's file and give up the directory's lock (the service stops)."""
        self._close_file()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # which drops the lock
            self._lock_fd = None

    def _close_file(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd = None
        self._path = None

    # -- writing -----------------------------------------------------------------

    def _open(self, path: str) -> int:
        """
        The open file of C{path}: the one already open if it is still the
        file at that path, else C{path} opened again (its directory created),
        continuing a torn last line on a new line.
        """
        if self._fd is not None and path == self._path:
            if self._still_there(self._fd, path):
                return self._fd
            self.log.warn("the data log {path} was deleted, replaced or moved away; "
                          "opening it again there", path=path)
        self._close_file()  # the lock stays: the service still writes here
        os.makedirs(self.directory, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                # The last line was cut short (a power cut mid-write): the
                # next record starts on a line of its own.
                self._append(fd, b"\n")
        except OSError:
            os.close(fd)
            raise
        self._fd, self._path = fd, path
        return fd

    @staticmethod
    def _still_there(fd: int, path: str) -> bool:
        try:
            at_path = os.stat(path)
        except FileNotFoundError:
            return False
        open_file = os.fstat(fd)
        return (at_path.st_dev, at_path.st_ino) == (open_file.st_dev, open_file.st_ino)

    def _append(self, fd: int, data: bytes) -> None:
        """
        Write C{data} at the end of C{fd} and sync it, or leave the file as it
        was.

        @raise OSError: nothing of C{data} stays in the file.
        """
        size = os.fstat(fd).st_size
        try:
            written = self._os_write(fd, data)
            if written != len(data):
                raise OSError(errno.ENOSPC, f"short write ({written} of {len(data)} bytes)")
            # One fsync per line (a reading every 30 s by default): a power cut
            # on a Raspberry Pi then loses at most the line being written.
            self._os_fsync(fd)
        except OSError:
            try:
                os.ftruncate(fd, size)
            except OSError:
                pass  # nothing more can be done; the reader skips a torn line
            raise

    def _lost(self, error: OSError) -> None:
        self.lines_lost += 1
        self._lost_while_failing += 1
        if not self.failing:
            self.failing = True
            self.log.warn("cannot write the data log in {directory}: {why}; readings are "
                          "dropped (and counted) until it can be written again",
                          directory=self.directory, why=error.strerror or str(error))
        self._close_file()  # the next write opens the file anew


#: Bytes read from the end of a file for its newest reading: many lines.
_TAIL = 65536
#: Bytes of one file that L{DataLog.readings} reads at most (its end): a
#: day at a one-second interval takes about 7 MB.
READ_LIMIT = 32 * 1024 * 1024


def read_history_records(directory: str, prefix: str, since: datetime.date) -> list:
    """
    The C{kind: history} records of the data-log files dated C{since} or later
    (a slot is written after its own date, so these hold every slot since
    then).  A line that is not UTF-8 JSON (a power cut mid-line, a damaged
    disk), or is nested too deeply to parse, is skipped with a warning naming
    the file and line.  Reading takes no lock: the service may be writing.

    @return: the records as dicts, in file order.
    """
    records: list = []
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return records
    first = f"{prefix}-{since:%Y-%m-%d}.jsonl"
    for name in names:
        if not (name.startswith(prefix + "-") and name.endswith(".jsonl")) or name < first:
            continue
        path = os.path.join(directory, name)
        try:
            with open(path, "rb") as f:
                records.extend(_history_lines(f, path))
        except OSError as e:
            DataLog.log.warn("cannot read the data log {path}: {why}", path=path,
                             why=e.strerror or str(e))
    return records


def _history_lines(lines: Iterable[bytes], path: str) -> list[dict]:
    return [record for record in _records(lines, path, lambda text: '"history"' in text)
            if record.get("kind") == "history"]


def _records(lines: Iterable[bytes], path: str, wanted: Callable[[str], bool]) -> Iterator[dict]:
    """
    The JSON objects of the lines whose text is C{wanted} (a cheap test
    before the parse: the others are not parsed); a line that is no JSON
    object is skipped, the first few with a warning each, the rest counted.
    """
    bad = 0
    for number, raw in enumerate(lines, 1):
        raw = raw.rstrip(b"\n")
        record = None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = ""  # a bad line
        # Every line is a compact object: a cut one does not end in "}".
        if text.startswith("{") and text.endswith("}"):
            if not wanted(text):
                continue
            record = parse_json_object(text)
        if record is None:
            if raw:
                bad += 1
                if bad <= _BAD_LINES_SHOWN:
                    DataLog.log.warn("skipping line {number} of {path}: not a JSON record",
                                     number=number, path=path)
            continue
        yield record
    if bad > _BAD_LINES_SHOWN:
        DataLog.log.warn("skipped {n} more bad lines in {path}", n=bad - _BAD_LINES_SHOWN,
                         path=path)
