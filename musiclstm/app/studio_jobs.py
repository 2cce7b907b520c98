"""The studio's queue: one small queue of jobs served by threads of its own, with progress and cancel.

A job's network runs through `Watched`, which counts each step and raises `Cancelled` once the job is stopped,
so a cancelled piece stops within a step.
May import: errors. Not imported by any room (the studio uses it).
"""

from __future__ import annotations

import collections
import logging
import re
import secrets
import threading
import time
from dataclasses import dataclass, field

from starlette.exceptions import HTTPException

from ..errors import MusiclstmError

WORKERS, MAX_QUEUED = 1, 8  # pieces made at once; pieces that may wait for them
log = logging.getLogger("musiclstm.app.studio")


# ---- jobs: one small queue, progress, cancel ------------------------------------------------------
class Cancelled(Exception):
    """Raised inside a job's sampling loop once the job is cancelled (or the studio stops)."""


@dataclass(eq=False)  # each job is itself (hashable, compared by identity)
class Job:
    """One piece to make: `work(job)` returns the Piece; it calls `tick` at every network step."""

    id: str
    kind: str
    work: object
    total: int | None = None  # steps expected, where known (Gibbs passes)
    unit: str = "tokens"
    state: str = "queued"  # queued, running, done, failed, cancelled
    done: int = 0
    piece: object = None
    error: str | None = None
    created: float = field(default_factory=time.monotonic)
    started: float | None = None
    finished: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event)

    def tick(self, n: int = 1) -> None:
        if self.cancel.is_set():
            raise Cancelled
        self.done += n

    def summary(self, position: int | None = None) -> dict:
        now = time.monotonic()
        return {"id": self.id, "kind": self.kind, "state": self.state, "position": position, "done": self.done,
                "total": self.total, "unit": self.unit, "error": self.error,
                "waited": round((self.started or now) - self.created, 2),
                "elapsed": round((self.finished or now) - self.started, 2) if self.started else 0.0,
                "piece": self.piece.summary() if self.piece is not None else None}


class Jobs:
    """A queue of jobs served by `workers` threads of its own (not the web server's thread pool)."""

    def __init__(self, workers: int = WORKERS, max_queued: int = MAX_QUEUED):
        self.max_queued = max_queued
        self.waiting: collections.deque[Job] = collections.deque()
        self.all: dict[str, Job] = {}
        self.running: set[Job] = set()
        self.cond = threading.Condition()
        self.closed = False
        self.threads = [threading.Thread(target=self._serve, name=f"studio-worker-{k}", daemon=True)
                        for k in range(workers)]
        for t in self.threads:
            t.start()

    def submit(self, kind: str, work, *, total: int | None = None, unit: str = "tokens") -> dict:
        with self.cond:
            if self.closed:
                raise HTTPException(503, "the studio is stopping")
            if len(self.waiting) >= self.max_queued:
                raise HTTPException(503, f"the studio is busy: {len(self.waiting)} pieces are waiting already; "
                                         "try again when one is done")
            job = Job(secrets.token_hex(8), kind, work, total, unit)
            self.all[job.id] = job
            self.waiting.append(job)
            self.cond.notify()
            return job.summary(self._position(job))

    def run_here(self, kind: str, work) -> object:
        """Run a short job in the calling thread (play-along answers), cancelled with the others at exit."""
        job = Job(secrets.token_hex(8), kind, work)
        with self.cond:
            if self.closed:
                raise HTTPException(503, "the studio is stopping")
            self.running.add(job)
        job.state, job.started = "running", time.monotonic()
        try:
            return work(job)
        finally:
            with self.cond:
                self.running.discard(job)

    def _position(self, job: Job) -> int | None:
        """0: being made; n: n-th in line; None: finished."""
        if job.state == "running":
            return 0
        try:
            return self.waiting.index(job) + 1
        except ValueError:
            return None

    def get(self, jid: str) -> dict:
        with self.cond:
            job = self.all.get(jid)
            if job is None:
                raise HTTPException(404, "no such job in this session")
            return job.summary(self._position(job))

    def listing(self) -> list[dict]:
        with self.cond:
            return [j.summary(self._position(j)) for j in self.all.values() if j.state in ("queued", "running")]

    def cancel(self, jid: str) -> dict:
        with self.cond:
            job = self.all.get(jid)
            if job is None:
                raise HTTPException(404, "no such job in this session")
            job.cancel.set()
            if job in self.waiting:
                self.waiting.remove(job)
                job.state, job.finished = "cancelled", time.monotonic()
            return job.summary(self._position(job))

    def close(self, timeout: float = 5.0) -> None:
        """Cancel every job, queued or running, and wait (up to `timeout` s) for the workers to stop."""
        with self.cond:
            self.closed = True
            for job in [*self.waiting, *self.running]:
                job.cancel.set()
            for job in self.waiting:
                job.state = "cancelled"
            self.waiting.clear()
            self.cond.notify_all()
        for t in self.threads:
            t.join(timeout)

    def _serve(self) -> None:
        while True:
            with self.cond:
                while not self.waiting and not self.closed:
                    self.cond.wait()
                if self.closed:
                    return
                job = self.waiting.popleft()
                job.state, job.started = "running", time.monotonic()
                self.running.add(job)
            try:
                job.piece = job.work(job)
                state = "done"
            except Cancelled:
                state = "cancelled"
            except MusiclstmError as e:
                state, job.error = "failed", one_line(e)
            except Exception as e:  # noqa: BLE001  the terminal gets the traceback; the page one line
                log.error("studio job failed", exc_info=e)
                state, job.error = "failed", (f"internal error ({type(e).__name__}: {one_line(e)}); "
                                              "the terminal running the studio has the details")
            with self.cond:
                job.state, job.finished = state, time.monotonic()
                self.running.discard(job)


class Watched:
    """A network seen through a job: every step (`step`, or a call) ticks the job, and so raises
    `Cancelled` inside the sampling loop once the job is cancelled. Everything else is the network's."""

    def __init__(self, net, job: Job):
        self._net, self._job = net, job

    def __getattr__(self, name):
        return getattr(self._net, name)

    def step(self, *args, **kwargs):
        self._job.tick()
        return self._net.step(*args, **kwargs)

    def hidden(self, *args, **kwargs):
        self._job.tick(0)
        return self._net.hidden(*args, **kwargs)

    def __call__(self, *args, **kwargs):
        self._job.tick()
        return self._net(*args, **kwargs)


def one_line(e: Exception) -> str:
    """An error's first line, options named as the page names them ('--top-p' -> 'top-p')."""
    return re.sub(r"(?<![\w-])--(?=[a-z])", "", (str(e).strip().splitlines() or [type(e).__name__])[0])[:300]

