"""The studio's routes: what each of the page's requests asks of the session, checked, made a job or answered.

Reading (the page, the models, the pieces, a piece's notes and files), composing (compose, continue), the
harmonizer's (harmonize, infill), the session's (a piece again, play along) and the queue's (jobs, cancel).
Each route checks its form within the studio's caps and hands `Studio.submit` the settings and the primer;
the web application around them (guards, error pages, the server) is `studio`.
May import: every room below, app.studio_jobs, app.studio_session. Not imported by any room (the studio uses it).
"""

from __future__ import annotations

import secrets
from typing import Annotated

import numpy as np
from fastapi import Body, FastAPI, File, Form, UploadFile
from fastapi.responses import FileResponse, HTMLResponse

from ..errors import ConfigError
from ..generation.compose import prime_score
from ..io.midi import read
from ..io.score import Score
from .studio_session import (
    FILES,
    MAX_ANSWER_SECONDS,
    MAX_ITERATIONS,
    MAX_PHRASE_NOTES,
    MAX_SECONDS,
    Studio,
    Upload,
    bars_of,
    capped_melody,
    excerpt,
    parse_bar_range,
    parse_melody,
    seed_of,
)


def add_routes(app: FastAPI, studio: Studio, page: str, catalogue: dict) -> None:
    """Every route of the studio on `app`, over `studio`'s session; `page` is studio.html, `catalogue` the
    models on offer (loaded once, when the app is made)."""
    _add_reading_routes(app, studio, page, catalogue)
    _add_compose_routes(app, studio)
    _add_chorale_routes(app, studio)
    _add_session_routes(app, studio)
    _add_job_routes(app, studio)


def _add_reading_routes(app: FastAPI, studio: Studio, page: str, catalogue: dict) -> None:
    """The page, the models it offers, the pieces made so far, a piece's notes and its files."""

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

    @app.get("/files/{pid}/{kind}")
    def download(pid: str, kind: str):
        return FileResponse(studio.file(pid, kind))


def _length(seconds: float | None, bars: int | None) -> dict:
    """A piece's length as the settings hold it: `bars`, else `seconds` [30], each within the studio's caps."""
    if bars is not None:
        if not 1 <= bars <= MAX_SECONDS // 2:
            raise ConfigError(f"bars must be between 1 and {MAX_SECONDS // 2} in the studio")
        return {"bars": bars, "seconds": None}
    seconds = 30.0 if seconds is None else seconds
    if not 0 < seconds <= MAX_SECONDS:
        raise ConfigError(f"seconds must be between 0 and {MAX_SECONDS} in the studio (got {seconds:g})")
    return {"seconds": seconds, "bars": None}


def _compose_primer(primer: UploadFile | None, prime_notes: str) -> tuple[Upload | None, Score | None, dict | None]:
    """(the upload, the primer score read now, what the piece's primer was) of a compose form: an uploaded
    file (read later, in its job), typed pitches, or nothing."""
    upload = Upload.take(primer) if primer is not None and primer.filename else None
    if upload is not None:
        return upload, None, upload.about
    if prime_notes.strip():
        return None, prime_score(prime_notes=prime_notes), {"name": f"notes {prime_notes.strip()[:40]}"}
    return None, None, None


def _add_compose_routes(app: FastAPI, studio: Studio) -> None:
    """Compose a new piece (from a primer, typed pitches or nothing), or continue one from its chosen bars."""

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
        upload, score, about = _compose_primer(primer, prime_notes)
        if drums not in ("", "yes", "no"):
            raise ConfigError("drums: yes, no or empty (the model's own choice)")
        settings = {"kind": "compose", "model": model, "style": style.strip(), **_length(seconds, bars),
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
                    **_length(seconds, None), "temperature": temperature, "top_p": top_p, "seed": seed_of(seed),
                    "key": "", "primer": {"name": f"#{piece.number} bars {a}-{b}"}}
        studio.check_primer(settings, primer)
        return studio.submit(settings, primer)


def _add_chorale_routes(app: FastAPI, studio: Studio) -> None:
    """The harmonizer's two jobs: four parts under a melody (typed or uploaded), and chosen bars rewritten."""

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


def _phrase_notes(phrase: list[list[float]]) -> np.ndarray:
    """A played phrase ([[start, end, pitch, velocity], ...] in seconds from its first note) checked, as (n, 4)
    rows in quarters at 120 qpm (the primer's tempo): times from its first note, each note at least 0.05 s."""
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
    return a


def _add_session_routes(app: FastAPI, studio: Studio) -> None:
    """A piece of the session made again, and play along (an answer to a played phrase, made at once)."""

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
        a = _phrase_notes(phrase)
        phrase_score = Score.from_notes(a, qpm=120.0)
        seconds = float(np.clip(a[:, 1].max() / 2.0, 2.0, MAX_ANSWER_SECONDS))
        settings = {"kind": "answer", "model": model, "style": "", "seconds": seconds, "bars": None,
                    "temperature": 1.0, "top_p": 0.95, "seed": seed if seed is not None else secrets.randbelow(2**31),
                    "key": "", "primer": {"name": f"a phrase of {len(a)} notes"}}
        studio.check_primer(settings, phrase_score)
        piece = studio.answer(settings, phrase_score)
        return {"piece": piece.summary(), **studio.notes(piece.id)}  # notes, tracks, bars, answer_from


def _add_job_routes(app: FastAPI, studio: Studio) -> None:
    """The queue: every job, one job, and stopping one."""

    @app.get("/api/jobs")
    def jobs():
        return studio.jobs.listing()

    @app.get("/api/jobs/{jid}")
    def job(jid: str):
        return studio.jobs.get(jid)

    @app.post("/api/jobs/{jid}/cancel")
    def cancel(jid: str):
        return studio.jobs.cancel(jid)
