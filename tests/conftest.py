"""Shared fixtures: the real data folder and a builder of MIDI in code.

The real data lives beside the project at ``../shared/data`` (see its README.md). Tests that need it
take the ``data_dir`` fixture, which skips with a clear reason when the folder is absent (a fresh
clone); everything else builds its music in code with ``make_midi``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pretty_midi
import pytest

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"
NO_DATA = f"real data folder {DATA_DIR} is absent (it sits beside the project as ../shared/data; CI has it)"


def data_files(sub: str, pattern: str = "*") -> list[Path]:
    """Files under DATA_DIR/sub matching `pattern` (recursive, sorted); [] when the data is absent.

    For parametrizing at collection time; pair it with `data_params`, which turns [] into one
    skipped case rather than a silently empty parametrization.
    """
    folder = DATA_DIR / sub
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob(pattern) if p.is_file())


def data_params(files: Sequence[Path]) -> list:
    """pytest params for `files` (id = path relative to the data folder), or one skip when absent."""
    if not files:
        return [pytest.param(None, marks=pytest.mark.skip(reason=NO_DATA), id="no-data")]
    return [pytest.param(f, id=str(f.relative_to(DATA_DIR))) for f in files]


@pytest.fixture(scope="session")
def _test_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("musiclstm-cache")


@pytest.fixture(autouse=True)
def _private_cache(_test_cache, monkeypatch):
    """No test writes into the user's ~/.cache/musiclstm: the default cache is one folder of this test session
    (a test that passes --cache-dir or sets MUSICLSTM_CACHE itself still gets its own)."""
    monkeypatch.setenv("MUSICLSTM_CACHE", str(_test_cache))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real data folder ../shared/data; skips the test when it is absent."""
    if not DATA_DIR.is_dir():
        pytest.skip(NO_DATA)
    return DATA_DIR


# ---- MIDI built in code -----------------------------------------------------------------------

@dataclass
class Part:
    """One instrument for `build_midi`. Times are in quarter notes.

    notes: (start, end, pitch, velocity) rows; pedals: (down, up) rows of sustain pedal (CC64).
    """

    notes: Iterable[tuple[float, float, int, int]] = ()
    program: int = 0
    is_drum: bool = False
    name: str = ""
    pedals: Iterable[tuple[float, float]] = ()
    controls: Iterable[tuple[float, int, int]] = field(default_factory=tuple)  # (quarter, number, value)


def build_midi(parts: Sequence[Part], *, tempos: Sequence[tuple[float, float]] = ((0.0, 120.0),),
               time_signatures: Sequence[tuple[float, int, int]] = (),
               key_signatures: Sequence[tuple[float, int]] = (), resolution: int = 480) -> pretty_midi.PrettyMIDI:
    """A `pretty_midi.PrettyMIDI` from parts whose times are in quarter notes.

    tempos: (quarter, qpm) rows (the first at quarter 0); time_signatures: (quarter, numerator,
    denominator); key_signatures: (quarter, pretty_midi key number 0-23, 12+ = minor).
    Quarter q sits at tick round(q * resolution); seconds follow from the tempo map, so the written
    file holds exactly these quarter positions.
    """
    tempos = sorted(tempos)
    assert tempos[0][0] == 0, "the first tempo must be at quarter 0"
    pm = pretty_midi.PrettyMIDI(resolution=resolution)
    pm._tick_scales = [(int(round(q * resolution)), 60.0 / (qpm * resolution)) for q, qpm in tempos]
    last = [0.0] + [q for q, _ in tempos] + [q for q, *_ in time_signatures] + [q for q, _ in key_signatures]
    for p in parts:
        last += [e for _, e, *_ in p.notes] + [u for _, u in p.pedals] + [q for q, *_ in p.controls]
    pm._update_tick_to_time(int(round(max(last) * resolution)) + 2 * resolution)

    def sec(q: float) -> float:
        return float(pm.tick_to_time(int(round(q * resolution))))

    for p in parts:
        ins = pretty_midi.Instrument(program=p.program, is_drum=p.is_drum, name=p.name)
        for s, e, pitch, vel in p.notes:
            ins.notes.append(pretty_midi.Note(velocity=int(vel), pitch=int(pitch), start=sec(s), end=sec(e)))
        for down, up in p.pedals:
            ins.control_changes.append(pretty_midi.ControlChange(64, 127, sec(down)))
            ins.control_changes.append(pretty_midi.ControlChange(64, 0, sec(up)))
        for q, number, value in p.controls:
            ins.control_changes.append(pretty_midi.ControlChange(int(number), int(value), sec(q)))
        pm.instruments.append(ins)
    for q, num, den in time_signatures:
        pm.time_signature_changes.append(pretty_midi.TimeSignature(int(num), int(den), sec(q)))
    for q, key in key_signatures:
        pm.key_signature_changes.append(pretty_midi.KeySignature(int(key), sec(q)))
    return pm


@pytest.fixture
def make_midi():
    """The `build_midi` helper: ``make_midi([Part(notes=...), ...], tempos=..., ...)`` -> PrettyMIDI."""
    return build_midi


@pytest.fixture
def midi_file(tmp_path):
    """Write a PrettyMIDI to a file under tmp_path: ``midi_file(pm, "name.mid")`` -> Path."""
    def write(pm: pretty_midi.PrettyMIDI, name: str = "built.mid") -> Path:
        path = tmp_path / name
        pm.write(str(path))
        return path

    return write


def scale_corpus(root: Path, files: int = 8, *, qpm: float = 100.0, notes: int = 24, more: int = 4,
                 step: float = 0.3, length: float = 0.25) -> Path:
    """`files` one-track MIDI files of random C-major notes (seeded by file number) in `root`: file i has
    notes + more * i notes, one every `step` seconds lasting `length`. The tiny training corpus."""
    import numpy as np

    root.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        rng = np.random.default_rng(i)
        pm = pretty_midi.PrettyMIDI(initial_tempo=qpm)
        inst = pretty_midi.Instrument(0)
        for j, p in enumerate(60 + rng.choice([0, 2, 4, 5, 7, 9, 11], notes + more * i)):
            inst.notes.append(pretty_midi.Note(80, int(p), j * step, j * step + length))
        pm.instruments.append(inst)
        pm.write(str(root / f"{i}.mid"))
    return root
