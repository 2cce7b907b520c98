"""`musiclstm studio` in a real browser: the system's headless Chromium (Debian's `chromium`), driven by
Playwright, against the command itself started in a subprocess. Pieces are a few seconds long.

Skipped, with the reason, only when the studio extra, Playwright or a Chromium is missing
(.ci/run installs all three).
"""

from __future__ import annotations

import http.client
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

EXTRA = all(importlib.util.find_spec(m) for m in ("fastapi", "uvicorn", "python_multipart"))
PLAYWRIGHT = importlib.util.find_spec("playwright") is not None
CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
# the README's screenshot: written only when asked (MUSICLSTM_STUDIO_SCREENSHOT=docs/studio.png), so a test run
# never changes the working tree
SCREENSHOT = os.environ.get("MUSICLSTM_STUDIO_SCREENSHOT")

needs_extra = pytest.mark.skipif(not EXTRA, reason="the studio extra is not installed: pip install -e '.[studio]'")
needs_browser = pytest.mark.skipif(
    not (EXTRA and PLAYWRIGHT and CHROMIUM),
    reason="needs the studio extra, Playwright (test extra) and a system Chromium (apt-get install chromium)")


class Studio:
    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, "-m", "musiclstm", "studio", "--port", "0"],
                                     stdout=subprocess.PIPE, text=True)  # its stderr: in the failing test's report
        line = self.proc.stdout.readline()
        found = re.search(r"(http://127\.0\.0\.1:\d+/) \(pieces in (\S+),", line)
        if not found:
            self.proc.kill()
            pytest.fail(f"studio did not start: {line!r}")
        self.url, self.folder = found[1], Path(found[2])
        for _ in range(100):
            try:
                urllib.request.urlopen(self.url, timeout=2).read()
                break
            except OSError:
                time.sleep(0.1)

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        out, _ = self.proc.communicate(timeout=30)
        return out


@pytest.fixture(scope="module")
def studio():
    s = Studio()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    b = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
    yield b
    b.close()
    pw.stop()


def open_page(browser, studio):
    page = browser.new_context(accept_downloads=True, viewport={"width": 1100, "height": 900}).new_page()
    page.set_default_timeout(30_000)
    page.goto(studio.url)
    page.wait_for_selector("body[data-ready='1']")
    return page


@pytest.fixture
def page(browser, studio):
    p = open_page(browser, studio)
    yield p
    p.context.close()


def compose(page, *, seconds: float = 4, seed: str = "", wait: bool = True):
    page.fill("#seconds", str(seconds))
    page.fill("#seed", seed)
    page.click("#compose")
    if wait:
        finished(page)


def finished(page) -> str:
    page.wait_for_function("!document.getElementById('compose').disabled")
    assert page.is_hidden("#error"), page.inner_text("#error")
    assert re.match(r"piece #\d+ made in [\d.]+ s", page.inner_text("#status")), page.inner_text("#status")
    return page.inner_text("#title")


def fetch(page, selector: str) -> bytes:
    """The bytes behind a link in the page, as the browser's session gets them."""
    response = page.request.get(page.eval_on_selector(selector, "a => a.href"))
    assert response.ok, response.text()
    return response.body()


def test_without_the_extra_one_line_says_how_to_install(monkeypatch):
    from musiclstm.app.cli import cli

    monkeypatch.setitem(sys.modules, "fastapi", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "musiclstm.app.studio", raising=False)
    r = CliRunner().invoke(cli, ["studio"])
    assert r.exit_code == 1
    assert r.output.strip().count("\n") == 0 and "pip install 'musiclstm[studio]'" in r.output


@needs_browser
def test_compose_listen_download(page, tmp_path):
    import musiclstm

    compose(page, seconds=8, seed="2")  # fixed seeds here: the same page, and screenshot, every run
    assert re.match(r"#\d+: [\d.]+ s, \d+ notes, seed \d+", page.inner_text("#title"))
    assert page.get_attribute("#player", "src")
    page.wait_for_function("(a => a.readyState >= 1 && a.duration > 0)(document.getElementById('player'))")
    page.wait_for_function("document.getElementById('roll').naturalWidth > 0")
    with page.expect_download() as info:
        page.click("#dl-mid")
    assert info.value.suggested_filename.endswith(".mid")
    info.value.save_as(tmp_path / "piece.mid")
    assert len(musiclstm.read(tmp_path / "piece.mid")) > 0
    for kind in ("wav", "musicxml", "json"):
        assert fetch(page, f"#dl-{kind}")
    page.set_input_files("#primer", str(tmp_path / "piece.mid"))  # continue it: the first 2 s as a primer
    page.fill("#prime-seconds", "2")
    compose(page, seconds=4, seed="3")
    assert page.inner_text("#pieces tr:first-child td:nth-child(9)") == "piece.mid, 2 s"
    page.set_input_files("#primer", files=[])
    page.fill("#prime-seconds", "")
    compose(page, seconds=8, seed="1")
    shot = Path(SCREENSHOT) if SCREENSHOT else tmp_path / "studio.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000  # a page was drawn


@needs_browser
def test_bad_uploads_and_settings_show_one_line(page):
    cases = [({"name": "bad.mid", "mimeType": "audio/midi", "buffer": b"not a midi file"}, "cannot read bad.mid"),
             ({"name": "notes.txt", "mimeType": "text/plain", "buffer": b"60 64 67"}, "not a MIDI, MusicXML or ABC"),
             ({"name": "big.mid", "mimeType": "audio/midi", "buffer": b"\0" * (5 * 2**20 + 1)}, "5 MB limit"),
             ({"name": "huge.mid", "mimeType": "audio/midi", "buffer": b"\0" * (7 * 2**20)}, "5 MB limit")]
    for upload, message in cases:
        page.set_input_files("#primer", files=[upload])
        compose(page, wait=False)
        page.wait_for_selector("#error:not([hidden])")
        text = page.inner_text("#error")
        assert message in text and "\n" not in text and "Traceback" not in text, text
        page.wait_for_function("!document.getElementById('compose').disabled")
    page.set_input_files("#primer", files=[])
    compose(page, seed="abc", wait=False)
    page.wait_for_function("document.getElementById('error').textContent.includes('seed must be')")
    assert page.is_hidden("#result")


@needs_browser
def test_two_tabs_at_once_get_their_own_seeds_and_files(browser, studio):
    a, b = open_page(browser, studio), open_page(browser, studio)
    try:
        for p in (a, b):
            compose(p, wait=False)  # no seed given: each gets a fresh one
        titles = [finished(p) for p in (a, b)]
        seeds = [re.search(r"seed (\d+)", t)[1] for t in titles]
        assert seeds[0] != seeds[1]
        midis = [fetch(p, "#dl-mid") for p in (a, b)]
        assert a.get_attribute("#dl-mid", "href") != b.get_attribute("#dl-mid", "href")
        assert midis[0] != midis[1]
    finally:
        a.context.close()
        b.context.close()


@needs_browser
def test_a_session_piece_is_made_again_exactly(page):
    compose(page, seed="11")
    first = page.get_attribute("#pieces tr:first-child", "data-id")
    page.click("#pieces tr:first-child button:text('again')")
    page.wait_for_function(f"document.querySelector('#pieces tr').dataset.id !== '{first}'")
    finished(page)
    rows = page.eval_on_selector_all("#pieces tr", "rs => rs.slice(0, 2).map(r => [r.dataset.id, r.dataset.seed])")
    assert rows[1][0] == first and rows[0][1] == rows[1][1] == "11"
    get = lambda pid: page.request.get(f"{page.url}files/{pid}/mid").body()  # noqa: E731
    assert get(rows[0][0]) == get(rows[1][0])


@needs_extra
def test_no_request_reaches_the_file_system_and_posts_need_a_length(studio):
    assert studio.url.startswith("http://127.0.0.1:")
    for path in ("files/../../etc/passwd", "files/%2e%2e/%2e%2e/etc/passwd", "files/x/mid", "files/x/..%2fpiece.mid"):
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(studio.url + path, timeout=10)
        assert e.value.code == 404, path
    host, port = studio.url[7:-1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.putrequest("POST", "/api/compose")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    conn.send(b"0\r\n\r\n")
    assert conn.getresponse().status == 411
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("GET", "/api/pieces", headers={"Host": "rebound.example.com"})  # DNS rebinding: refused
    assert conn.getresponse().status == 400


@needs_extra
def test_stopping_removes_its_files(studio):  # last: it stops the module's studio
    assert studio.folder.is_dir()
    out = studio.stop()
    assert "studio stopped" in out and not studio.folder.exists()
