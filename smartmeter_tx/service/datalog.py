"""
The data log: one JSON object per line, one file per day.

Each line is written with a single C{write} of the whole line and flushed at
once, so a power cut loses at most the line being written; files are opened in
append mode and never truncated, so a restart continues the day's file.  The
date of a line (and so its file) comes from the reading's own time, not from
when the line was written.
"""

from __future__ import annotations

import datetime
import json
import os
from typing import Optional, TextIO

from smartmeter_tx.model import json_value

__all__ = ["DataLog"]


class DataLog:
    """
    Append-only JSON-lines log rotated daily: C{<directory>/<prefix>-YYYY-MM-DD.jsonl}.

    @ivar utc: name files by the UTC date of each record (default: local date,
        as Japanese meters keep local time).
    """

    def __init__(self, directory: str, prefix: str = "smartmeter", utc: bool = False) -> None:
        self.directory = directory
        self.prefix = prefix
        self.utc = utc
        self._day: Optional[str] = None
        self._file: Optional[TextIO] = None
        self.lines_written = 0

    def path_for(self, when: float) -> str:
        stamp = (datetime.datetime.fromtimestamp(when, datetime.timezone.utc) if self.utc
                 else datetime.datetime.fromtimestamp(when))
        return os.path.join(self.directory, f"{self.prefix}-{stamp:%Y-%m-%d}.jsonl")

    def write(self, record: dict, when: float) -> None:
        """
        Append C{record} (plus C{"time"}, the epoch seconds C{when}) as one line.

        @raise OSError: the file cannot be written (the caller logs it; the
            service goes on).
        """
        path = self.path_for(when)
        file = self._file
        if path != self._day or file is None:
            self.close()
            os.makedirs(self.directory, exist_ok=True)
            file = self._file = open(path, "a", encoding="utf-8")
            self._day = path
        line = {"time": round(when, 3)}
        line.update({k: json_value(v) for k, v in record.items()})
        file.write(json.dumps(line, sort_keys=True, separators=(",", ":")) + "\n")
        file.flush()
        # One fsync per reading (every 30 s by default): a power cut on a
        # Raspberry Pi then loses at most the line being written.
        os.fsync(file.fileno())
        self.lines_written += 1

    def history_records(self, since: datetime.date) -> list:
        """
        The C{kind: history} records of the files dated C{since} or later (a
        slot is written after its own date, so these hold every slot since
        then).  Lines that are not JSON (a power cut mid-line) are skipped.

        @return: the records as dicts, in file order.
        """
        records: list = []
        try:
            names = sorted(os.listdir(self.directory))
        except OSError:
            return records
        first = f"{self.prefix}-{since:%Y-%m-%d}.jsonl"
        for name in names:
            if not (name.startswith(self.prefix + "-") and name.endswith(".jsonl")) or name < first:
                continue
            try:
                with open(os.path.join(self.directory, name), encoding="utf-8") as f:
                    for line in f:
                        if '"history"' not in line:
                            continue  # cheap: most lines are readings
                        try:
                            record = json.loads(line)
                        except ValueError:
                            continue
                        if isinstance(record, dict) and record.get("kind") == "history":
                            records.append(record)
            except OSError:
                continue
        return records

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        self._file = None
        self._day = None
