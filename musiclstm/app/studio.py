"""`musiclstm studio`: a local web page over the same Python API the commands use.

FastAPI serves one small page (studio.html, beside this file) and a few JSON routes; the music is made
by `compose`, `chorale.harmonize` and `chorale.infill` and written by `write_pieces`, exactly as the
commands make and write it.

Bounded work: every piece is a job in one small queue (`WORKERS` at a time, at most `MAX_QUEUED`
waiting, the rest refused), never a request holding one of the server's threads; a job reports its
progress (tokens written, or Gibbs passes) and stops within a step when cancelled, because it runs
its network through `Watched`, which counts each step and raises `Cancelled` once the job is stopped.
Lengths are capped (`MAX_SECONDS` of music, `MAX_PRIMER_TOKENS` of primer, `MAX_MELODY_QUARTERS` of
melody), and the page states the caps. Stopping the server (Ctrl-C, SIGTERM) cancels every job.

Safe by default: it listens on 127.0.0.1 only, and on any loopback address it answers only requests
addressed to a loopback name (no DNS rebinding); a POST whose `Origin` is not the studio itself is
refused (403); an upload is capped at 5 MB and read only by `midi.read`; nothing a request names is a
path; every piece lives in one temporary folder removed when the studio stops; errors reach the page
as one line.
May import: every room below. Not imported by any room (the cli starts it).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import ipaddress
import itertools
import logging
import re
import secrets
import signal
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field
from importlib.resources import files as package_files
from pathlib import Path
from typing import Annotated

import numpy as np
import python_multipart  # noqa: F401  FastAPI reads forms with it: a missing one is found at import
import uvicorn
from fastapi import Body, FastAPI, File, Form, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException

from ..errors import ConfigError, MusiclstmError
from ..generation.compose import compose, prime_score
from ..io.midi import MIDI_SUFFIXES, NOTATION_SUFFIXES, read
from ..io.outputs import sidecar, synthesizer, write_pieces
from ..io.score import Score
from ..models import checkpoint as ck

MAX_UPLOAD = 5 * 2**20  # bytes of one primer or melody file
MAX_SECONDS = 300  # seconds of music in one composed piece (the command allows 1,800)
MAX_PRIMER_TOKENS = 4000  # tokens of one primer
MAX_MELODY_QUARTERS = 256  # quarter notes of one melody to harmonize (64 bars of 4/4)
MAX_ITERATIONS = 128  # Gibbs passes of harmonize and infill
MAX_PHRASE_NOTES, MAX_ANSWER_SECONDS = 64, 8  # play along: a phrase and its answer
WORKERS, MAX_QUEUED = 1, 8  # pieces made at once; pieces that may wait for them
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
FILES = {"mid": "piece.mid", "wav": "piece.wav", "png": "piece.png", "json": "piece.json",
         "musicxml": "xml/piece.musicxml"}  # what a piece's URL may name -> its file in the piece's folder
log = logging.getLogger("musiclstm.app.studio")


def limits() -> dict:
    """The caps, as the page states them."""
    return {"seconds": MAX_SECONDS, "primer_tokens": MAX_PRIMER_TOKENS, "melody_quarters": MAX_MELODY_QUARTERS,
            "iterations": MAX_ITERATIONS, "upload_mb": MAX_UPLOAD // 2**20, "workers": WORKERS,
            "queue": MAX_QUEUED, "phrase_notes": MAX_PHRASE_NOTES, "answer_seconds": MAX_ANSWER_SECONDS}


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


# ---- pieces --------------------------------------------------------------------------------------
@dataclass
class Piece:
    """One piece: the settings that make it again exactly, what it was made from, and its folder."""

    id: str
    number: int
    settings: dict  # kind (compose, harmonize, infill, continue, answer), model, seed, ... as the page shows them
    folder: Path
    source: Score | None  # the primer, melody or four-part piece it was made from
    duration: float  # seconds of music
    notes: int
    elapsed: float  # seconds it took to make
    musicxml_error: str | None = None
    kinds: tuple = tuple(FILES)  # the files it has
    answer_from: float | None = None  # play along: where the answer starts (seconds)

    def summary(self) -> dict:
        files = {k: f"/files/{self.id}/{k}" for k in FILES
                 if k in self.kinds and (k != "musicxml" or self.musicxml_error is None)}
        s = self.settings
        name = f"{s.get('model') or s['kind']}-{self.number}-seed{s['seed']}"
        return {"id": self.id, "number": self.number, "settings": s, "duration": round(self.duration, 1),
                "notes": self.notes, "elapsed": round(self.elapsed, 2), "files": files, "name": name,
                "musicxml_error": self.musicxml_error, "answer_from": self.answer_from}


NOTE = re.compile(r"(?i)^(?:([a-g])([#b]?)(-?\d)|(\d{1,3})|(r|rest|-))(?::(\d+(?:\.\d+)?|\d+/\d+))?$")


def parse_melody(text: str) -> Score:
    """'C4 D4 E4:2 r G4' or '60 62 64:2 r 67' -> a one-line Score: each note a quarter note unless
    ':N' gives its length in quarters (':0.5', ':1/2'); 'r' (or '-') is a rest."""
    if not text.strip():
        raise ConfigError("the melody is empty: type notes such as 'C4 D4 E4' or MIDI numbers '60 62 64'")
    rows, at = [], 0.0
    for word in text.replace(",", " ").split():
        m = NOTE.match(word)
        if not m:
            raise ConfigError(f"melody: {word[:20]!r} is not a note like C4, F#3, Bb4, 60, r or C4:2")
        length = m[6] or "1"
        num, _, den = length.partition("/")
        q = float(num) / float(den or 1)
        if not 0 < q <= 16:
            raise ConfigError(f"melody: {word[:20]!r} lasts {q:g} quarters; give 1/4 to 16")
        if m[1]:
            pc = "C D EF G A B".index(m[1].upper()) + {"#": 1, "b": -1, "": 0}[m[2]]
            pitch = 12 * (int(m[3]) + 1) + pc
        elif m[4]:
            pitch = int(m[4])
        else:
            pitch = None
        if pitch is not None:
            if not 0 <= pitch < 128:
                raise ConfigError(f"melody: {word[:20]!r} is outside MIDI 0-127")
            rows.append((at, at + q, pitch, 80))
        at += q
    if not rows:
        raise ConfigError("the melody has only rests")
    score = Score.from_notes(rows)
    score.source = "the typed melody"
    return score


def bars_of(score: Score) -> np.ndarray:
    """Bar lines (quarters) of a piece as infill counts them, the piece's end appended."""
    from ..evaluation.music import bar_lines

    lines = bar_lines(score)
    return np.r_[lines, max(float(score.end.max()), lines[-1] + 1e-9)] if len(score) else np.zeros(2)


def excerpt(score: Score, first: int, last: int) -> Score:
    """Bars `first`..`last` (from 1) of `score`, moved to start at 0: a primer to continue from."""
    lines = bars_of(score)
    n = len(lines) - 1
    if not 1 <= first <= last <= n:
        raise ConfigError(f"bars {first}-{last}: the piece has bars 1-{n}")
    lo, hi = float(lines[first - 1]), float(lines[last])
    s = score.select((score.start >= lo - 1e-9) & (score.start < hi - 1e-9))
    s.end = np.minimum(s.end, hi) - lo
    s.start = s.start - lo
    at = lambda m: m[max(0, np.searchsorted(m[:, 0], lo + 1e-9) - 1)] if len(m) else None  # noqa: E731
    s.tempos = np.array([[0.0, at(score.tempos)[1]]])
    ts = at(score.time_signatures)
    s.time_signatures = np.array([[0.0, ts[1], ts[2]]])
    ks = at(score.key_signatures[score.key_signatures[:, 0] <= lo + 1e-9]) if len(score.key_signatures) else None
    s.key_signatures = np.array([[0.0, ks[1], ks[2]]]) if ks is not None else np.zeros((0, 3))
    s.pedals = np.zeros((0, 3))
    if len(s) == 0:
        raise ConfigError(f"bars {first}-{last} have no notes to continue from")
    return s


def parse_bar_range(text: str, n: int) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+))?\s*", text or "")
    if not m:
        raise ConfigError(f"bars {text[:20]!r}: give a bar or a range such as 3-4")
    a, b = int(m[1]), int(m[2] or m[1])
    if not 1 <= a <= b <= n:
        raise ConfigError(f"bars {text.strip()[:20]}: the piece has bars 1-{n}")
    return a, b


class Studio:
    """The models on offer (bundled ones and run folders, by name), the harmonizer, this session's
    pieces and the queue that makes them."""

    def __init__(self, folder: Path, runs=()):
        self.folder = Path(folder)
        # name -> what `ck.load` is given; in the page's order: the runs asked for, then the bundled default
        self.sources: dict[str, str] = {}
        for run in runs:
            p = Path(run).resolve()
            base = name = p.name if p.is_dir() else p.stem
            for k in range(2, 1000):
                if name not in self.sources and name not in ck.bundled_models():
                    break
                name = f"{base}-{k}"
            self.sources[name] = str(ck.resolve(run))  # a folder without a checkpoint: an error now
        self.sources |= {n: n for n in sorted(ck.bundled_models(), key=lambda n: (n != ck.DEFAULT, n))}
        if not self.sources:
            raise MusiclstmError("no models: this install bundles none; give a run folder, e.g. musiclstm studio "
                                 "runs/mine")
        self.models: dict = {}
        self.pieces: dict[str, Piece] = {}
        self.numbers = itertools.count(1)  # pieces made, for their numbers
        self.lock = threading.Lock()
        self.jobs = Jobs()
        self.answering = threading.Semaphore(1)  # play along: one answer at a time
        self._harmonizer = None

    def model(self, name: str):
        if name not in self.sources:
            raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(self.sources)}")
        with self.lock:
            if name not in self.models:
                self.models[name] = ck.load(self.sources[name])
            return self.models[name]

    def harmonizer(self):
        from ..generation import harmonize as chorale

        with self.lock:
            if self._harmonizer is None:
                self._harmonizer = chorale.load()
            return self._harmonizer

    def catalogue(self) -> list[dict]:
        """The models as the page lists them: name, description, styles and the instruments they know."""
        import pretty_midi

        out = []
        for name in self.sources:
            m = self.model(name)
            programs = m.meta.get("data", {}).get("programs") or []
            out.append({"name": name, "description": m.meta.get("description") or str(m.path),
                        "styles": list(m.tokenizer.styles), "encoding": m.tokenizer.encoding,
                        "instruments": ["drums" if p == 128 else pretty_midi.program_to_instrument_name(p)
                                        for p in programs]})
        return out

    def piece(self, pid: str) -> Piece:
        piece = self.pieces.get(pid)
        if piece is None:
            raise HTTPException(404, "no such piece in this session")
        return piece

    # -- checks before a job is queued: a one-line error now, not a failed job later
    def check_primer(self, settings: dict, primer: Score | None) -> None:
        if primer is None:
            return
        model = self.model(settings["model"])
        cut = prime_score(primer, prime_seconds=settings.get("prime_seconds"))
        n = len(model.tokenizer.encode(cut, eos=False))
        if n > MAX_PRIMER_TOKENS:
            raise ConfigError(f"the primer is {n:,} tokens; the studio takes at most {MAX_PRIMER_TOKENS:,} "
                              "(give fewer primer seconds)")

    # -- the work itself (in a worker thread)
    def make(self, settings: dict, source: Score | None, job: Job, *, files=("wav", "png", "musicxml")) -> Piece:
        """Make one piece with `settings` (its seed included) from `source` and write its files; the same
        settings and source give the same music."""
        start = time.perf_counter()
        kind = settings["kind"]
        if kind in ("compose", "continue", "answer"):
            model = self.model(settings["model"])
            watched = dataclasses.replace(model, net=Watched(model.net, job))
            kw = {k: settings.get(k) if settings.get(k) not in ("", None) else None
                  for k in ("style", "key", "instruments", "prime_seconds", "top_k", "tempo", "max_polyphony",
                            "drums")}
            if settings.get("pitch_low") is not None and settings.get("pitch_high") is not None:
                kw["pitch_range"] = (settings["pitch_low"], settings["pitch_high"])
            length = {"bars": settings["bars"]} if settings.get("bars") else {"seconds": settings["seconds"]}
            pm, ids = compose(watched, source, temperature=settings["temperature"], top_p=settings["top_p"],
                              repetition_penalty=settings.get("repetition_penalty") or 1.0, seed=settings["seed"],
                              return_ids=True, progress=False, **length, **kw)
            info = sidecar(model, {**settings, "checkpoint": self.sources[settings["model"]]}, ids=ids)
        else:
            from ..generation import harmonize as chorale

            h = self.harmonizer()
            watched = dataclasses.replace(h, net=Watched(h.net, job))
            done = {}
            options = {k: settings[k] for k in ("seed", "temperature", "iterations")}
            if kind == "harmonize":
                pm = chorale.harmonize(source, model=watched, key=settings["key"] or None,
                                       transpose=settings["transpose"], top_voice=settings["top_voice"],
                                       info=done, **options)
            else:
                pm = chorale.infill(source, settings["bars"], voices=settings["voices"], model=watched, info=done,
                                    **options)
            settings = {**settings, "key": settings.get("key") or done.get("key", "")}
            info = sidecar(h.model, settings)
        pid, number = secrets.token_hex(8), next(self.numbers)
        folder = self.folder / pid
        job.tick(0)  # cancelled while the last step ran: no files
        write_pieces([(pm, folder / FILES["mid"], info)], wav="wav" in files, png="png" in files)
        why = None
        if "musicxml" in files:
            try:  # MusicXML apart: music21 failing on one piece should not cost the listener the rest
                write_pieces([(pm, folder / "xml" / FILES["mid"], info)], musicxml=True)
            except MusiclstmError as e:
                why = str(e)
        kinds = ("mid", "json", *files)
        piece = Piece(pid, number, settings, folder, source, float(pm.get_end_time()),
                      int(sum(len(i.notes) for i in pm.instruments)), time.perf_counter() - start, why, kinds)
        with self.lock:
            self.pieces[pid] = piece
        return piece

    def submit(self, settings: dict, source) -> dict:
        """Queue a piece; `source` is a Score, None, or a function giving the Score (an upload read in the
        job, not in the request)."""
        from ..generation.sample import MAX_TEMPERATURE

        if not 0 <= settings.get("temperature", 1.0) <= MAX_TEMPERATURE:  # refused before it holds the queue
            raise ConfigError(f"temperature must be between 0 and {MAX_TEMPERATURE:g}, got {settings['temperature']:g}")
        total, unit = ((settings["iterations"], "passes") if settings["kind"] in ("harmonize", "infill")
                       else (None, "tokens"))
        return self.jobs.submit(settings["kind"], lambda job: self.make(
            settings, source() if callable(source) else source, job), total=total, unit=unit)

    def answer(self, settings: dict, phrase: Score) -> Piece:
        """Play along: continue a phrase at once, in the request's thread (a short, capped job), writing
        only the MIDI and its sidecar; the page plays the answer from its notes."""
        if not self.answering.acquire(blocking=False):
            raise HTTPException(429, "still answering the last phrase")
        try:
            piece = self.jobs.run_here("answer", lambda job: self.make(settings, phrase, job, files=()))
        finally:
            self.answering.release()
        full = read(piece.folder / FILES["mid"])
        tok = self.model(settings["model"]).tokenizer
        asked = tok.decode_score(tok.encode(phrase, eos=False))  # the phrase as the model wrote it down
        seen = collections.Counter(zip(np.round(asked.start, 3), asked.pitch, strict=True))
        new = []
        for k, key in enumerate(zip(np.round(full.start, 3), full.pitch, strict=True)):
            if seen[key]:
                seen[key] -= 1
            else:
                new.append(k)
        piece.answer_from = round(float(full.seconds(full.start[new].min())), 4) if new else piece.duration
        return piece

    def notes(self, pid: str) -> dict:
        """A piece's notes as its MIDI file holds them (seconds), its tracks and its bar lines (seconds,
        numbered as infill numbers them): what the page draws."""
        import pretty_midi

        piece = self.piece(pid)
        path = piece.folder / FILES["mid"]
        pm = pretty_midi.PrettyMIDI(str(path))
        notes, tracks = [], []
        for k, inst in enumerate(pm.instruments):
            tracks.append({"name": inst.name or ("drums" if inst.is_drum
                                                 else pretty_midi.program_to_instrument_name(inst.program)),
                           "program": int(inst.program), "drum": bool(inst.is_drum)})
            notes += [[round(float(n.start), 4), round(float(n.end), 4), int(n.pitch), int(n.velocity), k]
                      for n in inst.notes]
        notes.sort()
        score = read(path)
        lines = score.seconds(bars_of(score)) if len(score) else np.zeros(2)
        return {"notes": notes, "tracks": tracks, "bars": [round(float(x), 4) for x in lines],
                "duration": round(float(pm.get_end_time()), 4), "answer_from": piece.answer_from}

    def file(self, pid: str, kind: str) -> Path:
        piece = self.pieces.get(pid)
        if piece is None or kind not in FILES or kind not in piece.kinds or \
                (kind == "musicxml" and piece.musicxml_error):
            raise HTTPException(404, "no such file in this session")
        return piece.folder / FILES[kind]


@dataclass
class Upload:
    """An uploaded primer or melody, taken in the request (name, kind and size checked, at most MAX_UPLOAD
    bytes) and read in its job (music21 may take seconds over a big file: never in the server's threads)."""

    name: str
    suffix: str
    data: bytes
    what: str

    @classmethod
    def take(cls, upload: UploadFile, what: str = "primer") -> Upload:
        name = Path(upload.filename or what).name[:80]
        suffix = Path(name).suffix.lower()
        if suffix not in MIDI_SUFFIXES | NOTATION_SUFFIXES:
            raise ConfigError(f"{name} is not a MIDI, MusicXML or ABC file "
                              f"({', '.join(sorted(MIDI_SUFFIXES | NOTATION_SUFFIXES))})")
        data = upload.file.read(MAX_UPLOAD + 1)
        if len(data) > MAX_UPLOAD:
            raise ConfigError(f"{name} is over the {MAX_UPLOAD // 2**20} MB limit for a {what}")
        return cls(name, suffix, data, what)

    @property
    def about(self) -> dict:
        return {"name": self.name, "sha1": hashlib.sha1(self.data).hexdigest()}

    def read(self) -> Score:
        """Through the one reader (MIDI from memory; notation from a file named here, since music21 reads
        files)."""
        if self.suffix in MIDI_SUFFIXES:
            score = read(self.data, name=self.name)
        else:
            with tempfile.TemporaryDirectory() as d:
                path = Path(d) / f"{self.what}{self.suffix}"
                path.write_bytes(self.data)
                score = read(path, name=self.name)
        if len(score) == 0:
            raise ConfigError(f"the {self.what} {self.name} has no notes")
        return score


def read_upload(upload: UploadFile, what: str = "primer") -> tuple[Score, dict]:
    """An uploaded primer or melody read at once: its Score and its name and hash."""
    u = Upload.take(upload, what)
    return u.read(), u.about


read_primer = read_upload  # the name before harmonize came to the page


def capped_melody(score: Score) -> Score:
    if len(score) and score.end.max() > MAX_MELODY_QUARTERS:
        raise ConfigError(f"the melody lasts {score.end.max():g} quarters; the studio harmonizes at most "
                          f"{MAX_MELODY_QUARTERS}")
    return score


def one_line(e: Exception) -> str:
    """An error's first line, options named as the page names them ('--top-p' -> 'top-p')."""
    return re.sub(r"(?<![\w-])--(?=[a-z])", "", (str(e).strip().splitlines() or [type(e).__name__])[0])[:300]


def seed_of(text: str) -> int:
    text = (text or "").strip()
    if text and not (text.isdigit() and int(text) < 2**63):
        raise ConfigError(f"seed must be a whole number >= 0, or empty for a fresh one; got {text[:20]!r}")
    return int(text) if text else secrets.randbelow(2**31)


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address, IPv6 with or without brackets) is this machine's loopback."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str:
    """'127.0.0.1:7860' -> '127.0.0.1'; '[::1]:7860' -> '::1'; 'localhost' -> 'localhost'."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def make_app(folder: Path, runs=(), *, local: bool = True) -> FastAPI:
    """The studio's web app, writing its pieces under `folder` (which the caller removes).

    `local`: answer only requests addressed to this machine's loopback by name or address (localhost,
    127.0.0.1, [::1], ...), so that a web site cannot reach the studio through a DNS name it points here
    (DNS rebinding). Every POST whose Origin is not the address it was sent to is refused (403): a page
    of another site cannot make the studio work. A POST without Origin (curl, scripts) is allowed:
    browsers send Origin with every cross-origin POST, so only clients that can reach the port anyway
    omit it. `app.state.studio.jobs.close()` cancels every job (`serve` calls it when stopping)."""
    studio = Studio(folder, runs)
    app = FastAPI(title="musiclstm studio", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.studio = studio
    page = package_files("musiclstm.app").joinpath("studio.html").read_text(encoding="utf-8")
    catalogue = {"models": studio.catalogue(), "synthesizer": synthesizer(), "limits": limits(),
                 "sine": "sine" in synthesizer()}  # loads every model: errors now

    @app.middleware("http")
    async def guard(request, call_next):
        host = request.headers.get("host", "")
        if local and not is_loopback(host_name(host)):
            return JSONResponse({"error": "this studio answers only requests for this machine "
                                          "(localhost, 127.0.0.1, [::1])"}, status_code=400)
        if request.method == "POST":
            origin = request.headers.get("origin")
            if origin is not None and origin.lower() != f"{request.url.scheme}://{host}".lower():
                return JSONResponse({"error": "refused: this request comes from another site's page"},
                                    status_code=403)
            length = request.headers.get("content-length")  # refuse big bodies before reading a byte of them
            if length is None or not length.isdigit():
                return JSONResponse({"error": "send a Content-Length"}, status_code=411)
            if int(length) > MAX_UPLOAD + 64 * 1024:
                return JSONResponse({"error": f"the upload is over the {MAX_UPLOAD // 2**20} MB limit"},
                                    status_code=413)
        return await call_next(request)

    @app.exception_handler(MusiclstmError)
    async def project_error(request, e):
        return JSONResponse({"error": one_line(e)}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def bad_form(request, e):
        first = e.errors()[0] if e.errors() else {}
        field_ = str(first.get("loc", ("", "?"))[-1]).replace("_", "-")
        return JSONResponse({"error": f"{field_}: {first.get('msg', 'invalid')}"}, status_code=400)

    @app.exception_handler(HTTPException)
    async def http_error(request, e):
        return JSONResponse({"error": str(e.detail)}, status_code=e.status_code)

    @app.exception_handler(Exception)
    async def crash(request, e):  # the terminal gets the traceback; the page one line
        log.error("studio request failed", exc_info=e)
        return JSONResponse({"error": f"internal error ({type(e).__name__}: {one_line(e)}); "
                                      "the terminal running the studio has the details"}, status_code=500)

    @app.get("/", response_class=HTMLResponse)
    def index():
        return page

    @app.get("/api/models")
    def models():
        return catalogue

    @app.get("/api/pieces")
    def pieces():
        with studio.lock:
            made = list(studio.pieces.values())
        return [p.summary() for p in sorted(made, key=lambda p: -p.number)]

    @app.get("/api/pieces/{pid}/notes")
    def notes(pid: str):
        return studio.notes(pid)

    def length(seconds: float | None, bars: int | None) -> dict:
        if bars is not None:
            if not 1 <= bars <= MAX_SECONDS // 2:
                raise ConfigError(f"bars must be between 1 and {MAX_SECONDS // 2} in the studio")
            return {"bars": bars, "seconds": None}
        seconds = 30.0 if seconds is None else seconds
        if not 0 < seconds <= MAX_SECONDS:
            raise ConfigError(f"seconds must be between 0 and {MAX_SECONDS} in the studio (got {seconds:g})")
        return {"seconds": seconds, "bars": None}

    @app.post("/api/compose", status_code=202)
    def make(model: Annotated[str, Form()], style: Annotated[str, Form()] = "",
             seconds: Annotated[float | None, Form()] = None, bars: Annotated[int | None, Form()] = None,
             temperature: Annotated[float, Form()] = 1.0, top_p: Annotated[float, Form()] = 0.95,
             top_k: Annotated[int | None, Form()] = None, repetition_penalty: Annotated[float, Form()] = 1.0,
             key: Annotated[str, Form()] = "", instruments: Annotated[str, Form()] = "",
             drums: Annotated[str, Form()] = "", tempo: Annotated[float | None, Form()] = None,
             max_polyphony: Annotated[int | None, Form()] = None, pitch_low: Annotated[int | None, Form()] = None,
             pitch_high: Annotated[int | None, Form()] = None, seed: Annotated[str, Form()] = "",
             prime_seconds: Annotated[float | None, Form()] = None, prime_notes: Annotated[str, Form()] = "",
             primer: Annotated[UploadFile | None, File()] = None):
        seed_ = seed_of(seed)
        upload = Upload.take(primer) if primer is not None and primer.filename else None
        if upload is not None:
            score, about = None, upload.about
        elif prime_notes.strip():
            score, about = prime_score(prime_notes=prime_notes), {"name": f"notes {prime_notes.strip()[:40]}"}
        else:
            score, about = None, None
        if drums not in ("", "yes", "no"):
            raise ConfigError("drums: yes, no or empty (the model's own choice)")
        settings = {"kind": "compose", "model": model, "style": style.strip(), **length(seconds, bars),
                    "temperature": temperature, "top_p": top_p, "top_k": top_k,
                    "repetition_penalty": repetition_penalty, "key": key.strip(), "instruments": instruments.strip(),
                    "drums": {"": None, "yes": True, "no": False}[drums], "tempo": tempo,
                    "max_polyphony": max_polyphony, "pitch_low": pitch_low, "pitch_high": pitch_high,
                    "seed": seed_, "prime_seconds": prime_seconds if upload is not None else None, "primer": about}
        if (pitch_low is None) != (pitch_high is None):
            raise ConfigError("pitch range: give both the lowest and the highest pitch, or neither")
        if upload is None:
            studio.check_primer(settings, score)
            return studio.submit(settings, score)

        def primer_score():
            score = upload.read()
            studio.check_primer(settings, score)
            return score

        return studio.submit(settings, primer_score)

    @app.post("/api/harmonize", status_code=202)
    def harmonize(melody: Annotated[str, Form()] = "", key: Annotated[str, Form()] = "",
                  seed: Annotated[str, Form()] = "", temperature: Annotated[float, Form()] = 0.8,
                  iterations: Annotated[int, Form()] = 32, transpose: Annotated[int, Form()] = 0,
                  top_voice: Annotated[bool, Form()] = False,
                  file: Annotated[UploadFile | None, File()] = None):
        if file is not None and file.filename:
            upload = Upload.take(file, "melody")
            about, score = upload.about, lambda: capped_melody(upload.read())
        else:
            score, about = capped_melody(parse_melody(melody)), {"name": "typed: " + " ".join(melody.split())[:60]}
        if not 1 <= iterations <= MAX_ITERATIONS:
            raise ConfigError(f"iterations must be between 1 and {MAX_ITERATIONS}")
        from ..generation.harmonize import MAX_TRANSPOSE

        if not -MAX_TRANSPOSE <= transpose <= MAX_TRANSPOSE:
            raise ConfigError(f"transpose must be between -{MAX_TRANSPOSE} and {MAX_TRANSPOSE} semitones")
        if key.strip():
            from ..theory import parse_key

            parse_key(key)
        settings = {"kind": "harmonize", "model": "harmonizer", "key": key.strip(), "seed": seed_of(seed),
                    "temperature": temperature, "iterations": iterations, "transpose": transpose,
                    "top_voice": top_voice, "primer": about}
        return studio.submit(settings, score)

    @app.post("/api/infill/{pid}", status_code=202)
    def infill(pid: str, bars: Annotated[str, Form()], voices: Annotated[str, Form()] = "SATB",
               seed: Annotated[str, Form()] = "", temperature: Annotated[float, Form()] = 0.8,
               iterations: Annotated[int, Form()] = 32):
        from ..generation.harmonize import parse_voices

        piece = studio.piece(pid)
        score = read(piece.folder / FILES["mid"])
        a, b = parse_bar_range(bars, len(bars_of(score)) - 1)
        parse_voices(voices)
        if not 1 <= iterations <= MAX_ITERATIONS:
            raise ConfigError(f"iterations must be between 1 and {MAX_ITERATIONS}")
        settings = {"kind": "infill", "model": "harmonizer", "of": piece.number, "bars": f"{a}-{b}",
                    "voices": voices.upper(), "seed": seed_of(seed), "temperature": temperature,
                    "iterations": iterations, "key": "", "primer": {"name": f"#{piece.number}"}}
        return studio.submit(settings, score)

    @app.post("/api/continue/{pid}", status_code=202)
    def continue_(pid: str, model: Annotated[str, Form()], bars: Annotated[str, Form()] = "",
                  seconds: Annotated[float, Form()] = 15.0, seed: Annotated[str, Form()] = "",
                  temperature: Annotated[float, Form()] = 1.0, top_p: Annotated[float, Form()] = 0.95):
        piece = studio.piece(pid)
        score = read(piece.folder / FILES["mid"])
        n = len(bars_of(score)) - 1
        a, b = parse_bar_range(bars, n) if bars.strip() else (max(1, n - 1), n)  # default: the last two bars
        primer = excerpt(score, a, b)
        settings = {"kind": "continue", "model": model, "of": piece.number, "from_bars": f"{a}-{b}",
                    **length(seconds, None), "temperature": temperature, "top_p": top_p, "seed": seed_of(seed),
                    "key": "", "primer": {"name": f"#{piece.number} bars {a}-{b}"}}
        studio.check_primer(settings, primer)
        return studio.submit(settings, primer)

    @app.post("/api/again/{pid}", status_code=202)
    def again(pid: str, new_seed: bool = False):
        """The same piece again (the same seed: the same music), or with a fresh seed."""
        piece = studio.piece(pid)
        if piece.settings["kind"] == "answer":
            raise ConfigError("play along answers are not made again; play a new phrase")
        settings = dict(piece.settings, seed=secrets.randbelow(2**31) if new_seed else piece.settings["seed"])
        return studio.submit(settings, piece.source)

    @app.post("/api/answer")
    def answer(phrase: Annotated[list[list[float]], Body(embed=True)], model: Annotated[str, Body(embed=True)],
               seed: Annotated[int | None, Body(embed=True)] = None):
        """Play along: `phrase` is [[start, end, pitch, velocity], ...] in seconds from its first note."""
        if not 0 < len(phrase) <= MAX_PHRASE_NOTES:
            raise ConfigError(f"a phrase has 1 to {MAX_PHRASE_NOTES} notes")
        a = np.array(phrase, dtype=np.float64)
        if a.shape[1:] != (4,) or not np.isfinite(a).all() or (a[:, 2] < 0).any() or (a[:, 2] > 127).any():
            raise ConfigError("a phrase is [start, end, pitch, velocity] rows")
        a[:, :2] -= a[:, 0].min()
        a[:, 1] = np.maximum(a[:, 1], a[:, 0] + 0.05)
        if a[:, 1].max() > 60:
            raise ConfigError("a phrase lasts at most 60 s")
        a[:, :2] *= 2.0  # seconds -> quarters at 120 qpm, the primer's tempo
        a[:, 3] = np.clip(a[:, 3], 1, 127)
        phrase_score = Score.from_notes(a, qpm=120.0)
        seconds = float(np.clip(a[:, 1].max() / 2.0, 2.0, MAX_ANSWER_SECONDS))
        settings = {"kind": "answer", "model": model, "style": "", "seconds": seconds, "bars": None,
                    "temperature": 1.0, "top_p": 0.95, "seed": seed if seed is not None else secrets.randbelow(2**31),
                    "key": "", "primer": {"name": f"a phrase of {len(a)} notes"}}
        studio.check_primer(settings, phrase_score)
        piece = studio.answer(settings, phrase_score)
        return {"piece": piece.summary(), **studio.notes(piece.id)}  # notes, tracks, bars, answer_from

    @app.get("/api/jobs")
    def jobs():
        return studio.jobs.listing()

    @app.get("/api/jobs/{jid}")
    def job(jid: str):
        return studio.jobs.get(jid)

    @app.post("/api/jobs/{jid}/cancel")
    def cancel(jid: str):
        return studio.jobs.cancel(jid)

    @app.get("/files/{pid}/{kind}")
    def download(pid: str, kind: str):
        return FileResponse(studio.file(pid, kind))

    return app


class _Server(uvicorn.Server):
    """uvicorn's server, cancelling every job as soon as a stop is asked (not after the requests end)."""

    def __init__(self, config, on_exit):
        super().__init__(config)
        self.on_exit = on_exit

    def handle_exit(self, sig, frame):
        threading.Thread(target=self.on_exit, daemon=True).start()
        super().handle_exit(sig, frame)


def serve(runs=(), *, host: str = "127.0.0.1", port: int = 7860, echo=print) -> None:
    """Serve the studio until Ctrl-C (or SIGTERM), then cancel its jobs and remove every file it wrote.
    `port` 0: a free one."""
    with tempfile.TemporaryDirectory(prefix="musiclstm-studio-") as d:
        local = is_loopback(host)
        app = make_app(Path(d), runs, local=local)
        jobs = app.state.studio.jobs
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as e:
            jobs.close()
            raise MusiclstmError(f"cannot listen on {host}:{port}: {e.strerror or e}") from e
        sock.listen(64)
        port = sock.getsockname()[1]
        if not local:
            echo(f"warning: listening on {host}: anyone who can reach this machine can use the studio (no login)")
        echo(f"musiclstm studio at http://{'[' + host + ']' if ':' in host else host}:{port}/ "
             f"(pieces in {d}, removed on exit; Ctrl-C stops it)")
        # uvicorn re-raises the signal that stopped it; make SIGTERM an exception too, so the folder goes
        previous = signal.signal(signal.SIGTERM, _interrupt)
        try:
            _Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2), jobs.close).run(
                sockets=[sock])
        except KeyboardInterrupt:
            pass
        finally:
            jobs.close()
            signal.signal(signal.SIGTERM, previous)
            sock.close()
    echo(f"studio stopped; removed {d}")


def _interrupt(signum, frame):
    raise KeyboardInterrupt

