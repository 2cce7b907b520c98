"""`corpus fetch`: downloads from a local HTTP server (with Range support written here) of archives built in
the test in each source's real layout; resume, restart, safe unpacking, caps, sha256, the command's errors.

Nothing here reaches the internet: every fetch goes to the local server through `mirror` or
$MUSICLSTM_FETCH_MIRROR (an autouse fixture points the variable at a closed port for any test that forgets).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import re
import stat
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pretty_midi
import pytest
from click.testing import CliRunner

from musiclstm.app.cli import cli
from musiclstm.data import download as D
from musiclstm.data import fetch as F
from musiclstm.data import find_files
from musiclstm.errors import MusiclstmError

# ---- a local server with Range support ------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        srv = self.server
        rng = self.headers.get("Range")
        srv.log.append((self.path, rng))
        data = srv.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start = 0
        m = re.fullmatch(r"bytes=(\d+)-", rng or "")
        if m and not srv.ignore_range:
            start = int(m[1])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = srv.drop.pop(self.path, None)  # drop the connection after `cut` bytes, once
        self.wfile.write(body if cut is None else body[:cut])
        self.wfile.flush()

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.files, srv.drop, srv.log, srv.ignore_range = {}, {}, [], False
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv(F.MIRROR_ENV, "http://127.0.0.1:9")  # a closed port: never the real URLs


# ---- archives in each source's real layout, built here -------------------------------------------------------

_MIDI: list[bytes] = []


def midi() -> bytes:
    if not _MIDI:
        pm = pretty_midi.PrettyMIDI(initial_tempo=120)
        ins = pretty_midi.Instrument(0)
        ins.notes += [pretty_midi.Note(80, p, 0.5 * i, 0.5 * i + 0.4) for i, p in enumerate((60, 62, 64, 65, 67))]
        pm.instruments.append(ins)
        buf = io.BytesIO()
        pm.write(buf)
        _MIDI.append(buf.getvalue())
    return _MIDI[0]


def zip_of(members: dict[str, bytes], *, symlink: str | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.create_system = 3
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            z.writestr(info, "/etc/passwd")
    return buf.getvalue()


def tar_of(members: dict[str, bytes], *, link: tuple[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
        if link:
            info = tarfile.TarInfo(link[0])
            info.type, info.linkname = link[1], "/etc/passwd"
            t.addfile(info)
    return buf.getvalue()


def pop909(**extra) -> bytes:
    top = "POP909-Dataset-master"
    files = {f"{top}/README.md": b"POP909"}
    for n in ("001", "002", "003"):
        files |= {f"{top}/POP909/{n}/{n}.mid": midi(), f"{top}/POP909/{n}/beat_midi.txt": b"0.0 1 1\n",
                  f"{top}/POP909/{n}/versions/{n}-v1.mid": midi()}
    return zip_of(files | extra)


def nottingham() -> bytes:
    top = "nottingham-dataset-master"
    files = {f"{top}/ABC_cleaned/jigs.abc": b"X:1\nT:Jig\nK:D\nDEF|\n"}
    for n in ("jigs1", "reelsa-c2", "waltzes3"):
        files |= {f"{top}/MIDI/{n}.mid": midi(), f"{top}/MIDI/melody/{n}.mid": midi(),
                  f"{top}/MIDI/chords/{n}.mid": midi()}
    return zip_of(files)


def jsb_files() -> dict[str, bytes]:
    grid = [[67, 64, 60, 48], [67, 64, 60, 48], [69, 65, -1, 53], [71, 67, 62, 55]] * 4
    roll = [[48, 60, 64, 67], [53, 65, 69], [55, 62, 67, 71]] * 2
    split = lambda c: {"train": [c] * 3, "valid": [c], "test": [c]}  # noqa: E731
    out = {"Jsb16thSeparated.json": json.dumps(split(grid)).encode()}
    for f in ("jsb-chorales-quarter.json", "jsb-chorales-8th.json", "jsb-chorales-16th.json"):
        out[f] = json.dumps(split(roll)).encode()
    return out


def lmd(**extra) -> bytes:
    songs = ["ABBA/Waterloo.mid", "ABBA/Waterloo.1.mid", "Beatles/Help!.mid"]
    return tar_of({f"clean_midi/{s}": midi() for s in songs} | extra)


def maestro() -> bytes:
    top, rows = "maestro-v3.0.0", []
    files = {}
    for i, (year, split) in enumerate((("2004", "train"), ("2006", "validation"), ("2018", "test"))):
        name = f"{year}/MIDI-Unprocessed_{i}.midi"
        files[f"{top}/{name}"] = midi()
        rows.append({"canonical_composer": "Chopin", "canonical_title": f"Etude {i}", "split": split,
                     "year": year, "midi_filename": name, "audio_filename": name[:-5] + ".wav", "duration": "2.5"})
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    files[f"{top}/maestro-v3.0.0.csv"] = buf.getvalue().encode()
    return zip_of(files)


def serve(srv, name: str, data: bytes | dict[str, bytes]) -> None:
    files = data if isinstance(data, dict) else {F.SOURCES[name].remotes[0].filename: data}
    for f, b in files.items():
        srv.files[f"/{name}/{f}"] = b


@pytest.fixture
def small(monkeypatch):
    """The sources with the piece counts of the small test archives."""
    for name, expect in (("pop909", 3), ("nottingham", 3), ("lmd-clean", 3), ("maestro", 3), ("jsb", 5)):
        monkeypatch.setitem(F.SOURCES, name, dataclasses.replace(F.SOURCES[name], expect=expect))
    monkeypatch.setitem(F.SOURCES, "jsb", dataclasses.replace(F.SOURCES["jsb"], splits={"train": 3, "valid": 1,
                                                                                         "test": 1}))


def change(monkeypatch, name: str, **fields) -> None:
    monkeypatch.setitem(F.SOURCES, name, dataclasses.replace(F.SOURCES[name], **fields))


def leftovers(root) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith(".musiclstm"))


# ---- tests -----------------------------------------------------------------------------------------------------

BUILDERS = {"pop909": pop909, "nottingham": nottingham, "jsb": jsb_files, "lmd-clean": lmd, "maestro": maestro}
LAYOUT = {"pop909": ["POP909/001/001.mid", "POP909/003/versions/003-v1.mid", "README.md"],
          "nottingham": ["MIDI/jigs1.mid", "MIDI/melody/jigs1.mid", "ABC_cleaned/jigs.abc"],
          "jsb": ["Jsb16thSeparated.json", "jsb-chorales-quarter.json"],
          "lmd-clean": ["ABBA/Waterloo.mid", "Beatles/Help!.mid"],
          "maestro": ["maestro-v3.0.0.csv", "2004/MIDI-Unprocessed_0.midi"]}


@pytest.mark.parametrize("name", list(BUILDERS))
def test_fetch_unpacks_the_release_layout(server, small, tmp_path, name):
    serve(server, name, BUILDERS[name]())
    r = F.fetch(name, tmp_path / "out", mirror=server.url)
    for rel in LAYOUT[name]:
        assert (tmp_path / "out" / rel).is_file(), rel
    assert r.pieces == F.SOURCES[name].expect and r.verified == []
    assert leftovers(tmp_path) == []  # no staging folder, no .part
    if name == "jsb":  # what `benchmark jsb DIR` reads
        from musiclstm.evaluation.benchmark import jsb_corpus

        assert len(jsb_corpus(r.dest, "16th").pieces) == 5 and len(jsb_corpus(r.dest, "quarter").pieces) == 5
    else:  # what `train DIR` reads: the folder named in the report, searched recursively
        assert len(find_files(r.train_on)) >= 3


def test_an_interrupted_download_resumes_with_range(server, small, tmp_path):
    data = pop909()
    serve(server, "pop909", data)
    server.drop["/pop909/POP909-Dataset-master.zip"] = cut = len(data) // 2
    with pytest.raises(MusiclstmError, match="interrupted.*run the same command again"):
        F.fetch("pop909", tmp_path / "out", mirror=server.url, retries=0)
    assert not (tmp_path / "out").exists()
    part = tmp_path / ".musiclstm-fetch-out" / "POP909-Dataset-master.zip.part"
    assert part.stat().st_size == cut
    r = F.fetch("pop909", tmp_path / "out", mirror=server.url, retries=0)
    assert server.log[-1] == ("/pop909/POP909-Dataset-master.zip", f"bytes={cut}-")
    assert r.pieces == 3 and leftovers(tmp_path) == []


def test_a_multi_file_source_resumes_where_it_stopped(server, small, tmp_path):
    files = jsb_files()
    serve(server, "jsb", files)
    server.drop["/jsb/jsb-chorales-8th.json"] = cut = 50
    with pytest.raises(MusiclstmError, match="jsb: jsb-chorales-8th.json: download interrupted"):
        F.fetch("jsb", tmp_path / "out", mirror=server.url, retries=0)
    before = len(server.log)
    assert F.fetch("jsb", tmp_path / "out", mirror=server.url, retries=0).pieces == 5
    assert server.log[before:] == [("/jsb/jsb-chorales-8th.json", f"bytes={cut}-"),  # the two done are kept
                                   ("/jsb/jsb-chorales-16th.json", None)]
    assert (tmp_path / "out" / "jsb-chorales-8th.json").read_bytes() == files["jsb-chorales-8th.json"]


def test_a_dropped_connection_is_continued_within_one_call(server, small, tmp_path):
    serve(server, "nottingham", nottingham())
    server.drop["/nottingham/nottingham-dataset-master.zip"] = 1000
    assert F.fetch("nottingham", tmp_path / "out", mirror=server.url).pieces == 3
    assert [rng for _, rng in server.log] == [None, "bytes=1000-"]


def test_a_server_ignoring_range_restarts_the_download(server, small, tmp_path):
    serve(server, "pop909", pop909())
    staging = tmp_path / ".musiclstm-fetch-out"
    staging.mkdir()
    (staging / "POP909-Dataset-master.zip.part").write_bytes(b"stale bytes from some other file")
    server.ignore_range = True
    assert F.fetch("pop909", tmp_path / "out", mirror=server.url).pieces == 3  # 200 -> written from the start
    assert server.log[-1][1] == "bytes=32-"


@pytest.mark.parametrize("member", ["POP909-Dataset-master/../../evil.mid", "/tmp/evil.mid",
                                    "POP909-Dataset-master/POP909/../../../evil.mid", "C:/evil.mid"])
def test_a_member_outside_the_folder_is_refused(server, small, tmp_path, member):
    serve(server, "pop909", pop909(**{member: b"x"}))
    with pytest.raises(MusiclstmError, match=r"^pop909: archive member .*(\.\.|absolute).*refused"):
        F.fetch("pop909", tmp_path / "out", mirror=server.url)
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []
    assert not list(tmp_path.parent.rglob("evil.mid"))


def test_a_member_outside_the_top_folder_is_refused(server, small, tmp_path):
    serve(server, "pop909", pop909(**{"elsewhere/evil.mid": midi()}))
    with pytest.raises(MusiclstmError, match="pop909: archive member 'elsewhere/evil.mid' is outside "
                                             "POP909-Dataset-master/"):
        F.fetch("pop909", tmp_path / "out", mirror=server.url)


def _encrypted(data: bytes) -> bytes:
    """The zip with every member flagged as encrypted (general purpose bit 0, local and central headers)."""
    b = bytearray(data)
    for sig, at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        i = b.find(sig)
        while i >= 0:
            b[i + at] |= 1
            i = b.find(sig, i + 4)
    return bytes(b)


@pytest.mark.parametrize("how", ["duplicate", "encrypted"])
def test_duplicate_and_encrypted_members_are_refused(server, small, tmp_path, how):
    if how == "encrypted":
        data = _encrypted(pop909())
    else:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z, pytest.warns(UserWarning, match="Duplicate name"):
            z.writestr("POP909-Dataset-master/POP909/001/001.mid", midi())
            z.writestr("POP909-Dataset-master/POP909/001/001.mid", b"other")
        data = buf.getvalue()
    serve(server, "pop909", data)
    word = "appears twice" if how == "duplicate" else "is encrypted"
    with pytest.raises(MusiclstmError, match=f"pop909: archive member '.*' {word}; refused"):
        F.fetch("pop909", tmp_path / "out", mirror=server.url)
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_a_symlink_member_is_refused(server, small, tmp_path):
    top = "POP909-Dataset-master"
    serve(server, "pop909", zip_of({f"{top}/POP909/001/001.mid": midi()}, symlink=f"{top}/POP909/link.mid"))
    with pytest.raises(MusiclstmError, match="pop909: archive member .*link.mid' is a symlink; refused"):
        F.fetch("pop909", tmp_path / "out", mirror=server.url)
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("kind,word", [(tarfile.SYMTYPE, "symlink"), (tarfile.LNKTYPE, "hardlink"),
                                       (tarfile.CHRTYPE, "special file"), (tarfile.FIFOTYPE, "special file")])
def test_tar_links_and_devices_are_refused(server, small, tmp_path, kind, word):
    serve(server, "lmd-clean", tar_of({"clean_midi/A/B.mid": midi()}, link=("clean_midi/A/x.mid", kind)))
    with pytest.raises(MusiclstmError, match=f"lmd-clean: archive member 'clean_midi/A/x.mid' is a {word}; refused"):
        F.fetch("lmd-clean", tmp_path / "out", mirror=server.url)
    assert not (tmp_path / "out").exists()


def test_size_caps(server, small, monkeypatch, tmp_path):
    data = pop909(**{"POP909-Dataset-master/zeros.bin": bytes(3 << 20)})  # compresses to a few KB
    serve(server, "pop909", data)
    change(monkeypatch, "pop909", max_download=len(data) - 1)
    with pytest.raises(MusiclstmError, match="pop909: .* bytes is over the cap"):
        F.fetch("pop909", tmp_path / "out", mirror=server.url)
    change(monkeypatch, "pop909", max_download=len(data), max_unpacked=2 << 20)
    with pytest.raises(MusiclstmError, match="pop909: archive unpacks to .* over the cap"):
        F.fetch("pop909", tmp_path / "out", mirror=server.url)
    change(monkeypatch, "pop909", max_unpacked=8 << 20, max_members=5)
    with pytest.raises(MusiclstmError, match="pop909: archive has more than 5 members"):
        F.fetch("pop909", tmp_path / "out", mirror=server.url)
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_a_tar_over_the_unpacked_cap_is_refused_while_streaming(server, small, monkeypatch, tmp_path):
    serve(server, "lmd-clean", lmd(**{"clean_midi/Z/big.mid": bytes(2 << 20)}))
    change(monkeypatch, "lmd-clean", max_unpacked=1 << 20)
    with pytest.raises(MusiclstmError, match="lmd-clean: archive unpacks to more than"):
        F.fetch("lmd-clean", tmp_path / "out", mirror=server.url)


def test_sha256_is_checked(server, small, monkeypatch, tmp_path):
    data = nottingham()
    serve(server, "nottingham", data)
    remote = F.SOURCES["nottingham"].remotes[0]
    change(monkeypatch, "nottingham", remotes=(dataclasses.replace(remote, sha256="0" * 64),))
    with pytest.raises(MusiclstmError, match=f"nottingham: sha256 of {remote.filename} is [0-9a-f]{{64}}, expected 0+"):
        F.fetch("nottingham", tmp_path / "out", mirror=server.url)
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []
    good = hashlib.sha256(data).hexdigest()
    change(monkeypatch, "nottingham", remotes=(dataclasses.replace(remote, sha256=good),))
    assert F.fetch("nottingham", tmp_path / "out", mirror=server.url).verified == [remote.filename]


def test_a_layout_that_does_not_match_names_the_source(server, tmp_path):
    serve(server, "pop909", pop909())  # 3 songs where the real release has 909
    with pytest.raises(MusiclstmError, match=r"^pop909: found 3 songs as POP909/NNN/NNN.mid, not 909 \(expected"):
        F.fetch("pop909", tmp_path / "out", mirror=server.url)
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_unreadable_midi_fails_the_check(server, small, tmp_path):
    top = "nottingham-dataset-master"
    serve(server, "nottingham", zip_of({f"{top}/MIDI/t{i}.mid": b"not midi" for i in range(3)}))
    with pytest.raises(MusiclstmError, match="nottingham: 3 of 3 sampled files do not read"):
        F.fetch("nottingham", tmp_path / "out", mirror=server.url)


def test_ctrl_c_keeps_the_part_file(server, small, monkeypatch, tmp_path):
    serve(server, "pop909", pop909())

    def stop(url, path, **kw):
        path.with_name(path.name + ".part").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(D, "_download_once", stop)
    with pytest.raises(KeyboardInterrupt):
        F.fetch("pop909", tmp_path / "out", mirror=server.url)
    assert (tmp_path / ".musiclstm-fetch-out" / "POP909-Dataset-master.zip.part").read_bytes() == b"half"
    assert not (tmp_path / "out").exists()


def test_a_silent_server_times_out(server, small, monkeypatch, tmp_path):
    slow = threading.Event()

    def stall(self):
        slow.wait(2)  # answers nothing, then hangs up

    monkeypatch.setattr(_Handler, "do_GET", stall)
    serve(server, "jsb", jsb_files())
    try:
        with pytest.raises(MusiclstmError, match="jsb: Jsb16thSeparated.json: cannot reach .*timed out"):
            F.fetch("jsb", tmp_path / "out", mirror=server.url, timeout=0.2, retries=0)
    finally:
        slow.set()


def test_progress_bar_into_an_empty_folder(server, small, tmp_path, capsys):
    serve(server, "maestro", maestro())
    (tmp_path / "m").mkdir()  # an empty folder is no obstacle
    r = F.fetch("maestro", tmp_path / "m", mirror=server.url, progress=True)
    assert "(<year>/<name>.midi; train 1, validation 1, test 1)" in r.summary
    err = capsys.readouterr().err
    assert "maestro: maestro-v3.0.0-midi.zip" in err and "100%" in err


def _cli(*args):
    return CliRunner().invoke(cli, ["corpus", "fetch", *map(str, args)])


def test_cli_unknown_name_is_one_line():
    res = _cli("nope", "somewhere")
    assert res.exit_code == 1
    assert res.output.strip().splitlines() == ["error: unknown corpus 'nope'; known: pop909, nottingham, jsb, "
                                               "lmd-clean, maestro"]


def test_cli_refuses_an_existing_dir_without_force(server, small, monkeypatch, tmp_path):
    monkeypatch.setenv(F.MIRROR_ENV, server.url)
    serve(server, "jsb", jsb_files())
    out = tmp_path / "jsb"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    res = _cli("jsb", out)
    assert res.exit_code == 1 and res.output.strip().splitlines() == [
        f"error: {out} already exists: give --force to replace it"]
    assert server.log == [] and (out / "mine.txt").read_text() == "keep"
    server.files["/jsb/jsb-chorales-8th.json"] = b"{}"  # a failing --force run leaves the old folder alone
    res = _cli("jsb", out, "--force")
    assert res.exit_code == 1 and "jsb: jsb-chorales-8th.json is not a JSB Chorales file" in res.output
    assert (out / "mine.txt").is_file() and leftovers(tmp_path) == []
    serve(server, "jsb", jsb_files())
    res = _cli("jsb", out, "--force")
    assert res.exit_code == 0, res.output
    assert "jsb: 5 chorales (train/valid/test 3/1/1) in 4 files; no published sha256" in res.output
    assert not (out / "mine.txt").exists() and (out / "Jsb16thSeparated.json").is_file()


def test_a_folder_moved_aside_is_never_deleted(server, small, tmp_path):
    aside = tmp_path / ".musiclstm-fetch-out" / "replaced"
    aside.mkdir(parents=True)
    (aside / "mine.txt").write_text("keep")
    with pytest.raises(MusiclstmError, match="an interrupted fetch moved aside: move it back or delete it"):
        F.fetch("jsb", tmp_path / "out", mirror=server.url)
    assert (aside / "mine.txt").read_text() == "keep" and server.log == []


def test_cli_http_error_is_one_line(server, small, tmp_path):
    res = _cli("maestro", tmp_path / "m", "--mirror", server.url)
    assert res.exit_code == 1
    url = f"{server.url}/maestro/maestro-v3.0.0-midi.zip"
    assert res.output.strip().splitlines() == [f"error: maestro: maestro-v3.0.0-midi.zip: HTTP 404 Not Found "
                                               f"from {url}"]
