"""`compose`: primer + model + controls -> new music (pretty_midi), and the files around it.

This is where music meets the sampler: the primer goes through the same reader and tokenizer as
training, the grammar keeps the output valid, and the ids are decoded back to MIDI.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import torch

from .checkpoint import Model
from .errors import ConfigError, MusiclstmError
from .grammar import Controls, grammar_for
from .sample import check_options, generate
from .score import Score, Track
from .tokenizer import BOS, EOS

INSTRUMENT_ALIASES = {"piano": 0, "epiano": 4, "harpsichord": 6, "organ": 19, "guitar": 24, "bass": 32,
                      "violin": 40, "cello": 42, "strings": 48, "choir": 52, "trumpet": 56, "brass": 61,
                      "sax": 65, "oboe": 68, "clarinet": 71, "flute": 73}


def parse_instruments(spec: str) -> tuple[tuple[int, ...], bool]:
    """'piano,strings,drums' or '0,48' -> (programs, drums wanted)."""
    import pretty_midi

    programs, drums = [], False
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        low = part.lower()
        if low in ("drums", "drum", "percussion"):
            drums = True
        elif low.isdigit() and int(low) < 128:
            programs.append(int(low))
        elif low in INSTRUMENT_ALIASES:
            programs.append(INSTRUMENT_ALIASES[low])
        else:
            try:
                programs.append(pretty_midi.instrument_name_to_program(part))
            except ValueError:
                raise ConfigError(f"unknown instrument {part!r}; use a General MIDI program 0-127, a GM name, "
                                  f"'drums' or one of {', '.join(INSTRUMENT_ALIASES)}") from None
    return tuple(programs), drums


def prime_score(prime=None, *, prime_seconds: float | None = None, prime_bars: float | None = None,
                prime_notes: str | None = None) -> Score | None:
    """A primer (file path, PrettyMIDI, Score or a note list '60 64 67') -> its Score, cut to length."""
    if prime_notes:
        try:
            pitches = [int(p) for p in prime_notes.replace(",", " ").split()]
        except ValueError:
            raise ConfigError(f"--prime-notes takes MIDI pitches like '60 64 67', got {prime_notes!r}") from None
        if not pitches or not all(0 <= p < 128 for p in pitches):
            raise ConfigError("--prime-notes pitches must be 0-127")
        n = len(pitches)
        return Score.from_notes(np.c_[np.arange(n), np.arange(n) + 1, pitches, np.full(n, 80)])
    if prime is None:
        return None
    from .midi import read

    score = prime if isinstance(prime, Score) else read(prime)
    if prime_seconds is not None:
        score = score.crop(float(score.quarters(prime_seconds)))
    elif prime_bars is not None:
        num, den = score.time_signatures[0, 1:]
        score = score.crop(prime_bars * num * 4 / den)
    return score


def compose(model: Model, prime=None, *, seconds: float | None = 30.0, bars: int | None = None,
            tokens: int | None = None, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = 0.95,
            repetition_penalty: float = 1.0, seed: int = 0, num: int = 1, style: str | None = None,
            key: str | None = None, instruments: str | None = None, drums: bool | None = None,
            tempo: float | None = None, max_polyphony: int | None = None, pitch_range=None,
            prime_seconds: float | None = None, prime_bars: float | None = None, prime_notes: str | None = None,
            max_tokens: int = 20_000, return_ids: bool = False):
    """Compose `num` pieces of about `seconds` (or `bars`, or `tokens`) continuing `prime`.

    Returns a `pretty_midi.PrettyMIDI` (a list when `num` > 1); with `return_ids`, also the ids.
    """
    from .midi import to_pretty_midi

    check_options(temperature, top_k, top_p, repetition_penalty)
    if num < 1:
        raise ConfigError("num must be >= 1")
    tok = model.tokenizer
    programs, want_drums = parse_instruments(instruments) if instruments else (None, None)
    if tempo is not None and not 10 <= tempo <= 400:
        raise ConfigError("tempo must be between 10 and 400 qpm")
    if bars is not None and tok.encoding == "performance":
        raise ConfigError("--bars needs a remi or grid model (performance tokens have no bar lines); use --seconds")
    if tempo is not None and tok.encoding == "performance":
        raise ConfigError("--tempo needs a remi or grid model (performance timing is in seconds)")
    controls = Controls(key=key, pitch_range=tuple(pitch_range) if pitch_range else None,
                        programs=programs if tok.encoding == "remi" and programs else None,
                        drums=(drums if drums is not None else (want_drums if programs is not None else True)),
                        max_polyphony=max_polyphony)
    pscore = prime_score(prime, prime_seconds=prime_seconds, prime_bars=prime_bars, prime_notes=prime_notes)
    if style is None and tok.styles and model.meta.get("train", {}).get("styles", "none") != "none":
        style = tok.styles[0]
    if pscore is not None:
        prime_ids = tok.encode(pscore, style=style, eos=False)
    else:
        prime_ids = [BOS] + ([tok.style_id(style)] if style is not None else [])
    grammar = grammar_for(tok, controls)
    start = None

    def stop():
        nonlocal start
        if tokens is not None:
            return torch.zeros(1, dtype=torch.bool)
        if bars is not None:
            now = grammar.bars()
            start = now.clone() if start is None else start
            return now - start > bars
        now = grammar.seconds()
        start = now.clone() if start is None else start
        return now - start >= (seconds or 30.0)

    def constraint(ids, logits):
        allowed = grammar(ids, logits)
        if tokens is None:  # no early end: the piece lasts the length asked for
            allowed[:, EOS] = False
            allowed[~allowed.any(1), EOS] = True
        return allowed

    budget = tokens if tokens is not None else max_tokens
    seqs = generate(model, prime_ids, max_tokens=budget, temperature=temperature, top_k=top_k, top_p=top_p,
                    seed=seed, batch=num, repetition_penalty=repetition_penalty, constraint=constraint, stop=stop)
    out = []
    for ids in seqs:
        score = tok.decode_score(ids)
        if tempo is not None:
            score.tempos = np.array([[0.0, float(tempo)]])
        if programs and tok.encoding != "remi":  # one-stream encodings: voice the tracks as asked
            score.tracks = [Track(programs[i % len(programs)], False, t.name) for i, t in enumerate(score.tracks)]
        out.append(to_pretty_midi(score))
    if return_ids:
        return (out if num > 1 else out[0]), seqs
    return out if num > 1 else out[0]


def sidecar(model: Model, options: dict, prime, ids: list[int]) -> dict:
    """Provenance of one composed file: model fingerprint, seed, every option, primer, output hash."""
    info = {"musiclstm": __import__("musiclstm").__version__, "checkpoint": str(model.path),
            "model_fingerprint": model.fingerprint, "data_fingerprint": model.meta.get("fingerprint"),
            "step": model.meta.get("step"), "options": options, "tokens": len(ids)}
    if prime is not None and isinstance(prime, str | Path):
        info["prime"] = {"path": str(prime), "sha1": hashlib.sha1(Path(prime).read_bytes()).hexdigest()}
    return info


def render_wav(midi_path: Path, wav_path: Path, *, soundfont: str | None = None, rate: int = 44100) -> Path:
    """Synthesize a MIDI file with FluidSynth and a General MIDI soundfont."""
    exe = shutil.which("fluidsynth")
    sf = soundfont or next((str(p) for d in ("/usr/share/sounds/sf2", "/usr/share/soundfonts")
                            for p in sorted(Path(d).glob("*.sf2")) if Path(d).is_dir()), None)
    if exe is None or sf is None:
        raise MusiclstmError("--wav needs FluidSynth and a General MIDI soundfont: "
                             "apt-get install fluidsynth fluid-soundfont-gm")
    res = subprocess.run([exe, "-ni", "-q", "-F", str(wav_path), "-r", str(rate), sf, str(midi_path)],
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600)
    if res.returncode != 0 or not wav_path.exists():
        raise MusiclstmError(f"fluidsynth failed: {(res.stderr or res.stdout).strip()[:200]}")
    return wav_path


def audio(pm, *, rate: int = 22050, soundfont: str | None = None):
    """An inline audio player for a PrettyMIDI (or a MIDI path) in a notebook.

    Renders with FluidSynth and a General MIDI soundfont when both are installed, otherwise with
    pretty_midi's simple sine synthesizer. Returns `IPython.display.Audio`, or (samples, rate)
    where IPython is not installed.
    """
    import tempfile
    import wave

    import numpy as np
    import pretty_midi

    if not isinstance(pm, pretty_midi.PrettyMIDI):
        from .midi import read, to_pretty_midi

        pm = to_pretty_midi(read(pm))
    try:
        with tempfile.TemporaryDirectory() as d:
            mid, wav = Path(d) / "a.mid", Path(d) / "a.wav"
            pm.write(str(mid))
            render_wav(mid, wav, soundfont=soundfont, rate=rate)
            with wave.open(str(wav)) as w:
                raw = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).reshape(-1, w.getnchannels())
                samples, rate = raw.mean(1) / 32768.0, w.getframerate()
    except MusiclstmError:  # no FluidSynth or soundfont: a plain synthesizer
        samples = pm.synthesize(fs=rate)
    try:
        from IPython.display import Audio
    except ImportError:
        return samples, rate
    return Audio(samples, rate=rate)


def write_outputs(pm, path: Path, *, force: bool, info: dict, wav: bool = False, png: bool = False,
                  musicxml: bool = False) -> list[Path]:
    """Write the MIDI and its sidecar (and optional WAV, PNG, MusicXML); never overwrite without force."""
    from .midi import write_midi

    extra = [path.with_suffix(s) for s, on in ((".wav", wav), (".png", png), (".musicxml", musicxml)) if on]
    for p in [path, path.with_suffix(".json"), *extra]:
        if p.exists() and not force:
            raise MusiclstmError(f"{p} exists; use --force to overwrite")
    written = [write_midi(pm, path, force=force)]
    try:
        path.with_suffix(".json").write_text(json.dumps(info, indent=2, default=str))
    except OSError as e:
        raise MusiclstmError(f"cannot write {path.with_suffix('.json')}: {e.strerror or e}") from e
    written.append(path.with_suffix(".json"))
    if wav:
        written.append(render_wav(path, path.with_suffix(".wav")))
    if png:
        from .plot import save_piano_roll

        written.append(save_piano_roll(pm, path.with_suffix(".png")))
    if musicxml:
        import music21

        try:
            parsed = music21.converter.parse(str(path), forceSource=True, storePickle=False)  # no pickle cache
            parsed.write("musicxml", fp=str(path.with_suffix(".musicxml")))
        except Exception as e:  # music21 raises many types; report, don't crash
            raise MusiclstmError(f"music21 could not write MusicXML: {e}") from e
        written.append(path.with_suffix(".musicxml"))
    return written
