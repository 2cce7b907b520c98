"""`musiclstm studio` in a real browser: the system's headless Chromium (Debian's `chromium`), driven by
Playwright, against the command itself started in a subprocess (one for the module, shared; a second one
on ::1 for the Host, sine-fallback and SIGTERM checks). Pieces are a few seconds long.

Covered: compose with its controls, the roll drawn from the notes (as many as the MIDI), downloads, the
caps, the queue (one at a time, places, a full queue refused), cancel on the server, Origin and Host
checks, harmonize (typed and uploaded), infill of chosen bars, continue from chosen bars, again with the
same or a new seed, play along on the on-screen keyboard (timed) and through a mocked Web MIDI, and
Ctrl-C / SIGTERM stopping within seconds while composing.

Skipped, with the reason, only when the studio extra, Playwright or a Chromium is missing
(.ci/run installs all three).
"""

from __future__ import annotations

import http.client
import importlib.util
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
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


MELODY = "G4 G4 A4 B4 B4 A4 G4 F#4 E4 E4 F#4 G4 G4:2 F#4:2"  # four bars of 4/4


class Studio:
    def __init__(self, *args: str, env: dict | None = None):
        self.proc = subprocess.Popen([sys.executable, "-m", "musiclstm", "studio", "--port", "0", *args],
                                     stdout=subprocess.PIPE, text=True, env=env)  # its stderr: in the report
        line = self.proc.stdout.readline()
        found = re.search(r"(http://(127\.0\.0\.1|\[::1\]):(\d+)/) \(pieces in (\S+),", line)
        if not found:
            self.proc.kill()
            pytest.fail(f"studio did not start: {line!r}")
        self.url, self.host, self.port, self.folder = found[1], found[2].strip("[]"), int(found[3]), Path(found[4])
        for _ in range(100):
            try:
                urllib.request.urlopen(self.url, timeout=2).read()
                break
            except OSError:
                time.sleep(0.1)

    def request(self, method: str, path: str, fields: dict | None = None, headers: dict | None = None):
        """(status, JSON body) of one request, sent as a script would send it (no Origin unless given)."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        body = urllib.parse.urlencode(fields).encode() if fields is not None else None
        hdrs = {"Content-Type": "application/x-www-form-urlencoded"} if body is not None else {}
        conn.request(method, path, body=body, headers={**hdrs, **(headers or {})})
        r = conn.getresponse()
        data = r.read()
        try:
            return r.status, json.loads(data)
        except ValueError:
            return r.status, data

    def job(self, jid: str) -> dict:
        return self.request("GET", f"/api/jobs/{jid}")[1]

    def running(self, jid: str, timeout: float = 30) -> dict:
        """Wait until a job has written something."""
        t = time.monotonic()
        while time.monotonic() - t < timeout:
            j = self.job(jid)
            if j["state"] == "running" and j["done"] > 0:
                return j
            assert j["state"] in ("queued", "running"), j
            time.sleep(0.05)
        pytest.fail(f"job {jid} did not start")

    def stop(self, sig=signal.SIGINT) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
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
    b = pw.chromium.launch(executable_path=CHROMIUM,
                           args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"])
    yield b
    b.close()
    pw.stop()


def open_page(browser, studio, init_script: str | None = None):
    page = browser.new_context(accept_downloads=True, viewport={"width": 1100, "height": 900}).new_page()
    page.set_default_timeout(30_000)
    if init_script:
        page.add_init_script(init_script)
    page.goto(studio.url)
    page.wait_for_selector("body[data-ready='1']")
    return page


@pytest.fixture
def page(browser, studio):
    p = open_page(browser, studio)
    yield p
    p.context.close()


def compose(page, *, seconds: float = 4, seed: str = "", wait: bool = True, model: str | None = None):
    page.click("nav button[data-tab='form']")
    if model is not None:
        page.select_option("#model", model)
    page.fill("#seconds", str(seconds))
    page.fill("#seed", seed)
    page.click("#compose")
    if wait:
        finished(page)


def harmonize(page, melody: str | None = MELODY, *, seed: str = "5", passes: int = 16) -> str:
    """Harmonize `melody` (None: the one the page offers) in the page; the new piece's id."""
    page.click("nav button[data-tab='harm-form']")
    if melody is not None:
        page.fill("#melody", melody)
    page.fill("#harm-seed", seed)
    page.fill("#harm-iterations", str(passes))
    page.click("#harmonize")
    finished(page)
    return page.get_attribute("#pieces tr:first-child", "data-id")


def finished(page) -> str:
    page.wait_for_function("!document.getElementById('compose').disabled")
    assert page.is_hidden("#error"), page.inner_text("#error")
    assert re.match(r"piece #\d+ made in [\d.]+ s", page.inner_text("#status")), page.inner_text("#status")
    page.wait_for_selector("#roll[data-notes]")
    return page.inner_text("#title")


def fetch(page, selector: str) -> bytes:
    """The bytes behind a link in the page, as the browser's session gets them."""
    response = page.request.get(page.eval_on_selector(selector, "a => a.href"))
    assert response.ok, response.text()
    return response.body()


def midi_notes(data: bytes) -> list[tuple]:
    """(track, start s, end s, pitch) of every note of a MIDI file, rounded to the millisecond."""
    import pretty_midi

    pm = pretty_midi.PrettyMIDI(io.BytesIO(data))
    return sorted((k, round(n.start, 3), round(n.end, 3), n.pitch)
                  for k, i in enumerate(pm.instruments) for n in i.notes)


def piece_midi(page, pid: str) -> bytes:
    return page.request.get(f"{page.url}files/{pid}/mid").body()


def drag_bars(page, first: int, last: int) -> None:
    """Choose bars on the roll by dragging across them with the mouse."""
    box = page.locator("#roll").bounding_box()
    r = page.evaluate("window.studio.roll")
    x = lambda t: box["x"] + r["left"] + t / r["end"] * r["width"]  # noqa: E731
    y = box["y"] + box["height"] / 2
    page.mouse.move(x(r["bars"][first - 1]) + 3, y)
    page.mouse.down()
    page.mouse.move(x(r["bars"][last]) - 3, y, steps=4)
    page.mouse.up()


def test_without_the_extra_one_line_says_how_to_install(monkeypatch):
    from musiclstm.app.cli import cli

    monkeypatch.setitem(sys.modules, "fastapi", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "musiclstm.app.studio", raising=False)
    r = CliRunner().invoke(cli, ["studio"])
    assert r.exit_code == 1
    assert r.output.strip().count("\n") == 0 and "pip install 'musiclstm[studio]'" in r.output


def test_two_first_steps_at_once_share_one_fused_cell():
    """Two requests reaching a fresh model together: the second must not see half-built fused weights
    (it raised AttributeError `_bias` when they were built in two assignments)."""
    import threading

    import torch

    from musiclstm.models.lstm import ModelConfig, MusicLSTM

    net = MusicLSTM(ModelConfig(vocab_size=20, embed=8, hidden=8, layers=2)).eval()
    building, go_on = threading.Event(), threading.Event()

    class Slow(type(net.rnn)):  # thread A pauses while it builds the biases, so that B steps meanwhile
        def __getattr__(self, name):
            if name == "bias_ih_l0" and threading.current_thread().name == "A" and not building.is_set():
                building.set()
                go_on.wait(2)
            return super().__getattr__(name)

    net.rnn.__class__ = Slow
    errors, outputs = [], []

    def step():
        try:
            outputs.append(net.step(torch.tensor([3]), net.zero_state(1))[0])
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    a = threading.Thread(target=step, name="A")
    a.start()
    assert building.wait(10)
    b = threading.Thread(target=step, name="B")
    b.start()
    b.join(1)
    go_on.set()
    a.join(10)
    b.join(10)
    assert not errors, errors
    assert len(outputs) == 2 and torch.equal(outputs[0], outputs[1])


@needs_browser
def test_compose_listen_download(page, tmp_path):
    import musiclstm

    compose(page, seconds=8, seed="2")  # fixed seeds here: the same page every run
    assert re.match(r"#\d+: [\d.]+ s, \d+ notes, seed \d+", page.inner_text("#title"))
    assert page.get_attribute("#player", "src")
    page.wait_for_function("(a => a.readyState >= 1 && a.duration > 0)(document.getElementById('player'))")
    with page.expect_download() as info:
        page.click("#dl-mid")
    assert info.value.suggested_filename.endswith(".mid")
    info.value.save_as(tmp_path / "piece.mid")
    assert len(musiclstm.read(tmp_path / "piece.mid")) > 0
    # the roll is drawn by the page from the notes: as many as the MIDI file holds, and its bars
    notes = midi_notes((tmp_path / "piece.mid").read_bytes())
    assert int(page.get_attribute("#roll", "data-notes")) == len(notes) > 0
    assert int(page.get_attribute("#roll", "data-bars")) >= 2
    assert page.evaluate("document.getElementById('roll').getContext('2d').getImageData(0, 0, 600, 280)"
                         ".data.some((v, i) => i % 4 === 0 && v < 200)")  # something drawn
    for kind in ("wav", "musicxml", "json"):
        assert fetch(page, f"#dl-{kind}")
    page.set_input_files("#primer", str(tmp_path / "piece.mid"))  # continue it: the first 2 s as a primer
    page.fill("#prime-seconds", "2")
    compose(page, seconds=4, seed="3")
    assert page.inner_text("#pieces tr:first-child td.from") == "piece.mid, 2 s"
    page.set_input_files("#primer", files=[])
    page.fill("#prime-seconds", "")
    # more of the compose controls: bars, top-k, key, max. polyphony, primer notes
    page.fill("#seconds", "")
    page.fill("#bars", "2")
    page.fill("#top-k", "20")
    page.fill("#key", "D minor")
    page.fill("#max-polyphony", "1")
    page.fill("#prime-notes", "62 65 69")
    page.fill("#seed", "4")
    page.click("#compose")
    finished(page)
    s = page.evaluate("fetch('/api/pieces').then(r => r.json()).then(l => l[0].settings)")
    assert (s["bars"], s["top_k"], s["key"], s["max_polyphony"], s["primer"]["name"]) == \
        (2, 20, "D minor", 1, "notes 62 65 69")
    from musiclstm.io.outputs import find_fluidsynth

    assert page.is_visible("#synth-note") == (find_fluidsynth() is None)  # the sine note: also test_ipv6_...


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
    # the caps, stated in the page and kept by the server
    assert "pieces up to 300 s" in page.inner_text("#limits") and "4,000 tokens" in page.inner_text("#limits")
    assert page.get_attribute("#seconds", "max") == "300"
    page.eval_on_selector("#seconds", "e => e.removeAttribute('max')")
    compose(page, seconds=301, seed="1", wait=False)
    page.wait_for_function("document.getElementById('error').textContent.includes('between 0 and 300')")


@needs_extra
def test_lengths_and_primers_are_capped(studio):
    assert studio.request("POST", "/api/compose", {"model": "folk", "seconds": 1800})[0] == 400
    assert studio.request("POST", "/api/compose", {"model": "folk", "bars": 900})[0] == 400
    import random

    tune = random.Random(0).choices(range(48, 84), k=3000)  # no bar repeats: remi 3 writes a repeat as one token
    status, body = studio.request("POST", "/api/compose", {"model": "folk", "seconds": 4,
                                                            "prime_notes": " ".join(map(str, tune))})
    assert status == 400 and re.match(r"the primer is [\d,]+ tokens; the studio takes at most 4,000", body["error"])
    status, body = studio.request("POST", "/api/harmonize", {"melody": "C5:4 " * 65})
    assert status == 400 and "at most 256" in body["error"]


@needs_extra
def test_one_piece_at_a_time_a_short_queue_and_cancel(studio):
    """Pieces are made by one worker of the studio's own, not by the web server's 40 threads: the rest wait,
    each knows its place, a full queue is refused, and a cancelled piece stops on the server."""
    status, first = studio.request("POST", "/api/compose", {"model": "folk", "seconds": 300, "seed": 1})
    assert status == 202
    studio.running(first["id"])
    waiting = [studio.request("POST", "/api/compose", {"model": "folk", "seconds": 300})[1] for _ in range(8)]
    assert [w["position"] for w in waiting] == list(range(1, 9))
    status, body = studio.request("POST", "/api/compose", {"model": "folk", "seconds": 4})
    assert status == 503 and "busy" in body["error"]
    listing = studio.request("GET", "/api/jobs")[1]
    assert [j["state"] for j in listing].count("running") == 1 and len(listing) == 9
    assert studio.job(waiting[3]["id"])["position"] == 4
    for w in waiting:
        assert studio.request("POST", f"/api/jobs/{w['id']}/cancel", {})[1]["state"] == "cancelled"
    studio.request("POST", f"/api/jobs/{first['id']}/cancel", {})
    time.sleep(1)
    done = studio.job(first["id"])
    assert done["state"] == "cancelled" and done["piece"] is None
    time.sleep(0.5)
    assert studio.job(first["id"])["done"] == done["done"]  # the work stopped
    assert studio.request("GET", "/api/jobs")[1] == []


@needs_browser
def test_cancel_frees_the_server(browser, studio, page):
    """A long piece in one tab: another tab's piece waits for it, says so, and is made once it is cancelled."""
    rows = page.locator("#pieces tr").count()
    # bach: its soprano and then the harmonizer's voices take long enough (folk's remi 3 writes 300 s in ~2,100
    # tokens, done before the other tab asks on an idle machine)
    compose(page, seconds=300, seed="1", wait=False, model="bach")
    page.wait_for_function("/[1-9][\\d,]* tokens written/.test(document.getElementById('status').textContent)")
    assert page.is_visible("#cancel") and page.is_visible("#progress")
    other = open_page(browser, studio)
    try:
        compose(other, seconds=4, seed="2", wait=False)
        other.wait_for_function("document.getElementById('status').textContent === 'waiting: next in line'")
        page.wait_for_timeout(500)
        assert other.inner_text("#status") == "waiting: next in line"  # the one worker is busy
        page.click("#cancel")
        page.wait_for_function("document.getElementById('status').textContent.startsWith('cancelled')")
        finished(other)  # the worker is free again: the waiting piece is made
    finally:
        other.context.close()
    page.reload()
    page.wait_for_selector("body[data-ready='1']")
    assert page.locator("#pieces tr").count() == rows + 1  # the cancelled piece never came


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
def test_a_session_piece_is_made_again_exactly_or_with_a_new_seed(page):
    compose(page, seed="11")
    first = page.get_attribute("#pieces tr:first-child", "data-id")
    page.click("#pieces tr:first-child button:text('again')")
    page.wait_for_function(f"document.querySelector('#pieces tr').dataset.id !== '{first}'")
    finished(page)
    rows = page.eval_on_selector_all("#pieces tr", "rs => rs.slice(0, 2).map(r => [r.dataset.id, r.dataset.seed])")
    assert rows[1][0] == first and rows[0][1] == rows[1][1] == "11"
    assert piece_midi(page, rows[0][0]) == piece_midi(page, rows[1][0])
    page.click("#again-new")
    page.wait_for_function(f"document.querySelector('#pieces tr').dataset.id !== '{rows[0][0]}'")
    finished(page)
    assert page.get_attribute("#pieces tr:first-child", "data-seed") != "11"


@needs_browser
def test_harmonize_shows_four_voices(page, tmp_path):
    from musiclstm.app.studio import parse_melody

    pid = harmonize(page, None, seed="5", passes=32)  # the page's own melody: Ode to Joy, eight bars
    assert page.get_attribute("#roll", "data-tracks") == "4"
    legend = page.inner_text("#legend")
    for voice in ("Soprano", "Alto", "Tenor", "Bass"):
        assert re.search(voice + r" \([1-9]\d*\)", legend), legend
    notes = midi_notes(piece_midi(page, pid))
    assert {k for k, *_ in notes} == {0, 1, 2, 3}
    assert int(page.get_attribute("#roll", "data-notes")) == len(notes)
    assert page.get_attribute("#roll", "data-bars") == "8"
    soprano = [(s, p) for k, s, e, p in notes if k == 0]
    melody = parse_melody(page.input_value("#melody"))
    assert soprano == [(round(s / 2, 3), p) for s, p in zip(melody.start, melody.pitch, strict=True)]  # 120 qpm
    assert page.is_visible("#infill-tools")
    drag_bars(page, 2, 3)  # the chosen bars, as infill and continue will take them
    assert page.input_value("#sel-bars") == "2-3"
    shot = Path(SCREENSHOT) if SCREENSHOT else tmp_path / "studio.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000  # a page was drawn


@needs_browser
def test_harmonize_an_uploaded_melody(page, tmp_path):
    from musiclstm.app.studio import parse_melody
    from musiclstm.io.midi import to_pretty_midi

    to_pretty_midi(parse_melody("D5 C5 B4 A4 G4:2 A4:2")).write(str(tmp_path / "tune.mid"))
    page.click("nav button[data-tab='harm-form']")
    page.set_input_files("#melody-file", str(tmp_path / "tune.mid"))
    page.fill("#harm-key", "G major")
    pid = harmonize(page, None, seed="8", passes=8)
    assert page.inner_text("#pieces tr:first-child td.from") == "tune.mid"
    notes = midi_notes(piece_midi(page, pid))
    assert [p for k, s, e, p in notes if k == 0] == [74, 72, 71, 69, 67, 69]
    assert page.get_attribute("#roll", "data-tracks") == "4"
    assert "G major" in page.inner_text("#pieces tr:first-child")


@needs_browser
def test_infill_changes_only_the_chosen_bars(page):
    pid = harmonize(page, seed="6")
    bars = page.evaluate("window.studio.roll.bars")
    drag_bars(page, 2, 2)
    assert page.input_value("#sel-bars") == "2"
    page.fill("#infill-seed", "9")
    page.fill("#infill-iterations", "16")
    page.click("#infill")
    finished(page)
    new = page.get_attribute("#pieces tr:first-child", "data-id")
    assert page.get_attribute("#pieces tr:first-child", "data-kind") == "infill"
    before, after = midi_notes(piece_midi(page, pid)), midi_notes(piece_midi(page, new))
    inside = lambda n: n[0] > 0 and bars[1] - 1e-3 <= n[1] < bars[2] - 1e-3  # noqa: E731  ATB, bar 2
    assert [n for n in before if not inside(n)] == [n for n in after if not inside(n)]
    assert [n for n in before if inside(n)] != [n for n in after if inside(n)]


@needs_browser
def test_continue_starts_with_the_chosen_bars(page):
    import musiclstm

    pid = harmonize(page, seed="7")
    page.fill("#sel-bars", "3-4")
    page.dispatch_event("#sel-bars", "change")
    page.select_option("#cont-model", "bach")
    page.fill("#cont-seconds", "4")
    page.fill("#cont-seed", "3")
    page.click("#continue")
    finished(page)
    assert page.inner_text("#pieces tr:first-child td.from").endswith(" bars 3-4")
    old = musiclstm.read(piece_midi(page, pid))
    new = musiclstm.read(piece_midi(page, page.get_attribute("#pieces tr:first-child", "data-id")))
    chosen = sorted((round(s - 8, 3), p) for s, p in zip(old.start, old.pitch, strict=True) if 8 <= s < 16)
    last = max(s for s, _ in chosen)
    opening = sorted((round(s, 3), p) for s, p in zip(new.start, new.pitch, strict=True) if s < last)
    assert opening == [n for n in chosen if n[0] < last]
    assert len(new) > len(chosen)  # and goes on


KEYS = [60, 62, 64, 65, 67]


def play_phrase(page, pitches=KEYS) -> None:
    for p in pitches:
        box = page.locator(f"#keyboard [data-pitch='{p}']").bounding_box()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] - 10)
        page.mouse.down()
        page.wait_for_timeout(120)
        page.mouse.up()
        page.wait_for_timeout(40)


@needs_browser
def test_the_keyboard_gets_an_answer_played_from_its_notes(page):
    """The answer sounds from its notes in the browser, not from a server WAV. The latency is printed (`pytest -s`;
    about 0.7 s on an idle 2-core machine) and bounded only against a hang: a timed assertion fails on a busy one."""
    page.click("nav button[data-tab='play']")
    play_phrase(page)
    page.wait_for_function("window.studio.timing.answerSounding")
    t = page.evaluate("window.studio.timing")
    latency = t["answerSounding"] - t["phraseEnd"]  # from the last key's release to the answer sounding
    print(f"play along: the answer sounded {latency:.0f} ms after the phrase ended")
    assert latency < 10_000, t
    page.wait_for_selector("#pieces tr:first-child[data-kind='answer']")
    answer = page.evaluate("fetch('/api/pieces').then(r => r.json()).then(l => l[0])")
    assert answer["answer_from"] > 0 and "wav" not in answer["files"]  # played from its notes, not a WAV
    assert int(page.get_attribute("#roll", "data-notes")) > len(KEYS)
    assert re.match(r"answer: \d+ notes", page.inner_text("#play-status"))
    assert re.match(r"#\d+: [\d.]+ s, \d+ notes, seed \d+$", page.inner_text("#title"))


MOCK_MIDI = """
(() => {
  const input = {id: 'in1', name: 'Mock keyboard', onmidimessage: null};
  const sent = [];
  const output = {id: 'out1', name: 'Mock synth', send: (data, at) => sent.push(Array.from(data))};
  window.__midi = {input, sent};
  navigator.requestMIDIAccess = async () => ({inputs: new Map([['in1', input]]), outputs: new Map([['out1', output]]),
                                              onstatechange: null});
})();
"""


@needs_browser
def test_web_midi_call_and_response(browser, studio):
    page = open_page(browser, studio, MOCK_MIDI)
    try:
        page.click("nav button[data-tab='play']")
        page.wait_for_function("document.getElementById('midi-in').textContent === 'Mock keyboard'")
        page.select_option("#midi-out", "out1")
        page.evaluate("""async keys => {
            for (const p of keys) {
              window.__midi.input.onmidimessage({data: new Uint8Array([0x90, p, 100])});
              await new Promise(r => setTimeout(r, 100));
              window.__midi.input.onmidimessage({data: new Uint8Array([0x80, p, 0])});
            }}""", KEYS)
        page.wait_for_function("window.studio.timing.answerSounding")
        page.wait_for_selector("#pieces tr:first-child[data-kind='answer']")
        sent = page.evaluate("window.__midi.sent")
        answer = page.evaluate("fetch('/api/pieces').then(r => r.json()).then(l => l[0])")
        notes = page.evaluate(f"fetch('/api/pieces/{answer['id']}/notes').then(r => r.json())")
        played = [n for n in notes["notes"] if n[0] >= answer["answer_from"] - 1e-6]
        assert sorted(m[1] for m in sent if m[0] == 0x90) == sorted(n[2] for n in played)
        assert len(sent) == 2 * len(played)
        assert answer["settings"]["primer"]["name"] == f"a phrase of {len(KEYS)} notes"
    finally:
        page.context.close()


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
def test_posts_from_other_sites_are_refused(studio):
    """A page of another site cannot make the studio work (403); the studio's own page and clients that send
    no Origin (curl, scripts) can."""
    fields = {"model": "folk", "seconds": 2, "seed": 1}
    for origin in ("http://evil.example", "null", f"http://localhost:{studio.port}", "https://127.0.0.1:1"):
        status, body = studio.request("POST", "/api/compose", fields, {"Origin": origin})
        assert status == 403 and "another site" in body["error"], origin
    status, body = studio.request("POST", "/api/answer", None, {"Origin": "http://evil.example",
                                                                 "Content-Length": "0"})
    assert status == 403
    for headers in ({"Origin": f"http://127.0.0.1:{studio.port}"}, {}):
        status, job = studio.request("POST", "/api/compose", fields, headers)
        assert status == 202, job
        studio.request("POST", f"/api/jobs/{job['id']}/cancel", {})


def ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@needs_browser
@pytest.mark.skipif(not ipv6(), reason="this machine has no IPv6 loopback")
def test_ipv6_loopback_checks_hosts_says_sine_and_stops_on_sigterm(browser):
    """--host ::1 keeps the Host check; without FluidSynth the page says the sound is the sine fallback;
    SIGTERM stops the studio within seconds while it is composing, and removes its files."""
    env = {**os.environ, "PATH": str(Path(sys.executable).parent)}  # no fluidsynth on the PATH
    s = Studio("--host", "::1", env=env)
    try:
        assert s.url.startswith("http://[::1]:")
        for host, code in (("rebound.example.com", 400), (f"rebound.example.com:{s.port}", 400),
                           (f"[::1]:{s.port}", 200), (f"localhost:{s.port}", 200), ("127.0.0.1", 200)):
            assert s.request("GET", "/api/pieces", headers={"Host": host})[0] == code, host
        page = open_page(browser, s)
        try:
            assert "sine" in page.inner_text("#status")
            compose(page, seconds=2, seed="1")
            assert page.is_visible("#synth-note") and "sine fallback" in page.inner_text("#synth-note")
        finally:
            page.context.close()
        status, job = s.request("POST", "/api/compose", {"model": "folk", "seconds": 300, "seed": 1})
        s.running(job["id"])
        t = time.monotonic()
        out = s.stop(signal.SIGTERM)
        assert time.monotonic() - t < 20, out  # seconds, not the minutes a 300 s piece takes (2 s measured idle)
        assert "studio stopped" in out and not s.folder.exists()
    finally:
        if s.proc.poll() is None:
            s.proc.kill()


@needs_extra
def test_stopping_removes_its_files(studio):  # last: it stops the module's studio
    assert studio.folder.is_dir()
    status, job = studio.request("POST", "/api/compose", {"model": "folk", "seconds": 300, "seed": 1})
    studio.running(job["id"])
    t = time.monotonic()
    out = studio.stop()  # Ctrl-C while composing
    assert time.monotonic() - t < 20, out  # seconds, not the minutes a 300 s piece takes (2 s measured idle)
    assert "studio stopped" in out and not studio.folder.exists()
