"""The 13 findings of issue 14, re-run as a user types them, each output read back.

    python bench/compose_controls.py [--out DIR] [--only 1,3,7] [--json results.json]

Every case runs `musiclstm ...` in a fresh working folder under --out (default: a temporary folder),
with OMP_NUM_THREADS=1, and measures what it wrote with pretty_midi (seconds = end of the last
note, notes, bars = bars up to that end counted from the file's meters, most notes sounding at once over the
non-drum tracks, programs, pitch ranges), the WAV header, the JSON sidecar, the exit status and
the wall time of the command. "No FluidSynth" runs with a PATH from which every folder holding a
`fluidsynth` executable is removed. It prints one line per measurement; docs/compose_controls.md is
the table of them.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np
import pretty_midi

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
A_MINOR = {9, 11, 0, 2, 4, 5, 7}


def run(args: list[str], cwd: Path, *, fluidsynth: bool = True, tty: bool = False) -> dict:
    """`musiclstm ARGS` in `cwd` -> rc, stdout, stderr, wall seconds."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MUSICLSTM_CACHE=str(cwd.parent / "cache"))
    if not fluidsynth:
        env["PATH"] = os.pathsep.join(d for d in env["PATH"].split(os.pathsep)
                                      if not (Path(d) / "fluidsynth").exists())
        assert shutil.which("fluidsynth", path=env["PATH"]) is None
    cmd = [shutil.which("musiclstm") or "musiclstm", *args]
    if tty:  # a pseudo-terminal, so that progress bars show
        cmd = ["script", "-qec", "stty cols 100 rows 40; " + " ".join(_quote(c) for c in cmd), "/dev/null"]
    t = time.perf_counter()
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, errors="replace")
    return {"rc": p.returncode, "out": p.stdout, "err": p.stderr, "wall": time.perf_counter() - t}


def _quote(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'"


def stats(path: Path) -> dict:
    pm = pretty_midi.PrettyMIDI(str(path))
    end = pm.get_end_time()
    notes = [(n, i) for i in pm.instruments for n in i.notes]
    events = sorted([(n.start, 1) for n, i in notes if not i.is_drum] + [(n.end, -1) for n, i in notes
                                                                        if not i.is_drum])
    poly = cur = 0
    for _, d in events:
        cur += d
        poly = max(poly, cur)
    pitches = collections.Counter(n.pitch for n, i in notes if not i.is_drum)
    return {"seconds": round(end, 2), "notes": len(notes), "bars": bars_with_music(path),
            "poly": poly,
            "max_onset": max(collections.Counter(round(n.start, 3) for n, _ in notes).values(), default=0),
            "drum_notes": sum(len(i.notes) for i in pm.instruments if i.is_drum),
            "programs": sorted({i.program for i in pm.instruments if not i.is_drum and i.notes}),
            "tracks": [(i.name, i.program, len(i.notes), min(n.pitch for n in i.notes), max(n.pitch for n in i.notes),
                        round(float(np.mean([n.pitch for n in i.notes])), 1)) for i in pm.instruments if i.notes],
            "pitch": (min(pitches), max(pitches)) if pitches else None,
            "top_pitch_share": (pitches.most_common(1)[0][1], sum(pitches.values())) if pitches else None,
            "outside_a_minor": sum(c for p, c in pitches.items() if p % 12 not in A_MINOR),
            "meters": sorted({f"{t.numerator}/{t.denominator}" for t in pm.time_signature_changes})}


def bars_with_music(path: Path) -> int:
    """Bars up to the last note's end, from the file's own meters in quarter notes (pretty_midi's downbeats
    count a 2/2 bar as two)."""
    from musiclstm.io.midi import read

    score = read(path)
    if len(score) == 0:
        return 0
    end, q, bars = float(score.end.max()), 0.0, 0
    sigs = [(float(t), float(n) * 4 / float(d)) for t, n, d in score.time_signatures] or [(0.0, 4.0)]
    while q < end - 1e-6:
        q += next(length for t, length in reversed(sigs) if t <= q + 1e-6)
        bars += 1
    return bars


def first_line(r: dict) -> str:
    text = (r["err"].strip() or r["out"].strip()).splitlines()
    return f"exit {r['rc']}, {len(text)} line(s): {text[0] if text else ''}"


def wav_seconds(path: Path) -> float:
    with wave.open(str(path)) as w:
        return w.getnframes() / w.getframerate()


def compose_case(label: str, args: list[str], d: Path, mid: str, **kw) -> dict:
    r = run(["compose", *args, "-o", mid], d, **kw)
    res = {"case": label, "command": "musiclstm compose " + " ".join(_quote(a) if " " in a else a for a in args)
           + f" -o {mid}", "rc": r["rc"], "wall_s": round(r["wall"], 1)}
    if r["rc"] == 0:
        res.update(stats(d / mid))
        side = json.loads((d / mid).with_suffix(".json").read_text())
        res["tokens"], res["seed"] = side.get("tokens"), side["options"]["seed"]
    res["message"], res["stdout"] = first_line(r), r["out"].strip().splitlines()
    return res


def tiny_run(d: Path, n: int = 12) -> Path:
    """A briefly trained model: `tiny` with 16 units, 4 steps, on n Nottingham tunes."""
    corpus = d / "nott"
    corpus.mkdir(exist_ok=True)
    for f in sorted((DATA / "nottingham").glob("*.mid"))[:n]:
        shutil.copy(f, corpus / f.name)
    r = run(["train", str(corpus), "--out", str(d / "tiny"), "--preset", "tiny", "--hidden", "16", "--embed", "8",
             "--layers", "1", "--seq-len", "32", "--batch-size", "4", "--max-steps", "4", "-q", "--force"], d)
    assert r["rc"] == 0, r
    return d / "tiny"


def new(root: Path, name: str) -> Path:
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    return d


def c1(root):
    d = new(root, "c1")
    return [compose_case("bach strings", ["--style", "bach", "--instruments", "strings", "--seed", "1"], d, "a.mid"),
            compose_case("bach 24", ["--style", "bach", "--instruments", "24", "--seed", "1"], d, "b.mid"),
            compose_case("folk README instruments", ["--instruments", "piano,strings,drums", "--seed", "1"], d,
                         "c.mid"),
            compose_case("pop README instruments", ["--style", "pop", "--instruments", "piano,strings,drums",
                                                    "--seed", "1"], d, "d.mid"),
            compose_case("pop drums", ["--style", "pop", "--drums", "--seed", "1"], d, "e.mid"),
            compose_case("bach quartet", ["--style", "bach", "--instruments", "violin,viola,cello,contrabass",
                                          "--seed", "1"], d, "f.mid")]


def c2(root):
    d = new(root, "c2")
    return [compose_case("poly 1", ["--max-polyphony", "1", "--seed", "1"], d, "a.mid"),
            compose_case("pop poly 3", ["--style", "pop", "--max-polyphony", "3", "--seed", "1"], d, "b.mid"),
            compose_case("pop poly 3 A minor", ["--style", "pop", "--max-polyphony", "3", "--key", "A minor",
                                                "--seed", "1"], d, "c.mid")]


def c3(root):
    d = new(root, "c3")
    out = [compose_case(f"{s} bars 8", ["--style", s, "--bars", "8", "--seed", "1"], d, f"bars-{s}.mid")
           for s in ("folk", "bach", "pop")]
    out += [compose_case(f"tempo {q}", ["--tempo", str(q), "--seed", "1"], d, f"tempo{q}.mid") for q in (60, 120, 180)]
    out += [compose_case(f"pop 30 s seed {s}", ["--style", "pop", "--seconds", "30", "--seed", str(s)], d,
                         f"pop{s}.mid") for s in range(1, 6)]
    tiny = tiny_run(d)
    out += [compose_case(f"tiny tokens 300 seed {s}", ["-c", str(tiny), "--tokens", "300", "--seed", str(s)], d,
                         f"tok{s}.mid") for s in range(1, 4)]
    return out


def c4(root):
    d = new(root, "c4")
    out = [compose_case(f"{s} s", ["--seconds", str(s), "--seed", "1"], d, f"long{s}.mid")
           for s in (60, 600, 1000, 1800)]
    out.append(compose_case("1801 s", ["--seconds", "1801"], d, "over.mid"))
    r = run(["compose", "--seconds", "300", "--seed", "1", "-o", "tty.mid"], d, tty=True)
    out.append({"case": "progress on a terminal", "command": "musiclstm compose --seconds 300 --seed 1 -o tty.mid",
                "rc": r["rc"], "wall_s": round(r["wall"], 1), "progress_bar": "it/s" in r["out"] or "%|" in r["out"],
                "tail": r["out"].replace("\r", "\n").strip().splitlines()[-3:]})
    return out


def c5(root):
    d = new(root, "c5")
    out = []
    for label, args, fs in (("README line 2, no FluidSynth", ["--style", "bach", "--png", "--wav", "-o", "chorale.mid"],
                             False),
                            ("num 2 png wav, no FluidSynth", ["--num", "2", "--png", "--wav", "--seed", "1", "-o",
                                                              "two.mid"], False),
                            ("wav with FluidSynth", ["--wav", "--seed", "1", "-o", "fs.mid"], True)):
        before = set(os.listdir(d))
        r = run(["compose", *args], d, fluidsynth=fs)
        files = sorted(set(os.listdir(d)) - before)
        out.append({"case": label, "command": "musiclstm compose " + " ".join(args),
                    "fluidsynth_on_path": fs, "rc": r["rc"], "files": files,
                    "wav_seconds": [round(wav_seconds(d / f), 1) for f in files if f.endswith(".wav")],
                    "stdout": r["out"].strip().splitlines(), "stderr": r["err"].strip().splitlines()[-2:]})
    return out


def c6(root):
    d = new(root, "c6")
    a, b = run(["compose"], d), run(["compose"], d)
    files = sorted(os.listdir(d))
    sides = [json.loads((d / f).read_text()) for f in ("composition.json", "composition-2.json")]
    seed = sides[0]["options"]["seed"]
    r = run(["compose", "--seed", str(seed), "-o", "again.mid"], d)
    return [{"case": "two bare composes", "command": "musiclstm compose; musiclstm compose",
             "rc": [a["rc"], b["rc"]], "files": files, "seeds": [s["options"]["seed"] for s in sides],
             "differ": (d / "composition.mid").read_bytes() != (d / "composition-2.mid").read_bytes(),
             "reproduced_with_seed": r["rc"] == 0
             and (d / "again.mid").read_bytes() == (d / "composition.mid").read_bytes(),
             "stdout": [a["out"].strip(), b["out"].strip()]}]


def c7(root, num=256):
    return [*_many(root, "c7", num, []), *_many(root, "c7pop", 64, ["--style", "pop"]),
            compose_case("temperature 0", ["--temperature", "0", "--seed", "1"], new(root, "c7"), "t0.mid")]


def _many(root, name, num, args):
    d = new(root, name)
    r = run(["compose", *args, "--num", str(num), "--seed", "1", "-o", "n.mid"], d)
    per = {f.name: stats(f) for f in sorted(d.glob("n-*.mid"))}
    noisy = [(k, s["notes"], s["poly"], s["pitch"], s["meters"]) for k, s in per.items()
             if s["notes"] > 1000 or s["poly"] > 12 or not s["pitch"] or s["pitch"][0] < 21 or s["pitch"][1] > 108]
    ss = list(per.values())
    return [{"case": f"{num} pieces {' '.join(args) or 'default'}",
             "command": f"musiclstm compose {' '.join(args)} --num {num} --seed 1 -o n.mid".replace("  ", " "),
             "rc": r["rc"], "wall_s": round(r["wall"], 1), "pieces": len(ss), "noisy": noisy,
             "max_notes": max(s["notes"] for s in ss), "max_poly": max(s["poly"] for s in ss),
             "max_onset": max(s["max_onset"] for s in ss), "min_notes": min(s["notes"] for s in ss),
             "pieces_with_1/8_or_1/16": sum(bool({"1/8", "1/16"} & set(s["meters"])) for s in ss),
             "notes_p50_p99": (float(np.percentile([s["notes"] for s in ss], 50)),
                               float(np.percentile([s["notes"] for s in ss], 99))),
             "pitch_range": (min(s["pitch"][0] for s in ss if s["pitch"]),
                             max(s["pitch"][1] for s in ss if s["pitch"])),
             "meters": sorted({m for s in ss for m in s["meters"]}),
             "seconds": (min(s["seconds"] for s in ss), max(s["seconds"] for s in ss)),
             "stderr": r["err"].strip().splitlines()[-3:]}]


def c8(root):
    d = new(root, "c8")
    pm = pretty_midi.PrettyMIDI()
    pm.instruments.append(pretty_midi.Instrument(0))
    pm.write(str(d / "empty.mid"))
    pm.instruments[0].notes.append(pretty_midi.Note(80, 60, 0, 1))
    pm.write(str(d / "p.mid"))
    return [compose_case(label, args, d, f"{k}.mid") for k, (label, args) in enumerate((
        ("prime and prime-notes", ["--prime", "p.mid", "--prime-notes", "60 64 67"]),
        ("prime-seconds alone", ["--prime-seconds", "4"]),
        ("seconds and bars", ["--seconds", "10", "--bars", "4"]),
        ("empty primer", ["--prime", "empty.mid"])))]


def c9(root):
    d = new(root, "c9")
    (d / "adir").mkdir(exist_ok=True)
    return [compose_case("style Bach", ["--style", "Bach", "--seconds", "5", "--seed", "1"], d, "b.mid"),
            compose_case("-o a folder --force", ["--force"], d, "adir"),
            compose_case("wrote names every file", ["--prime-notes", "60 64 67", "--png", "--seconds", "10",
                                                    "--seed", "1"], d, "w.mid"),
            compose_case("range error", ["--temperature", "-1"], d, "r.mid")]


def c10(root):
    d = new(root, "c10")
    return [compose_case(m, ["-c", m, "--seconds", "20", "--seed", "1"], d, f"{m}.mid")
            for m in ("jsb16", "jsb_quarter")]


def c13(root):
    d = root / "c13"
    d.mkdir(parents=True, exist_ok=True)
    corpus = d / "nott"
    corpus.mkdir(exist_ok=True)
    for f in sorted((DATA / "nottingham").glob("*.mid"))[:40]:
        shutil.copy(f, corpus / f.name)
    (corpus / "broken.mid").write_bytes(b"MThd\x00\x00\x00\x06\x00\x01\x00\x02\x01\xe0MTrk\x00\x00\xff\xff")
    common = ["--preset", "tiny", "--hidden", "32", "--embed", "16", "--layers", "1", "--seq-len", "64",
              "--batch-size", "8", "--eval-every", "10"]
    a = run(["train", str(corpus), "--out", "run", *common, "--max-steps", "20"], d, tty=True)
    b = run(["train", str(corpus), "--out", "run", *common, "--max-steps", "30", "--resume"], d, tty=True)
    books = d / "books"
    books.mkdir(exist_ok=True)
    from music21.common import getCorpusFilePath

    shutil.copy(Path(getCorpusFilePath()) / "oneills1850" / "0001-0050.abc", books)
    c = run(["train", str(books), "--out", "abc", *common, "--max-steps", "2", "-q"], d)
    rep = json.loads((d / "abc" / "data_report.json").read_text()) if c["rc"] == 0 else {}
    lines = lambda t: [x.strip() for x in t.replace("\r", "\n").splitlines() if x.strip()]  # noqa: E731
    return [{"case": "progress shows validation NLL",
             "command": f"musiclstm train nott --out run {' '.join(common)} --max-steps 20",
                  "rc": a["rc"], "progress_with_val": [x for x in lines(a["out"]) if "val=" in x][-1:]},
                 {"case": "resume", "command": "... --max-steps 30 --resume", "rc": b["rc"],
                  "resume_lines": [x for x in lines(b["out"]) if "resum" in x.lower()],
                  "skipped_lines_first": sum("skipped" in x for x in lines(a["out"])),
                  "skipped_lines_resume": sum("skipped" in x for x in lines(b["out"]))},
                 {"case": "ABC book", "command": "musiclstm train books --out abc ... (oneills1850/0001-0050.abc)",
                  "rc": c["rc"], "pieces": rep.get("files"), "skipped": rep.get("skipped"),
                  "message": first_line(c)}]


def c12(root):
    t = time.perf_counter()
    p = subprocess.run([sys.executable, str(ROOT / "bench" / "threads.py"), "--seconds", "6", "--repeats", "1"],
                       capture_output=True, text=True)
    return [{"case": "threads bench", "command": "python bench/threads.py --seconds 6 --repeats 1",
                  "rc": p.returncode, "wall_s": round(time.perf_counter() - t, 1), "out": p.stdout.strip().splitlines(),
                  "train_help": [x.strip() for x in subprocess.run(["musiclstm", "train", "--help"],
                                 capture_output=True, text=True).stdout.splitlines() if "--threads" in x]}]


CASES = {1: c1, 2: c2, 3: c3, 4: c4, 5: c5, 6: c6, 7: c7, 8: c8, 9: c9, 10: c10, 12: c12, 13: c13}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, help="Working folder [a temporary one].")
    p.add_argument("--only", help="Comma-separated case numbers [all; 11 is the test suite run from a folder "
                   "holding composition.mid].")
    p.add_argument("--json", type=Path, help="Write the results here (after each case).")
    a = p.parse_args()
    root = a.out or Path(tempfile.mkdtemp(prefix="compose-controls-"))
    only = [int(x) for x in a.only.split(",")] if a.only else list(CASES)
    res = json.loads(a.json.read_text()) if a.json and a.json.exists() else {}
    for k in only:
        res[str(k)] = CASES[k](root)
        print(json.dumps({k: res[str(k)]}, default=str), flush=True)
        if a.json:
            a.json.write_text(json.dumps(res, indent=1, default=str))


if __name__ == "__main__":
    main()
