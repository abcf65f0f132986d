"""A gzip file written in segments of their own compression level, still one ordinary gzip member.

Each segment is a raw deflate stream ended by a full flush (byte-aligned, nothing referenced back),
so the next can start with another level; only the last is finished. This is how pigz joins blocks
compressed apart: every reader (gzip, GNU tar, libarchive, Python's gzip and tarfile, streaming
``r|gz`` included) sees one member. The bundle uses it to store what is compressed already (the
journal copy, the nvidia-bug-report log) instead of deflating it a second time: 4 MB of gzip data
cost 0.11 s at any level and shrink by under 1%.
"""
from __future__ import annotations

import struct
import zlib
from typing import BinaryIO

STORED = 0


class GzipSegments:
    """A writable, ``tell()``-able file object (what ``tarfile.open(fileobj=..., mode="w")`` needs)
    over ``raw``; :meth:`level` switches the level for what is written next; :meth:`close` ends it."""

    def __init__(self, raw: BinaryIO, *, level: int = 6, mtime: int = 0) -> None:
        self.raw = raw
        self.closed = False
        self._crc = 0
        self._size = 0
        self._level = level
        # RFC 1952 header: deflate, no flags (no file name), mtime, no extra flags, OS unknown.
        raw.write(b"\x1f\x8b\x08\x00" + struct.pack("<I", mtime & 0xFFFFFFFF) + b"\x00\xff")
        self._c = self._new(level)

    @staticmethod
    def _new(level: int):
        return zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)

    def write(self, data: bytes) -> int:
        data = bytes(data)
        self._crc = zlib.crc32(data, self._crc)
        self._size += len(data)
        self.raw.write(self._c.compress(data))
        return len(data)

    def tell(self) -> int:
        return self._size     # uncompressed bytes written: the offset tarfile keeps

    def level(self, level: int) -> None:
        if level == self._level:
            return
        self.raw.write(self._c.flush(zlib.Z_FULL_FLUSH))
        self._c, self._level = self._new(level), level

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.raw.write(self._c.flush(zlib.Z_FINISH))
        self.raw.write(struct.pack("<II", self._crc & 0xFFFFFFFF, self._size & 0xFFFFFFFF))

    def __enter__(self) -> "GzipSegments":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
