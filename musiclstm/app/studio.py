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
The queue is `studio_jobs`, the session (models, pieces, what a page sends) `studio_session`; here the web
application and the server.
May import: every room below, app.studio_jobs, app.studio_session. Not imported by any room (the cli starts it).
"""

from __future__ import annotations

import ipaddress
import secrets
import signal
import socket
import tempfile
import threading
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
from ..generation.compose import prime_score
from ..io.midi import read
from ..io.outputs import synthesizer
from ..io.score import Score
from .studio_jobs import Cancelled, Job, Jobs, Watched, log, one_line  # noqa: F401  (re-exported: the studio's names)
from .studio_session import (  # noqa: F401
    FILES,
    MAX_ANSWER_SECONDS,
    MAX_ITERATIONS,
    MAX_MELODY_QUARTERS,
    MAX_PHRASE_NOTES,
    MAX_PRIMER_TOKENS,
    MAX_SECONDS,
    MAX_UPLOAD,
    Piece,
    Studio,
    Upload,
    bars_of,
    capped_melody,
    excerpt,
    limits,
    parse_bar_range,
    parse_melody,
    read_upload,
    seed_of,
)

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


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

