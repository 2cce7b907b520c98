"""`musiclstm studio`: a local web page over the same Python API the commands use.

FastAPI serves one small page (studio.html, beside this file) and a few JSON routes; the music is
made by `load`, `compose` and `write_pieces`, exactly as `musiclstm compose` makes it. Safe by default:
it listens on 127.0.0.1 only; an upload is capped at 5 MB and read only by `midi.read`; nothing a
request names is a path (models, pieces and files are looked up in tables this module fills); every
piece lives in one temporary folder removed when the studio stops; errors reach the page as one line.
May import: every room below. Not imported by any room (the cli starts it).
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import signal
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from importlib.resources import files as package_files
from pathlib import Path
from typing import Annotated

import python_multipart  # noqa: F401  FastAPI reads forms with it: a missing one is found at import
import uvicorn
from fastapi import FastAPI, File, Form, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from ..errors import ConfigError, MusiclstmError
from ..generation.compose import compose
from ..io.midi import MIDI_SUFFIXES, NOTATION_SUFFIXES, read
from ..io.outputs import sidecar, synthesizer, write_pieces
from ..io.score import Score
from ..models import checkpoint as ck

MAX_UPLOAD = 5 * 2**20  # bytes of one primer file
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
FILES = {"mid": "piece.mid", "wav": "piece.wav", "png": "piece.png", "json": "piece.json",
         "musicxml": "xml/piece.musicxml"}  # what a piece's URL may name -> its file in the piece's folder
log = logging.getLogger("musiclstm.app.studio")


@dataclass
class Piece:
    """One composed piece: the settings that make it again exactly, and its folder of files."""

    id: str
    number: int
    settings: dict  # model, style, seconds, temperature, top_p, key, instruments, seed, prime_seconds, primer
    folder: Path
    primer: Score | None
    duration: float  # seconds of music
    notes: int
    elapsed: float  # seconds it took to make
    musicxml_error: str | None = None

    def summary(self) -> dict:
        files = {k: f"/files/{self.id}/{k}" for k in FILES if k != "musicxml" or self.musicxml_error is None}
        name = f"{self.settings['model']}-{self.number}-seed{self.settings['seed']}"
        return {"id": self.id, "number": self.number, "settings": self.settings, "duration": round(self.duration, 1),
                "notes": self.notes, "elapsed": round(self.elapsed, 2), "files": files, "name": name,
                "musicxml_error": self.musicxml_error}


class Studio:
    """The models on offer (bundled ones and run folders, by name) and this session's pieces."""

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
        self.made = 0  # pieces started, for their numbers
        self.lock = threading.Lock()

    def model(self, name: str):
        if name not in self.sources:
            raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(self.sources)}")
        with self.lock:
            if name not in self.models:
                self.models[name] = ck.load(self.sources[name])
            return self.models[name]

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

    def make(self, settings: dict, primer: Score | None) -> Piece:
        """Compose one piece with `settings` (its seed included) and write its files; the same settings and
        primer give the same music."""
        model = self.model(settings["model"])
        start = time.perf_counter()
        kw = {k: settings[k] or None for k in ("style", "key", "instruments", "prime_seconds")}
        pm, ids = compose(model, primer, seconds=settings["seconds"], temperature=settings["temperature"],
                          top_p=settings["top_p"], seed=settings["seed"], return_ids=True, progress=False, **kw)
        with self.lock:
            self.made += 1
            pid, number = secrets.token_hex(8), self.made
        folder = self.folder / pid
        record = {**settings, "checkpoint": self.sources[settings["model"]]}
        info = sidecar(model, record, ids=ids)
        write_pieces([(pm, folder / FILES["mid"], info)], wav=True, png=True)
        try:  # MusicXML apart: music21 failing on one piece should not cost the listener the rest
            write_pieces([(pm, folder / "xml" / FILES["mid"], info)], musicxml=True)
            why = None
        except MusiclstmError as e:
            why = str(e)
        piece = Piece(pid, number, settings, folder, primer, pm.get_end_time(),
                      sum(len(i.notes) for i in pm.instruments), time.perf_counter() - start, why)
        with self.lock:
            self.pieces[pid] = piece
        return piece

    def file(self, pid: str, kind: str) -> Path:
        piece = self.pieces.get(pid)
        if piece is None or kind not in FILES or (kind == "musicxml" and piece.musicxml_error):
            raise HTTPException(404, "no such file in this session")
        return piece.folder / FILES[kind]


def read_primer(upload: UploadFile) -> tuple[Score, dict]:
    """An uploaded primer through the one reader, at most MAX_UPLOAD bytes (MIDI read from memory; notation
    from a file named here, since music21 reads files)."""
    name = Path(upload.filename or "primer").name[:80]
    suffix = Path(name).suffix.lower()
    if suffix not in MIDI_SUFFIXES | NOTATION_SUFFIXES:
        raise ConfigError(f"{name} is not a MIDI, MusicXML or ABC file "
                          f"({', '.join(sorted(MIDI_SUFFIXES | NOTATION_SUFFIXES))})")
    data = upload.file.read(MAX_UPLOAD + 1)
    if len(data) > MAX_UPLOAD:
        raise ConfigError(f"{name} is over the {MAX_UPLOAD // 2**20} MB limit for a primer")
    if suffix in MIDI_SUFFIXES:
        score = read(data, name=name)
    else:  # music21 reads notation from a file: one named here, deleted at once
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / f"primer{suffix}"
            path.write_bytes(data)
            score = read(path, name=name)
    if len(score) == 0:
        raise ConfigError(f"the primer {name} has no notes")
    return score, {"name": name, "sha1": hashlib.sha1(data).hexdigest()}


def one_line(e: Exception) -> str:
    """An error's first line, options named as the page names them ('--top-p' -> 'top-p')."""
    return re.sub(r"(?<![\w-])--(?=[a-z])", "", (str(e).strip().splitlines() or [type(e).__name__])[0])[:300]


def make_app(folder: Path, runs=(), *, local: bool = True) -> FastAPI:
    """The studio's web app, writing its pieces under `folder` (which the caller removes).

    `local`: answer only requests addressed to this machine by name (127.0.0.1, localhost), so that
    a web site cannot reach the studio through a DNS name it points here (DNS rebinding)."""
    studio = Studio(folder, runs)
    app = FastAPI(title="musiclstm studio", docs_url=None, redoc_url=None, openapi_url=None)
    if local:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=["127.0.0.1", "localhost"])
    page = package_files("musiclstm.app").joinpath("studio.html").read_text(encoding="utf-8")
    catalogue = {"models": studio.catalogue(), "synthesizer": synthesizer()}  # loads every model: errors now

    @app.middleware("http")
    async def cap_uploads(request, call_next):  # refuse big bodies before reading a byte of them
        if request.method == "POST":
            length = request.headers.get("content-length")
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
        field = str(first.get("loc", ("", "?"))[-1]).replace("_", "-")
        return JSONResponse({"error": f"{field}: {first.get('msg', 'invalid')}"}, status_code=400)

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

    @app.post("/api/compose")
    def make(model: Annotated[str, Form()], style: Annotated[str, Form()] = "",
             seconds: Annotated[float, Form()] = 30.0, temperature: Annotated[float, Form()] = 1.0,
             top_p: Annotated[float, Form()] = 0.95, key: Annotated[str, Form()] = "",
             instruments: Annotated[str, Form()] = "", seed: Annotated[str, Form()] = "",
             prime_seconds: Annotated[float | None, Form()] = None,
             primer: Annotated[UploadFile | None, File()] = None):
        if seed.strip() and not (seed.strip().isdigit() and int(seed) < 2**63):
            raise ConfigError(f"seed must be a whole number >= 0, or empty for a fresh one; got {seed.strip()[:20]!r}")
        score, about = read_primer(primer) if primer is not None and primer.filename else (None, None)
        settings = {"model": model, "style": style.strip(), "seconds": seconds, "temperature": temperature,
                    "top_p": top_p, "key": key.strip(), "instruments": instruments.strip(),
                    "seed": int(seed) if seed.strip() else secrets.randbelow(2**31),
                    "prime_seconds": prime_seconds if score is not None else None, "primer": about}
        return studio.make(settings, score).summary()

    @app.post("/api/again/{pid}")
    def again(pid: str):
        piece = studio.pieces.get(pid)
        if piece is None:
            raise HTTPException(404, "no such piece in this session")
        return studio.make(dict(piece.settings), piece.primer).summary()

    @app.get("/files/{pid}/{kind}")
    def download(pid: str, kind: str):
        return FileResponse(studio.file(pid, kind))

    return app


def serve(runs=(), *, host: str = "127.0.0.1", port: int = 7860, echo=print) -> None:
    """Serve the studio until Ctrl-C (or SIGTERM), then remove every file it wrote. `port` 0: a free one."""
    with tempfile.TemporaryDirectory(prefix="musiclstm-studio-") as d:
        app = make_app(Path(d), runs, local=host in ("127.0.0.1", "localhost"))  # (starlette misreads [::1])
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as e:
            raise MusiclstmError(f"cannot listen on {host}:{port}: {e.strerror or e}") from e
        sock.listen(64)
        port = sock.getsockname()[1]
        if host not in LOCAL_HOSTS:
            echo(f"warning: listening on {host}: anyone who can reach this machine can use the studio (no login)")
        echo(f"musiclstm studio at http://{'[' + host + ']' if ':' in host else host}:{port}/ "
             f"(pieces in {d}, removed on exit; Ctrl-C stops it)")
        # uvicorn re-raises the signal that stopped it; make SIGTERM an exception too, so the folder goes
        previous = signal.signal(signal.SIGTERM, _interrupt)
        try:
            uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)
            sock.close()
    echo(f"studio stopped; removed {d}")


def _interrupt(signum, frame):
    raise KeyboardInterrupt
