"""Following a journal that is still being written: new complete lines, fed into one :class:`RunRecord`.

``Follower(path).poll()`` reads what was appended since the last call (a line still being written is
kept for the next call), feeds each event into ``record`` and returns the new events in order, so a
live reader (``gpu-stress watch``) sees the same record as every other reader, one event at a time.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from stress.record.fold import RunRecord

READ_LIMIT = 8 << 20   # bytes per poll: a long journal is caught up over several polls, in bounded memory


class Follower:
    def __init__(self, path: str | os.PathLike, record: RunRecord | None = None):
        self.path = Path(path)
        self.record = record if record is not None else RunRecord()
        self.offset = 0
        self._partial = b""
        self.bad_lines = 0

    def poll(self) -> list[dict]:
        """The events appended since the last poll (already fed into ``record``); [] when none or
        when the file cannot be read now."""
        try:
            with open(self.path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                if size < self.offset:          # replaced or truncated: start over
                    self.offset, self._partial = 0, b""
                fh.seek(self.offset)
                chunk = fh.read(READ_LIMIT)
        except OSError:
            return []
        self.offset += len(chunk)
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()           # b"" when the chunk ended on a newline
        out = []
        for line in lines:
            if not line.strip():
                continue
            try:
                ev = json.loads(line)
            except ValueError:
                ev = None
            if type(ev) is not dict:
                self.bad_lines += 1
                continue
            self.record.feed(ev)
            out.append(ev)
        return out
