"""The studio's session: the models on offer, this session's pieces (made, written, read back), and what a page
sends (typed melodies, bar ranges, uploads, seeds), each checked and capped before any work.
May import: every room below, app.studio_jobs. Not imported by any room (the studio uses it).
"""


from __future__ import annotations

import collections
import dataclasses
import hashlib
import itertools
import re
import secrets
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import python_multipart  # noqa: F401  FastAPI reads forms with it: a missing one is found at import
from fastapi import UploadFile
from starlette.exceptions import HTTPException

from ..errors import ConfigError, MusiclstmError
from ..generation.compose import compose, prime_score
from ..io.midi import MIDI_SUFFIXES, NOTATION_SUFFIXES, read
from ..io.outputs import sidecar, write_pieces
from ..io.score import Score
from ..models import checkpoint as ck
from .studio_jobs import MAX_QUEUED, WORKERS, Job, Jobs, Watched

MAX_UPLOAD = 5 * 2**20  # bytes of one primer or melody file
MAX_SECONDS = 300  # seconds of music in one composed piece (the command allows 1,800)
MAX_PRIMER_TOKENS = 4000  # tokens of one primer
MAX_MELODY_QUARTERS = 256  # quarter notes of one melody to harmonize (64 bars of 4/4)
MAX_ITERATIONS = 128  # Gibbs passes of harmonize and infill
MAX_PHRASE_NOTES, MAX_ANSWER_SECONDS = 64, 8  # play along: a phrase and its answer
FILES = {"mid": "piece.mid", "wav": "piece.wav", "png": "piece.png", "json": "piece.json",
         "musicxml": "xml/piece.musicxml"}  # what a piece's URL may name -> its file in the piece's folder


def limits() -> dict:
    """The caps, as the page states them."""
    return {"seconds": MAX_SECONDS, "primer_tokens": MAX_PRIMER_TOKENS, "melody_quarters": MAX_MELODY_QUARTERS,
            "iterations": MAX_ITERATIONS, "upload_mb": MAX_UPLOAD // 2**20, "workers": WORKERS,
            "queue": MAX_QUEUED, "phrase_notes": MAX_PHRASE_NOTES, "answer_seconds": MAX_ANSWER_SECONDS}


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


def seed_of(text: str) -> int:
    text = (text or "").strip()
    if text and not (text.isdigit() and int(text) < 2**63):
        raise ConfigError(f"seed must be a whole number >= 0, or empty for a fresh one; got {text[:20]!r}")
    return int(text) if text else secrets.randbelow(2**31)

