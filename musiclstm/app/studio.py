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
The queue is `studio_jobs`, the session (models, pieces, what a page sends) `studio_session`, the routes (what
each request asks of the session) `studio_routes`; here the web application (its guard and error pages) and
the server.
May import: every room below, app.studio_jobs, app.studio_routes, app.studio_session. Not imported by any room
(the cli starts it).
"""

from __future__ import annotations

import ipaddress
import signal
import socket
import tempfile
import threading
from importlib.resources import files as package_files
from pathlib import Path

import python_multipart  # noqa: F401  FastAPI reads forms with it: a missing one is found at import
import uvicorn
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ..errors import MusiclstmError
from ..io.outputs import synthesizer
from .studio_jobs import Cancelled, Job, Jobs, Watched, log, one_line  # noqa: F401  (re-exported: the studio's names)
from .studio_routes import add_routes
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
    _add_guard(app, local)
    _add_error_handlers(app)
    add_routes(app, studio, page, catalogue)
    return app


def _add_guard(app: FastAPI, local: bool) -> None:
    """The middleware every request passes: loopback hosts only (`local`), POSTs from the studio's own page
    (or no page), with a Content-Length under the upload cap."""

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


def _add_error_handlers(app: FastAPI) -> None:
    """Every error reaches the page as {"error": one line}: project errors and bad forms 400, a crash 500."""

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

