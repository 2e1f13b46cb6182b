"""Large notebook values shared with local workers instead of copied into each.

A value the cell reads is pickled with protocol 5: NumPy arrays, and the arrays inside pandas
frames and SciPy sparse matrices, come out as out-of-band buffers (the pickle itself keeps only
their shapes and types). Where those buffers are large, the run writes them once, when it
starts, into one anonymous shared-memory file (Linux's ``memfd``), and every worker on this
machine maps that file read-only and rebuilds the values around it: no copy per worker, and a
write from a trial fails (read-only) instead of changing the other workers' data.

The file has no name in ``/dev/shm``: it lives while the kernel holds it open or a worker maps
it, so it is gone when the run ends and its workers exit, and also when the kernel is killed
(its workers exit when their connection to it breaks). Where there is no ``memfd`` (macOS), it is
a file in the temporary folder, removed when the run ends, and a later run removes the files of
kernels that died.
"""

from __future__ import annotations

import glob
import mmap
import os
import pickle
import tempfile
from dataclasses import dataclass
from typing import Any

SHARE_MIN_BYTES = 1 << 20  # a value whose buffers total less travels inside the pickle, as before
ALIGN = 64  # each buffer starts on a cache line (and so on any dtype's alignment)
_FALLBACK_PREFIX = "hpt_jupyter-shared-"


def layout(sizes: list[int]) -> tuple[list[tuple[int, int]], int]:
    """``([(offset, length), ...], total)``: the buffers one after another, aligned."""
    spans, offset = [], 0
    for size in sizes:
        spans.append((offset, size))
        offset += -(-size // ALIGN) * ALIGN
    return spans, offset


def readable_bytes(size: int) -> str:
    """``400 MB``, ``1.5 GB``."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            value = size / scale
            return f"{value:.1f} {unit}" if value < 10 else f"{value:.0f} {unit}"
    return f"{size} bytes"


class SharedData:
    """The out-of-band buffers of a run's shipment, in one shared file while the run's workers
    live. ``open`` writes them and returns the path a worker on this machine maps."""

    def __init__(self, buffers: tuple[pickle.PickleBuffer, ...]) -> None:
        self.buffers = buffers
        self.spans, self.size = layout([b.raw().nbytes for b in buffers])
        self.path: str | None = None
        self._fd: int | None = None
        self._fallback: str | None = None

    def open(self) -> str:
        if self.path is not None:
            return self.path
        if hasattr(os, "memfd_create"):
            fd = os.memfd_create("hpt_jupyter-data", os.MFD_CLOEXEC)
            # Another process opens it through the kernel's descriptor (same user, same machine).
            path = f"/proc/{os.getpid()}/fd/{fd}"
        else:
            remove_stale_files()
            fd, path = tempfile.mkstemp(prefix=f"{_FALLBACK_PREFIX}{os.getpid()}-")
            self._fallback = path
        try:
            if self.size:
                os.ftruncate(fd, self.size)
                with mmap.mmap(fd, self.size) as target:
                    for buffer, (offset, length) in zip(self.buffers, self.spans):
                        target[offset:offset + length] = buffer.raw()
        except BaseException:
            os.close(fd)
            if self._fallback:
                os.unlink(self._fallback)
            raise
        self._fd, self.path = fd, path
        return path

    def close(self) -> None:
        """The kernel lets go; the memory is freed once no worker maps it any more."""
        if self._fd is not None:
            os.close(self._fd)
        if self._fallback is not None:
            try:
                os.unlink(self._fallback)
            except FileNotFoundError:
                pass
        self._fd = self.path = self._fallback = None


def remove_stale_files() -> None:
    """Files of kernels that died before removing them (only where there is no memfd)."""
    import psutil

    for path in glob.glob(os.path.join(tempfile.gettempdir(), f"{_FALLBACK_PREFIX}*")):
        try:
            pid = int(os.path.basename(path)[len(_FALLBACK_PREFIX):].split("-")[0])
        except ValueError:
            continue
        if not psutil.pid_exists(pid):
            try:
                os.unlink(path)
            except OSError:
                pass


class MappedData:
    """In a worker: the shared file, mapped read-only for the worker's lifetime (the values
    rebuilt around it point into it)."""

    def __init__(self, path: str, size: int) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            self.map = mmap.mmap(fd, size, prot=mmap.PROT_READ) if size else None
        finally:
            os.close(fd)
        self.view = memoryview(self.map) if self.map is not None else memoryview(b"")

    def buffers(self, spans: list[tuple[int, int]]) -> list[memoryview]:
        return [self.view[offset:offset + length] for offset, length in spans]
