"""A per-process write-ahead journal of queued call records, so a process crash loses none.

Records wait in memory for the background writer (up to a flush interval, longer while the
store is slow); a SIGKILL or OOM kill used to lose them although their responses had been
sent. Now ``Recorder.submit`` (called from the call's after-hook, before the response completes:
before a unary response is returned, and from the stream relay's ``finally`` before the
chunked body's last frame) first appends the record as one JSON line to this journal with a
single ``write()``: no userspace buffer, no fsync. The bytes are in the kernel's page cache
when the call returns, and the page cache outlives the process.

Layout: a directory per spill file; each process owns ``<token>.lock`` (held with ``flock``
for the process's life) and segments ``<token>.<n>.jsonl``. A segment is rotated once it grows
past ``segment_bytes``; each record is released once the writer has made it durable elsewhere
(committed to the store, fsynced to the spill file or the quarantine). A sealed segment whose
records are all released is deleted; the active one is truncated to zero whenever everything in
it is released, so the journal stays about as large as what is in flight.

Recovery: a process adopts the journals of processes that are gone, telling a dead owner from a
live one by whether its lock can be taken (several replicas may share the directory; PIDs are
never trusted). The adopter hands every line to a sink (the spill file, fsynced), then deletes
the segments and the lock file. Lines of records that had already reached the store are written
again harmlessly: inserts are idempotent on ``request_id``.

The window left open: a process crash loses nothing that ``write()`` accepted. A machine crash
(power loss, kernel panic) loses what the kernel had not yet written back: by default up to
about 30 seconds of records (``vm.dirty_expire_centisecs``) that had not reached the store, the
spill file or the quarantine, all three of which are fsynced or committed. Closing that window
needs an fsync per call (or a group commit delaying responses), which the request path is
deliberately not charged.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Journal", "Segment"]

log = logging.getLogger("bastion.recorder")

_LOCK_SUFFIX = ".lock"
_ERROR_LOG_INTERVAL = 60.0


@dataclass(slots=True, eq=False)
class Segment:
    """One journal file and how many of its records are not yet durable elsewhere."""

    path: Path
    fd: int
    size: int = 0
    outstanding: int = 0
    sealed: bool = False


class Journal:
    """This process's journal: a cheap append per record, released once the record is safe."""

    def __init__(self, directory: str | Path, *, segment_bytes: int = 4 << 20) -> None:
        self.directory = Path(directory)
        self._segment_bytes = segment_bytes
        self._token = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self._lock_fd: int | None = None
        self._active: Segment | None = None
        self._sealed: list[Segment] = []
        self._next = 0
        self._last_error = 0.0
        self.errors = 0
        self.closed = False

    @property
    def token(self) -> str:
        """This process's name in the directory."""
        return self._token

    # -- hot path -------------------------------------------------------------------------------

    def append(self, line: bytes) -> Segment | None:
        """Write one record line; the segment to release it from, or None if it could not be
        journaled (the record still goes on, only without crash protection)."""
        if self.closed:
            return None
        try:
            seg = self._active if self._active is not None else self._open_segment()
            n = os.write(seg.fd, line)
            if n != len(line):  # a short write to a regular file: disk full or a signal
                rest = memoryview(line)[n:]
                while rest:
                    rest = rest[os.write(seg.fd, rest) :]
        except OSError as exc:
            self._failed("cannot append to the record journal in %s (%s)", exc)
            return None
        seg.outstanding += 1
        seg.size += len(line)
        if seg.size >= self._segment_bytes:
            self._seal(seg)
        return seg

    def release(self, seg: Segment | None) -> None:
        """One record of ``seg`` is durable elsewhere: drop the segment's data once all are."""
        if seg is None:
            return
        seg.outstanding -= 1
        if seg.outstanding > 0 or self.closed:
            return
        try:
            if seg.sealed:
                self._sealed.remove(seg)
                seg.path.unlink(missing_ok=True)
            elif seg is self._active:
                os.ftruncate(seg.fd, 0)
                seg.size = 0
        except (OSError, ValueError) as exc:
            self._failed("cannot trim the record journal in %s (%s)", exc)

    # -- files ----------------------------------------------------------------------------------

    def open(self) -> None:
        """Create this process's lock and first segment now, so the first call does not pay."""
        if self._active is None and not self.closed:
            try:
                self._open_segment()
            except OSError as exc:
                self._failed("cannot open the record journal in %s (%s)", exc)

    def _open_segment(self) -> Segment:
        if self._lock_fd is None:
            # Locked before it gets its name, so no adopter can ever see it unlocked and take
            # this live process for a dead one.
            self.directory.mkdir(parents=True, exist_ok=True)
            tmp = self.directory / (self._token + _LOCK_SUFFIX + ".new")
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(tmp, self.directory / (self._token + _LOCK_SUFFIX))
            self._lock_fd = fd
        path = self.directory / f"{self._token}.{self._next}.jsonl"
        self._next += 1
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC, 0o600)
        self._active = Segment(path, fd)
        return self._active

    def _seal(self, seg: Segment) -> None:
        """Stop writing to a full segment; it is deleted once its last record is released."""
        seg.sealed = True
        self._active = None
        with contextlib.suppress(OSError):
            os.close(seg.fd)
        if seg.outstanding == 0:
            seg.path.unlink(missing_ok=True)
        else:
            self._sealed.append(seg)

    def _failed(self, msg: str, exc: Exception) -> None:
        self.errors += 1
        now = time.monotonic()
        if now - self._last_error >= _ERROR_LOG_INTERVAL:
            self._last_error = now
            log.error(
                msg + "; records are still written, but a crash now could lose some",
                self.directory,
                exc,
            )

    @property
    def outstanding(self) -> int:
        """Records journaled here and not yet durable elsewhere."""
        active = self._active.outstanding if self._active is not None else 0
        return active + sum(s.outstanding for s in self._sealed)

    def close(self) -> None:
        """Stop journaling; delete this process's files unless records in them are still unsafe
        (then the next process to start adopts them)."""
        if self.closed:
            return
        self.closed = True
        keep = self.outstanding > 0
        if self._active is not None:
            seg, self._active = self._active, None
            with contextlib.suppress(OSError):
                os.close(seg.fd)
            if not keep:
                seg.path.unlink(missing_ok=True)
        if not keep:
            for seg in self._sealed:
                seg.path.unlink(missing_ok=True)
            self._sealed.clear()
        if self._lock_fd is not None:
            if not keep:
                (self.directory / (self._token + _LOCK_SUFFIX)).unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
            self._lock_fd = None
        if keep:
            log.warning(
                "record journal %s keeps %d records not yet in the store; the next start replays them",
                self.directory,
                self.outstanding,
            )

    # -- recovery -------------------------------------------------------------------------------

    def adopt_orphans(self, sink: Callable[[Iterable[bytes]], object]) -> int:
        """Hand the lines of every dead process's journal to ``sink`` (which must make them
        durable or raise), then delete that journal. Returns how many lines were adopted."""
        try:
            locks = sorted(self.directory.glob("*" + _LOCK_SUFFIX))
        except OSError:
            return 0
        for stale in self.directory.glob("*" + _LOCK_SUFFIX + ".new"):
            _remove_if_unlocked(stale)  # a process that died while creating its lock
        total = 0
        for lock in locks:
            token = lock.name[: -len(_LOCK_SUFFIX)]
            if token == self._token:
                continue
            try:
                fd = os.open(lock, os.O_RDWR)
            except FileNotFoundError:
                continue  # adopted by another process just now
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # its owner (or another adopter) is alive
                segments = sorted(
                    self.directory.glob(f"{token}.*.jsonl"), key=lambda p: _segment_number(p)
                )
                lines: list[bytes] = []
                for seg in segments:
                    data = seg.read_bytes()
                    lines.extend(ln + b"\n" for ln in data.split(b"\n") if ln.strip())
                if lines:
                    sink(lines)
                    total += len(lines)
                for seg in segments:
                    seg.unlink(missing_ok=True)
                lock.unlink(missing_ok=True)
                if lines:
                    log.warning(
                        "adopted %d records from the journal of stopped process %s",
                        len(lines),
                        token,
                    )
            finally:
                os.close(fd)
        return total


def _segment_number(path: Path) -> int:
    try:
        return int(path.name.rsplit(".", 2)[-2])
    except (ValueError, IndexError):
        return 0


def _remove_if_unlocked(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        path.unlink(missing_ok=True)
    except OSError:
        pass  # still being created by a live process
    finally:
        os.close(fd)
