"""Claims on evaluations in a shared cache folder, so that several processes share a run.

A long report runs as two single-thread processes with the same arguments and the same
``--out`` (one per core). Before a process evaluates a call, it claims it: it creates
``.claim-<key>`` with ``O_CREAT | O_EXCL`` (only one process can) holding its pid, host,
start time and a token of its own. Others skip a call whose claim belongs to a live
process. A claim whose pid is dead on this host (the process was killed mid-call) is
stale and is taken over; the take-over happens under a lock file, so two processes never
both take over one claim. A claim is removed when its results are saved, or on an error.
A claim of another host (or of a process in another pid namespace with its pid alive
here) cannot be checked: it holds until its file is deleted, and the waiting message
names that file.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CLAIM_PREFIX = ".claim-"
LOCK_NAME = ".claims.lock"
UNREADABLE_GRACE_S = 60.0  # an empty claim file older than this lost its writer


def _proc_start(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (Linux), to tell a reused pid from its owner."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else None


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    except OSError:
        return False
    return True


@dataclass(frozen=True)
class Holder:
    """Who holds a claim, as its file says."""

    pid: int
    host: str
    started: str
    token: str
    proc_start: str | None = None
    age_s: float = 0.0
    path: Path | None = None  # the claim file, for the waiting message

    def is_stale(self) -> bool:
        """Dead on this host (or its pid reused by another process); unknown hosts live."""
        if not self.token:  # a file its writer never filled
            return self.age_s > UNREADABLE_GRACE_S
        if self.host != socket.gethostname():
            return False
        if not _pid_alive(self.pid):
            return True
        now = _proc_start(self.pid)
        return self.proc_start is not None and now is not None and now != self.proc_start

    def describe(self) -> str:
        if not self.token:
            return "another process (its claim is being written)"
        here = self.host == socket.gethostname()
        return f"pid {self.pid}" + ("" if here else f" on {self.host}")


class Claims:
    """Claims of one process (one ``token``) in ``folder``; ``stream`` gets its notes."""

    def __init__(self, folder: Path, stream: Any) -> None:
        self.folder = Path(folder)
        self.stream = stream
        self.token = uuid.uuid4().hex
        self._mine: dict[str, Path] = {}

    def path(self, key: str) -> Path:
        return self.folder / f"{CLAIM_PREFIX}{key}"

    def holder(self, key: str) -> Holder | None:
        """Who holds ``key`` (None: no one); a file just created is given time to fill."""
        path = self.path(key)
        for attempt in range(5):
            try:
                text = path.read_text(encoding="utf-8")
                age = time.time() - path.stat().st_mtime
            except FileNotFoundError:
                return None
            try:
                data = json.loads(text)
                return Holder(
                    int(data["pid"]),
                    str(data["host"]),
                    str(data["started"]),
                    str(data["token"]),
                    data.get("proc_start"),
                    age,
                    path,
                )
            except (ValueError, KeyError, TypeError):  # being written, or its writer died
                if attempt < 4:
                    time.sleep(0.02)
        return Holder(-1, "?", "?", "", None, age, path)

    def acquire(self, key: str) -> Holder | None:
        """Claim ``key``: None when it is now this process's, else the live holder."""
        self.folder.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.path(key), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self.holder(key)
                if holder is None:
                    continue  # released meanwhile: try again
                if holder.token == self.token:
                    return None
                if not holder.is_stale():
                    return holder
                self._take_over(key, holder)
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(self._record(), handle)
            self._mine[key] = self.path(key)
            return None
        holder = self.holder(key)
        return holder if holder is not None else Holder(-1, "?", "?", "?")

    def release(self, key: str) -> None:
        """Remove the claim if it is still this process's."""
        if self._mine.pop(key, None) is None:
            return
        holder = self.holder(key)
        if holder is not None and holder.token == self.token:
            with contextlib.suppress(FileNotFoundError):
                self.path(key).unlink()

    def _record(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "token": self.token,
            "proc_start": _proc_start(os.getpid()),
        }

    def _take_over(self, key: str, stale: Holder) -> None:
        """Remove a stale claim, unless someone replaced it since it was read."""
        with self._lock():
            current = self.holder(key)
            if current is None or current.token != stale.token or not current.is_stale():
                return
            with contextlib.suppress(FileNotFoundError):
                self.path(key).unlink()
        print(
            f"note: taking over the evaluation claimed by {stale.describe()} "
            f"(started {stale.started}; that process is no longer running)",
            file=self.stream,
        )

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        try:
            import fcntl
        except ImportError:  # not POSIX: the O_EXCL create still keeps claims exclusive
            yield
            return
        with open(self.folder / LOCK_NAME, "a") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
