"""Composed music is valid MIDI, checked on the file a user gets and read with mido's raw messages:
no stuck notes, no zero-length notes, no note-off without its note-on, velocities 1-127, no note
longer than the decoder's cap. Nothing here replays the grammar that produced the tokens (that can
only agree with itself); the checker is shown to catch each defect on files built to have it."""

from __future__ import annotations

import io

import mido
import pytest
import torch

from musiclstm.encodings.tokenizer import Tokenizer
from musiclstm.generation.compose import compose
from musiclstm.models.checkpoint import Model
from musiclstm.models.lstm import ModelConfig, MusicLSTM

CAP_SECONDS = {"performance": 10.0, "remi": 32 * 60 / 30, "grid": 64 / 4 * 60 / 100}  # longest a decoder allows


def midi_defects(data: bytes, *, cap_seconds: float | None = None) -> list[str]:
    """Defects of a standard MIDI file, from its raw note messages (times in seconds via its tempo map)."""
    mf = mido.MidiFile(file=io.BytesIO(data))
    defects, sounding, now = [], {}, 0.0
    for msg in mf:  # all tracks merged in time order, msg.time = seconds since the previous message
        now += msg.time
        if msg.type not in ("note_on", "note_off"):
            continue
        key = (msg.channel, msg.note)
        if msg.type == "note_on" and msg.velocity > 0:
            if key in sounding:
                defects.append(f"note-on of a sounding key {key} at {now:.3f} s")
            sounding[key] = now
            continue
        if key not in sounding:
            defects.append(f"note-off without a note-on {key} at {now:.3f} s")
            continue
        start = sounding.pop(key)
        if now - start <= 0:
            defects.append(f"zero-length note {key} at {now:.3f} s")
        elif cap_seconds is not None and now - start > cap_seconds + 1e-3:
            defects.append(f"note {key} lasts {now - start:.2f} s (cap {cap_seconds:g} s)")
    defects += [f"stuck note {key} from {t:.3f} s" for key, t in sounding.items()]
    return defects


def _file(messages, tpq: int = 480) -> bytes:
    mf = mido.MidiFile(ticks_per_beat=tpq)
    mf.tracks.append(mido.MidiTrack(messages))
    buf = io.BytesIO()
    mf.save(file=buf)
    return buf.getvalue()


ON, OFF = (lambda n, t=0, v=80: mido.Message("note_on", note=n, velocity=v, time=t),
           lambda n, t=0: mido.Message("note_off", note=n, velocity=0, time=t))


@pytest.mark.parametrize("messages,defect", [
    ([ON(60), OFF(60, 480)], None),
    ([ON(60), OFF(60, 480), ON(62)], "stuck note"),
    ([ON(60), OFF(60, 0)], "zero-length note"),
    ([OFF(60, 10)], "note-off without a note-on"),
    ([ON(60), ON(60, 10), OFF(60, 480)], "note-on of a sounding key"),
    ([ON(60), OFF(60, 480 * 40)], "lasts"),  # 40 quarters at 120 qpm = 20 s > 10 s
])
def test_the_checker_catches_each_defect(messages, defect):
    found = midi_defects(_file(messages), cap_seconds=10.0)
    assert (not found) if defect is None else any(defect in d for d in found), found


def _random_model(encoding: str, seed: int) -> Model:
    tok = Tokenizer(encoding)
    torch.manual_seed(seed)
    net = MusicLSTM(ModelConfig(tok.vocab_size, embed=16, hidden=32, layers=1, dropout=0.0))
    return Model(net.eval(), tok, {"step": 0})


@pytest.mark.parametrize("encoding", ["performance", "remi", "grid"])
def test_composed_files_are_valid_midi(encoding):
    """An untrained model samples freely, so only the grammar and the decoder stand between it and
    broken MIDI: the written files must still have no defect."""
    model = _random_model(encoding, 0)
    pms = compose(model, seconds=12, num=3, seed=5, temperature=1.5, top_p=None)
    for pm in pms:
        buf = io.BytesIO()
        pm.write(buf)
        data = buf.getvalue()
        notes = sum(m.type == "note_on" and m.velocity > 0 for m in mido.MidiFile(file=io.BytesIO(data)))
        assert notes > 0
        assert midi_defects(data, cap_seconds=CAP_SECONDS[encoding]) == []
