"""Call records and spend-ledger entries, written off the request path and never lost.

The path of a record:

    submit ─► journal line (one write(), see journal.py) ─► bounded queue ─► background writer
    writer ─► sanitise (store/sanitize.py) ─► batch insert ─┬─ committed: release the journal line
                                                            ├─ store unreachable: spill file
                                                            └─ refused: record by record

Two failures are kept apart. *The store is unreachable* (``StateUnavailable``, or any failure
while a ``ping`` fails too): every record is kept, in the fsynced spill file, and replayed once
the store answers. *The store refuses a record* (any other failure while it answers): the batch
is retried record by record so the good ones land, and each record still refused goes to the
quarantine file with the store's reason and a log line naming its request id; it never blocks
the records behind it. Replay works the same way, chunk by chunk, and puts back (durably) only
what it could not write because the store went away again; a line that is not a record is
quarantined as text. Inserts are idempotent on ``request_id``, so replaying a journal or a
spill file that partly reached the store never duplicates a row.

On start, and every ``retry_interval``, the journals of processes that died are moved into the
spill file (see journal.py for the crash window).

Quarantine lines are spill lines plus ``reason`` and ``at``: once the cause is fixed, moving the
quarantine file to the spill path retries every record in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Final

import orjson

from ..errors import StateUnavailable
from ..store import CallRecord, LedgerEntry, RecordStore
from ..store.sanitize import sanitize_call, sanitize_entry
from .journal import Journal, Segment
from .spill import JsonlFile

log = logging.getLogger("bastion.recorder")

_OPTS: Final = orjson.OPT_NON_STR_KEYS | orjson.OPT_APPEND_NEWLINE
_REASON_MAX: Final = 500
_LOG_ID_MAX: Final = 80
_CALL_FIELDS: Final = frozenset(f.name for f in dataclasses.fields(CallRecord))
_LEDGER_FIELDS: Final = frozenset(f.name for f in dataclasses.fields(LedgerEntry))


@dataclass(slots=True)
class RecorderStats:
    queued: int = 0
    written: int = 0
    spilled: int = 0
    replayed: int = 0
    dropped: int = 0  # could be written nowhere but the journal (the next start replays them)
    store_errors: int = 0
    sanitized: int = 0
    quarantined: int = 0
    adopted: int = 0  # lines taken over from the journals of dead processes
    journal_errors: int = 0


@dataclass(slots=True, eq=False)
class _Entry:
    """One call's record and ledger entry, and where it is journaled until it is safe."""

    call: CallRecord | None
    ledger: LedgerEntry | None
    segment: Segment | None = None
    line: bytes | None = None  # the spill line it was read from, put back as is if need be
    sanitized: bool = False

    @property
    def request_id(self) -> str:
        """The id for a log line: quoted and short, so no value can forge or flood a line."""
        rec = self.call or self.ledger
        rid = rec.request_id if rec is not None else "?"
        return repr(rid if len(rid) <= _LOG_ID_MAX else rid[:_LOG_ID_MAX] + "…")


class _Undecodable(ValueError):
    """A spill or journal line that is not a record (torn by a crash, or from elsewhere)."""


def _build(cls: type[Any], fields: frozenset[str], obj: Any) -> Any:
    if obj is None:
        return None
    if not isinstance(obj, dict):
        raise _Undecodable(f"expected an object, got {type(obj).__name__}")
    try:
        return cls(**{k: v for k, v in obj.items() if k in fields})
    except TypeError as exc:
        raise _Undecodable(str(exc)) from None


def _decode(line: bytes) -> _Entry:
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise _Undecodable(f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise _Undecodable("not a JSON object")
    entry = _Entry(
        _build(CallRecord, _CALL_FIELDS, obj.get("call")),
        _build(LedgerEntry, _LEDGER_FIELDS, obj.get("ledger")),
    )
    if entry.call is None and entry.ledger is None:
        raise _Undecodable("neither a call record nor a ledger entry")
    return entry


def _first_line(exc: BaseException) -> str:
    """Type and first line: a driver's DETAIL can quote the whole row, prompt included."""
    return f"{type(exc).__name__}: {str(exc).split(chr(10), 1)[0]}"


def _reason(exc: BaseException) -> str:
    """The store's error as one printable line (it may quote the hostile value itself)."""
    text = _first_line(exc)
    cause = exc.__cause__
    if cause is not None:  # an outage's cause names what failed (the store's own message may not)
        text += f" ({_first_line(cause)})"
    text = text[: _REASON_MAX * 2]
    text = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)
    return text if len(text) <= _REASON_MAX else text[:_REASON_MAX] + "…"


# the longest line replay reads at once: a longer one (no record is near it) comes in pieces,
# each quarantined as not a record, so a corrupt spill file cannot take the memory with it
_LINE_MAX = 16 << 20


def _read_lines(f: BinaryIO, k: int) -> list[bytes]:
    """Up to ``k`` non-blank lines of ``f``, each ending in a newline (the last may not have
    had one)."""
    out: list[bytes] = []
    while len(out) < k:
        line = f.readline(_LINE_MAX)
        if not line:
            break
        if line.strip():
            out.append(line if line.endswith(b"\n") else line + b"\n")
    return out


class Recorder:
    """Bounded queue → batched store writes; a journal for crashes, a spill file for outages,
    a quarantine for records the store refuses."""

    def __init__(
        self,
        store: RecordStore,
        spill_path: str | Path,
        *,
        max_queue: int = 2_000,
        batch_size: int = 500,
        flush_interval: float = 0.2,
        retry_interval: float = 1.0,
        journal: bool = True,
        journal_dir: str | Path | None = None,
        quarantine_path: str | Path | None = None,
        journal_segment_bytes: int = 4 << 20,
        ping_timeout: float = 5.0,
    ) -> None:
        spill = Path(spill_path)
        self._store = store
        self._spill = JsonlFile(spill)
        self._quarantine = JsonlFile(
            quarantine_path
            if quarantine_path is not None
            else spill.with_suffix(".quarantine.jsonl")
        )
        self._journal = (
            Journal(
                journal_dir if journal_dir is not None else spill.with_suffix(".journal"),
                segment_bytes=journal_segment_bytes,
            )
            if journal
            else None
        )
        self._max = max_queue
        self._batch = batch_size
        self._interval = flush_interval
        self._retry = retry_interval
        self._ping_timeout = ping_timeout
        self._queue: deque[_Entry] = deque()
        self._overflow: list[_Entry] = []
        self._wake = asyncio.Event()
        self._replay_lock = asyncio.Lock()
        self._flush_lock = asyncio.Lock()  # one writer of the queue at a time (``flush``)
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._closed = False
        self._down_since: float | None = None
        self._down_records = 0
        self.stats = RecorderStats()

    @property
    def spill_path(self) -> Path:
        return self._spill.path

    @property
    def quarantine_path(self) -> Path:
        return self._quarantine.path

    @property
    def journal_dir(self) -> Path | None:
        return self._journal.directory if self._journal is not None else None

    # -- hot path -----------------------------------------------------------------------------

    def submit(self, record: CallRecord | None, ledger: LedgerEntry | None = None) -> None:
        """Journal the record (one write, no fsync) and queue it; never waits for the store.

        Overflow is parked in a second bounded buffer that the background task spills in
        one write per batch (an fsync per record on the event loop stalled every call);
        only when that is full too does a call spill its own record.
        """
        entry = _Entry(record, ledger)
        if self._journal is not None:
            try:
                entry.segment = self._journal.append(self._encode(entry))
            except (orjson.JSONEncodeError, TypeError):  # not even its sanitised form encodes
                entry.segment = None
            if entry.segment is None:
                self.stats.journal_errors += 1
        if self._closed:  # a stream that ended after shutdown: nobody will drain the queue
            self._settle([entry], self._spill_entries([entry]))
            return
        if len(self._queue) >= self._max:
            if len(self._overflow) < self._batch * 4:
                self._overflow.append(entry)
                self._wake.set()
            else:
                parked = [*self._overflow, entry]
                self._overflow.clear()
                self._settle(parked, self._spill_entries(parked))
            return
        self._queue.append(entry)
        self.stats.queued += 1
        if len(self._queue) >= self._batch:
            self._wake.set()

    def _encode(self, entry: _Entry) -> bytes:
        """One JSON line; a record orjson cannot encode (lone surrogates, huge ints) is
        sanitised first, which the writer would do anyway."""
        try:
            return orjson.dumps(
                {"call": entry.call, "ledger": entry.ledger}, default=str, option=_OPTS
            )
        except (orjson.JSONEncodeError, TypeError):
            self._sanitize(entry)
            return orjson.dumps(
                {"call": entry.call, "ledger": entry.ledger}, default=str, option=_OPTS
            )

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        if self._journal is not None:
            self._journal.open()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="bastion-recorder"
            )

    async def aclose(self) -> None:
        """Drain what is queued (to the store, or to the spill file if it is down)."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._queue or self._overflow:
            await self.flush()
        self._closed = True
        if self._journal is not None:
            self._journal.close()

    async def flush(self) -> None:
        """Write everything queued now; on store failure it lands in the spill file.

        Returns once every record submitted before the call is written, including a batch
        the background task had already taken off the queue and is still writing (without
        the lock, a flush that found the queue empty returned while that write was in flight,
        and a caller that then read the store missed the record)."""
        async with self._flush_lock:
            if self._overflow:
                parked, self._overflow = self._overflow, []
                self._settle(parked, await asyncio.to_thread(self._spill_entries, parked))
            while self._queue:
                n = min(self._batch, len(self._queue))
                await self._write([self._queue.popleft() for _ in range(n)])

    @property
    def pending(self) -> int:
        return len(self._queue) + len(self._overflow)

    # -- background ---------------------------------------------------------------------------

    async def _run(self) -> None:
        last_replay = float("-inf")
        loop = asyncio.get_running_loop()
        while True:
            try:
                if not self._queue and not self._closing:
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self._interval):
                            await self._wake.wait()
                await self.flush()
                now = loop.time()
                if now - last_replay >= self._retry:
                    last_replay = now
                    if not self._closing:
                        await self._adopt_orphans()
                    if self._spill.exists():
                        await self.replay()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not stop recording for the process's life
                log.exception("the record writer failed; it carries on")
                if not self._closing:
                    await asyncio.sleep(self._interval)
            if self._closing:
                return

    async def _adopt_orphans(self) -> None:
        if self._journal is None:
            return
        try:
            n = await asyncio.to_thread(self._journal.adopt_orphans, self._spill.append)
        except OSError as exc:
            log.error("cannot adopt the record journals in %s (%s)", self._journal.directory, exc)
            return
        self.stats.adopted += n

    async def _write(self, batch: list[_Entry]) -> None:
        for e in batch:
            self._sanitize(e)
        landed, kept = await self._deliver(batch)
        self.stats.written += landed
        if kept:
            self._settle(kept, await asyncio.to_thread(self._spill_entries, kept))

    # -- store --------------------------------------------------------------------------------

    async def _insert(self, entries: list[_Entry]) -> None:
        ledger = [e.ledger for e in entries if e.ledger is not None]
        calls = [e.call for e in entries if e.call is not None]
        if ledger and calls:
            # both at once: a pooled store writes the two tables on two connections in
            # parallel (PostgreSQL at 5,000 records/s needs it); both inserts are idempotent,
            # so if one fails the whole batch is simply retried or spilled as before
            done = await asyncio.gather(
                self._store.insert_ledger(ledger),
                self._store.insert_calls(calls),
                return_exceptions=True,
            )
            for outcome in done:
                if isinstance(outcome, BaseException):
                    raise outcome
            return
        if ledger:
            await self._store.insert_ledger(ledger)
        if calls:
            await self._store.insert_calls(calls)

    async def _reachable(self) -> bool:
        """Whether the store answers at all: tells an outage from a record it refuses."""
        try:
            async with asyncio.timeout(self._ping_timeout):
                await self._store.ping()
        except asyncio.CancelledError:
            raise
        except Exception:
            return False
        return True

    async def _deliver(self, entries: list[_Entry]) -> tuple[int, list[_Entry]]:
        """Write sanitised entries: (how many landed, the ones to keep for later).

        Refused records are quarantined here; kept ones are those the store could not take
        because it is unreachable (or the quarantine file could not be written).
        """
        if not entries:
            return 0, []
        first: BaseException | None = None
        try:
            await self._insert(entries)
        except StateUnavailable as exc:
            self._unreachable(exc, len(entries))
            return 0, entries
        except Exception as exc:  # the store answered, or is broken: find out which
            if not await self._reachable():
                self._unreachable(exc, len(entries))
                return 0, entries
            first = exc
        else:
            self._recovered()
            for e in entries:
                self._release(e)
            return len(entries), []
        self._recovered()
        if len(entries) > 1:
            log.warning(
                "record store refused a batch of %d (%s); writing it record by record",
                len(entries),
                _reason(first),
            )
            first = None  # one record's fault or not: each is tried alone
        landed = 0
        kept: list[_Entry] = []
        for i, e in enumerate(entries):
            err = first
            if err is None:
                try:
                    await self._insert([e])
                except StateUnavailable as exc2:
                    self._unreachable(exc2, len(entries) - i)
                    return landed, kept + entries[i:]
                except Exception as exc2:
                    if not await self._reachable():
                        self._unreachable(exc2, len(entries) - i)
                        return landed, kept + entries[i:]
                    err = exc2
                else:
                    landed += 1
                    self._release(e)
                    continue
            if not await self._quarantine_entry(e, _reason(err)):
                kept.append(e)
        return landed, kept

    def _unreachable(self, exc: BaseException, n: int) -> None:
        self.stats.store_errors += 1
        self._down_records += n
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.warning(
                "record store unreachable (%s); records are kept in %s and replayed when it answers",
                _reason(exc),
                self._spill.path,
            )

    def _recovered(self) -> None:
        if self._down_since is not None:
            log.warning(
                "record store answers again after %.1fs; %d record writes were deferred meanwhile",
                time.monotonic() - self._down_since,
                self._down_records,
            )
            self._down_since = None
            self._down_records = 0

    # -- sanitise, spill, quarantine ------------------------------------------------------------

    def _sanitize(self, entry: _Entry) -> None:
        if entry.sanitized:
            return
        entry.sanitized = True
        fixed: tuple[str, ...] = ()
        if entry.call is not None:
            entry.call, fixed = sanitize_call(entry.call)
        if entry.ledger is not None:
            entry.ledger, fixed_l = sanitize_entry(entry.ledger)
            fixed = tuple(sorted({*fixed, *(f"ledger.{f}" for f in fixed_l)}))
        if fixed:
            self.stats.sanitized += 1
            log.warning(
                "record %s sanitised before writing (NUL, bad surrogates, over-long or "
                "non-finite values) in: %s",
                entry.request_id,
                ", ".join(fixed),
            )

    def _spill_entries(self, entries: list[_Entry]) -> bool:
        """Append entries to the spill file durably (runs in a thread); False if impossible."""
        try:
            self._spill.append(e.line if e.line is not None else self._encode(e) for e in entries)
        except OSError as exc:
            self.stats.dropped += len(entries)
            log.error(
                "cannot write the spill file %s (%s); %d records stay only in the journal "
                "(replayed at the next start)",
                self._spill.path,
                exc,
                len(entries),
            )
            return False
        self.stats.spilled += len(entries)
        return True

    def _settle(self, entries: list[_Entry], durable: bool) -> None:
        if durable:
            for e in entries:
                self._release(e)

    def _release(self, entry: _Entry) -> None:
        if self._journal is not None and entry.segment is not None:
            self._journal.release(entry.segment)
            entry.segment = None

    async def _quarantine_entry(self, entry: _Entry, reason: str) -> bool:
        line = orjson.dumps(
            {"reason": reason, "at": time.time(), "call": entry.call, "ledger": entry.ledger},
            default=str,
            option=_OPTS,
        )
        if not await self._quarantine_lines([line]):
            return False
        self.stats.quarantined += 1
        self._release(entry)
        log.error(
            "record %s refused by the record store and quarantined in %s: %s",
            entry.request_id,
            self._quarantine.path,
            reason,
        )
        return True

    async def _quarantine_lines(self, lines: list[bytes]) -> bool:
        try:
            await asyncio.to_thread(self._quarantine.append, lines)
        except OSError as exc:
            log.error("cannot write the quarantine file %s (%s)", self._quarantine.path, exc)
            return False
        return True

    # -- replay -------------------------------------------------------------------------------

    async def replay(self) -> int:
        """Move spilled records into the store, chunk by chunk; what the store refuses is
        quarantined, what it cannot take now is put back. Returns how many landed."""
        async with self._replay_lock:
            work = await asyncio.to_thread(self._spill.claim)
            if work is None:
                return 0
            try:
                return await self._replay_file(work)
            finally:
                self._spill.release()

    async def _replay_file(self, work: Path) -> int:
        """Replay ``work`` one batch of lines at a time: memory stays one batch, whatever the
        size of a spill file a long outage left (reading it whole held it twice over)."""
        if not await self._reachable():
            return 0  # keep the file as it is; nothing is rewritten during an outage
        landed = 0
        n = 0  # the non-blank lines read so far: a quarantined line is named by its number
        with work.open("rb") as f:
            while lines := await asyncio.to_thread(_read_lines, f, self._batch):
                entries: list[_Entry] = []
                for line in lines:
                    n += 1
                    try:
                        entry = _decode(line)
                    except _Undecodable as exc:
                        if not await self._quarantine_raw(work, n, line, str(exc)):
                            return landed  # keep the whole file; nothing was lost
                        continue
                    entry.line = line
                    self._sanitize(entry)
                    entries.append(entry)
                done, kept = await self._deliver(entries)
                landed += done
                self.stats.replayed += done
                if kept:  # the store went away again: put back what is left, durably
                    try:
                        await asyncio.to_thread(
                            self._spill.append, [e.line or self._encode(e) for e in kept]
                        )
                        while rest := await asyncio.to_thread(_read_lines, f, self._batch):
                            await asyncio.to_thread(self._spill.append, rest)
                    except OSError as exc:
                        log.error("cannot put records back in %s (%s)", self._spill.path, exc)
                        return landed  # the work file is kept and resumed next time
                    break
        work.unlink(missing_ok=True)
        if landed:
            log.info("replayed %d records from %s", landed, self._spill.path)
        return landed

    async def _quarantine_raw(self, work: Path, n: int, line: bytes, why: str) -> bool:
        reason = f"line {n} of {work.name} is not a record: {why}"[:_REASON_MAX]
        raw = line.decode("utf-8", "replace").rstrip("\n")
        out = orjson.dumps({"reason": reason, "at": time.time(), "raw": raw}, option=_OPTS)
        if not await self._quarantine_lines([out]):
            return False
        self.stats.quarantined += 1
        log.error("skipped %s; quarantined in %s", reason, self._quarantine.path)
        return True
