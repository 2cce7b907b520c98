"""`compose`: primer + model + controls -> new music (pretty_midi), and the files around it.

This is where music meets the sampler: the primer goes through the same reader and tokenizer as
training, the grammar keeps the output valid, and the ids are decoded back to MIDI.
May import: errors, theory, io, encodings, models, generation.sample, generation.harmonize. Not: data, training,
evaluation, app.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..encodings.grammar import Controls
from ..encodings.registry import grammar_for
from ..encodings.tokenizer import EOS
from ..errors import ConfigError, MusiclstmError
from ..io.score import Score, Track, tracks_by_height
from ..models.cache import Cache
from ..models.checkpoint import Model
from .chorales import harmonized_chorale, is_chorale_model
from .finishing import _cadence, _gm, _voice_programs, _voicing, _within, learned, written_key
from .sample import check_options, generate

MAX_SECONDS, MAX_BARS, MAX_TOKENS = 1800, 900, 200_000  # 30 minutes of music; beyond, an error (not a silent cut)

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


def check_options_agree(*, seconds=None, bars=None, tokens=None, prime=None, prime_seconds=None, prime_bars=None,
                        prime_notes=None) -> None:
    """Refuse options that contradict each other, in one line, before any work is done."""
    lengths = [f"--{n}" for n, v in (("seconds", seconds), ("bars", bars), ("tokens", tokens)) if v is not None]
    if len(lengths) > 1:
        raise ConfigError(f"{' and '.join(lengths)} both set the length; give one")
    if prime is not None and prime_notes is not None:
        raise ConfigError("--prime and --prime-notes both give a primer; give one")
    if prime_seconds is not None and prime_bars is not None:
        raise ConfigError("--prime-seconds and --prime-bars both cut the primer; give one")
    for name, v in (("--prime-seconds", prime_seconds), ("--prime-bars", prime_bars)):
        if v is not None and prime is None:
            raise ConfigError(f"{name} cuts a --prime file; give --prime too")


def check_instruments(model: Model, programs: tuple[int, ...], drums: bool) -> None:
    """Refuse instruments a remi model never saw in training (it cannot write them: it would write nothing,
    or noise, for as long as the length allows). Checkpoints record the programs of their training data."""
    import pretty_midi

    known = model.meta.get("data", {}).get("programs")
    if model.tokenizer.encoding != "remi" or known is None:
        return
    missing = [p for p in programs if p not in known] + (["drums"] if drums and 128 not in known else [])
    if missing:
        name = lambda p: "drums" if p in ("drums", 128) else f"{pretty_midi.program_to_instrument_name(p)} ({p})"  # noqa: E731
        raise ConfigError(f"this model never saw {', '.join(name(p) for p in missing)} in training; it knows: "
                          f"{', '.join(name(p) for p in known) or 'nothing'}")


def prime_score(prime=None, *, prime_seconds: float | None = None, prime_bars: float | None = None,
                prime_notes: str | None = None) -> Score | None:
    """A primer (file path, PrettyMIDI, Score or a note list '60 64 67') -> its Score, cut to length."""
    if prime_notes is not None:
        try:
            pitches = [int(p) for p in prime_notes.replace(",", " ").split()]
        except ValueError:
            raise ConfigError(f"--prime-notes takes MIDI pitches like '60 64 67', got {prime_notes!r}") from None
        if not pitches:
            raise ConfigError("--prime-notes is empty: give MIDI pitches like '60 64 67'")
        if not all(0 <= p < 128 for p in pitches):
            raise ConfigError("--prime-notes pitches must be 0-127")
        n = len(pitches)
        return Score.from_notes(np.c_[np.arange(n), np.arange(n) + 1, pitches, np.full(n, 80)])
    if prime is None:
        return None
    from ..io.midi import read

    score = prime if isinstance(prime, Score) else read(prime)
    if prime_seconds is not None:
        score = score.crop(float(score.quarters(prime_seconds)))
    elif prime_bars is not None:
        num, den = score.time_signatures[0, 1:]
        score = score.crop(prime_bars * num * 4 / den)
    if len(score) == 0:
        cut = " in the part --prime-seconds/--prime-bars keeps" if prime_seconds or prime_bars else ""
        name = f" {prime}" if isinstance(prime, str | Path) else ""
        raise ConfigError(f"the primer{name} has no notes{cut}")
    return score


def compose(model: Model, prime=None, *, seconds: float | None = None, bars: int | None = None,
            tokens: int | None = None, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = 0.95,
            repetition_penalty: float = 1.0, seed: int = 0, num: int = 1, style: str | None = None,
            key: str | None = None, instruments: str | None = None, drums: bool | None = None,
            tempo: float | None = None, max_polyphony: int | None = None, pitch_range=None,
            prime_seconds: float | None = None, prime_bars: float | None = None, prime_notes: str | None = None,
            max_tokens: int | None = None, return_ids: bool = False, progress: bool = False, cache: bool = False,
            harmonizer: bool | None = None):
    """Compose `num` pieces of about `seconds` [30] (or `bars`, or `tokens`: give one) continuing `prime`.

    A piece ends at the first bar line at or after `seconds` (counted at its own tempo), after exactly
    `bars` bars, or after exactly `tokens` tokens; the model may end it itself within the last bar.
    Lengths are capped at MAX_SECONDS, MAX_BARS and MAX_TOKENS (an error beyond); `max_tokens`
    (default: generous for the length asked) bounds the work, and a model that fills it without
    reaching the length raises an error instead of returning a piece cut short. `progress` shows a
    bar counting the music written. `cache` mixes the model's continuous cache into sampling (off by
    default: it lowers held-out NLL, but fed its own output it copies the silences and sparse bars it has
    written: the bundled pop model's samples held 17-165 notes in 30 s with it, 103-389 without).
    `harmonizer` (default: on for a four-part chorale model such as the bundled bach): the model's top voice is
    kept and the bundled harmonizer writes alto, tenor and bass under it by its voice-leading rules
    (`generation.harmonize`); the ids returned are then those of the chorale as written.

    Returns a `pretty_midi.PrettyMIDI` (a list when `num` > 1); with `return_ids`, also the ids.
    """
    from ..io.midi import to_pretty_midi

    check_options(temperature, top_k, top_p, repetition_penalty)
    check_options_agree(seconds=seconds, bars=bars, tokens=tokens, prime=prime, prime_seconds=prime_seconds,
                        prime_bars=prime_bars, prime_notes=prime_notes)
    _check_lengths(num, seconds, bars, tokens)
    tok = model.tokenizer
    controls, programs, voiced = _sampling_controls(model, instruments=instruments, drums=drums, key=key,
                                                    pitch_range=pitch_range, tempo=tempo, bars=bars,
                                                    max_polyphony=max_polyphony)
    pscore = prime_score(prime, prime_seconds=prime_seconds, prime_bars=prime_bars, prime_notes=prime_notes)
    if style is None and tok.styles and model.meta.get("train", {}).get("styles", "none") != "none":
        style = tok.styles[0]
    prime_ids = tok.encode(pscore, style=style, eos=False) if pscore is not None else \
        tok.frame([], style=style, eos=False).tolist()
    length = Length(seconds or 30.0 if bars is None and tokens is None else None, bars, tokens)
    options = dict(temperature=temperature, top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty,
                   max_tokens=max_tokens, progress=progress, cache=cache)
    chorale = is_chorale_model(model) if harmonizer is None else bool(harmonizer)
    if chorale and tok.encoding != "remi":
        raise ConfigError("--harmonizer takes the top voice of a remi model's pieces; this model is " + tok.encoding)
    seqs, ends, scores = _draw(model, controls, prime_ids, length, seed, num, options)
    primer_notes = len(pscore) if pscore is not None else 0
    finished = [_finish(tok, score, end, tempo, programs, voiced=None if chorale else voiced, key=key,
                        primer_notes=primer_notes) for score, end in zip(scores, ends, strict=True)]
    if chorale:
        finished = [harmonized_chorale(score, seed=seed + k, voiced=voiced, key=key, primer_notes=primer_notes)
                    for k, score in enumerate(finished)]
        seqs = [tok.encode(score) for score in finished]
    out = [to_pretty_midi(score) for score in finished]
    if return_ids:
        return (out if num > 1 else out[0]), seqs
    return out if num > 1 else out[0]


def _sampling_controls(model: Model, *, instruments: str | None, drums: bool | None, key: str | None, pitch_range,
                       tempo: float | None, bars: int | None, max_polyphony: int | None):
    """(the grammar's `Controls`, the programs asked (None: any), the voicing of those on the model's learned
    programs (remi)): the instruments asked checked against what the model learned, and the model kept to the
    programs, drums and pitch range it learned unless asked otherwise."""
    tok = model.tokenizer
    programs, want_drums = parse_instruments(instruments) if instruments else (None, None)
    if instruments or drums:  # `--drums` alone asks for drums too
        check_instruments(model, programs or (), bool(want_drums or drums))
    learned_programs, learned_pitches = learned(model)  # the model writes only what it learned
    voiced = _voicing(programs, learned_programs) if tok.encoding == "remi" else None
    allowed_programs = (tuple(sorted(voiced)) if voiced else programs) or None
    if allowed_programs is None and learned_programs is not None:
        allowed_programs = tuple(p for p in learned_programs if p < 128)
    if programs is not None:
        default_drums = want_drums
    else:
        default_drums = 128 in learned_programs if learned_programs is not None else True
    controls = _controls(tok, key=key, pitch_range=_within(pitch_range, learned_pitches), tempo=tempo, bars=bars,
                         programs=allowed_programs, drums=drums if drums is not None else default_drums,
                         max_polyphony=max_polyphony)
    return controls, programs, voiced


def _check_lengths(num: int, seconds, bars, tokens) -> None:
    if num < 1:
        raise ConfigError("num must be >= 1")
    for name, value, cap in (("seconds", seconds, MAX_SECONDS), ("bars", bars, MAX_BARS),
                             ("tokens", tokens, MAX_TOKENS)):
        if value is not None and not 0 < value <= cap:
            raise ConfigError(f"--{name} must be between 0 and {cap:,} (got {value})")


def _controls(tok, *, key, pitch_range, tempo, bars, programs, drums, max_polyphony) -> Controls:
    """The grammar's controls for this encoding; options it cannot honour are one-line errors."""
    if tempo is not None and not 10 <= tempo <= 400:
        raise ConfigError("tempo must be between 10 and 400 qpm")
    if bars is not None and tok.encoding == "performance":
        raise ConfigError("--bars needs a remi or grid model (performance tokens have no bar lines); use --seconds")
    if tempo is not None and tok.encoding == "performance":
        raise ConfigError("--tempo needs a remi or grid model (performance timing is in seconds)")
    return Controls(key=key, pitch_range=tuple(pitch_range) if pitch_range else None,
                    qpm=tempo if tok.encoding == "remi" else None,
                    programs=programs if tok.encoding == "remi" and programs else None,
                    drums=drums, max_polyphony=max_polyphony,
                    melody_first=tok.encoding == "remi" and tok.config.version >= 4)


def _draw(model: Model, controls: Controls, prime_ids: list[int], length: Length, seed: int, num: int,
          options: dict) -> tuple[list, list, list[Score]]:
    """`num` pieces (ids, where each ends, its Score: each decoded once). A draw far denser than anything
    in the training data (a rare runaway: hundreds of notes a second) is drawn again from a seed derived
    from the one given, so the same command still gives the same music."""
    tok = model.tokenizer
    seqs, ends = _sample(model, controls, prime_ids, length, seed=seed, batch=num, **options)
    limit = model.meta.get("data", {}).get("density_p99")
    scores = [tok.decode_score(ids) for ids in seqs]
    for attempt in range(1, 4):
        bad = [i for i, score in enumerate(scores) if limit and _density(score) > 2 * limit]
        if not bad:
            break
        again, again_ends = _sample(model, controls, prime_ids, length, seed=seed + 7919 * attempt,
                                    batch=len(bad), **{**options, "progress": False})
        for i, ids, end in zip(bad, again, again_ends, strict=True):
            seqs[i], ends[i], scores[i] = ids, end, tok.decode_score(ids)
    return seqs, ends, scores


def _finish(tok, score: Score, end: float | None, tempo: float | None, programs, *, voiced=None, key=None,
            primer_notes: int = 0) -> Score:
    """A drawn piece as written: cut at its last bar line, at the tempo asked, in the key it plays (or the key
    asked), its voices named and voiced."""
    if end is not None:  # notes still ringing at the final bar line stop there
        score = score.crop(end)
    if voiced:  # the chorale voices, each on its own track of the instrument asked for it
        names = {v: f"{k.title()} ({t})" for k, v in _voice_programs().items() for t in [_gm(voiced[v])]}
        score.tracks = [Track(voiced.get(t.program, t.program), t.is_drum, names.get(t.program, t.name))
                        for t in score.tracks]
    if tempo is not None:
        score.tempos = np.array([[0.0, float(tempo)]])
    score.key_signatures = written_key(score, key, primer_notes)
    if tok.encoding == "grid" and len(score.tracks) > 1:  # name the voices by where they sing, top down
        score = _name_voices_by_height(score)
    if programs and tok.encoding != "remi":  # one-stream encodings: voice the tracks as asked
        score.tracks = [Track(programs[i % len(programs)], False, t.name) for i, t in enumerate(score.tracks)]
    return score


@dataclass(frozen=True)
class Length:
    """How long a piece is: seconds (at its own tempo, to the next bar line), bars, or tokens; one is set."""

    seconds: float | None = None
    bars: int | None = None
    tokens: int | None = None


def _name_voices_by_height(score: Score) -> Score:
    """Grid slots are not always the same voice (a quarter-frame model fills them from the top of each
    chord): order the tracks by mean pitch and give the highest the first voice name, and so on."""
    names = [t.name for t in score.tracks]
    heights = tracks_by_height(score).tolist()
    order = heights + [k for k in range(len(names))[::-1] if k not in heights]  # highest first, silent last
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    score.tracks = [Track(score.tracks[k].program, score.tracks[k].is_drum, names[rank[k]]) for k in range(len(names))]
    return score


def note_density(tok, ids: list[int]) -> float:
    """Notes per second of music in a token sequence (0 for an empty one)."""
    return _density(tok.decode_score(ids))


def _density(score: Score) -> float:
    return len(score) / max(score.duration_seconds, 1.0)


class _Clock:
    """The length rules of one draw over its grammar's clocks: how much music is still to come, when a
    piece ends (the first bar line at or past the length asked; N bars: the bar line after bar N), and
    the grammar's mask with the ending rules (the model's own end only in the last bar, no empty bars)."""

    def __init__(self, grammar, tok, length: Length, prime_ids: list[int], batch: int, controls: Controls):
        grammar.follow(prime_ids, batch)  # the clocks start where the new music does
        self.grammar, self.tok, self.length, self.controls = grammar, tok, length, controls
        self.triads: dict[int, torch.Tensor] = {}  # per piece, once its last bar begins: its tonic triad's pitches
        self.start_bars, self.start_secs = grammar.bars().clone(), grammar.seconds().clone()

    def left(self) -> torch.Tensor:
        """(B,) how much is still to come: bars (with --bars) or seconds."""
        if self.length.bars is not None:
            return self.length.bars - (self.grammar.bars() - self.start_bars).double()
        return self.length.seconds - (self.grammar.seconds() - self.start_secs)

    def stop(self, ids) -> torch.Tensor:
        self.grammar.advance(ids)  # the clocks follow the new token; the mask waits for the next step
        if self.length.tokens is not None:
            return torch.zeros(1, dtype=torch.bool)
        if self.length.bars is not None:
            return self.left() < 0
        return (self.left() <= 0) & self.grammar.at_bar_line()

    def constraint(self, ids, logits) -> torch.Tensor:
        grammar, tok, bars = self.grammar, self.tok, self.length.bars
        allowed = grammar(ids, logits)
        if self.length.tokens is None:
            # the model's own ending is welcome in the last bar (the one whose bar line reaches the length), never
            # earlier: measured from where the piece is now (a whole bar at a tempo set mid-bar ended pieces short)
            near = self.left() <= (0 if bars is not None else grammar.bar_seconds_left())
            allowed[:, EOS] &= near.to(allowed.device)
            _cadence(tok, self.controls, grammar, ids, allowed, near, self.triads)
            if bars is not None:  # the last bar holds music: no end and no closing bar line before its first note
                unplayed = ((self.left() <= 0) & grammar.bar_empty()).to(allowed.device)
                allowed[unplayed, EOS] = False
                if "BAR" in tok.vocab.offset:
                    allowed[unplayed, grammar.r("BAR")] = False
            # past the length the bar in progress is played to its end, positions and all: refusing new
            # positions there left a model that wanted one only more notes at the same onset (up to 128 at once)
        else:  # exactly that many tokens: no early end
            allowed[:, EOS] = False
        if "BAR" in tok.vocab.offset:  # no empty bars before the first note (pop songs open with silence)
            silent = grammar.silent().to(allowed.device)
            allowed[silent, EOS] = False
            allowed[silent, grammar.r("BAR")] = False
        allowed[~allowed.any(1), EOS] = True
        return allowed


def _sample(model: Model, controls: Controls, prime_ids: list[int], length: Length, *, seed: int, batch: int,
            temperature: float, top_k, top_p, repetition_penalty: float, max_tokens: int | None,
            progress: bool, cache: bool = False) -> tuple[list[list[int]], list[float | None]]:
    """Draw `batch` continuations of `prime_ids` under the grammar, of exactly the length asked.

    Returns the ids and, per piece, where its last bar ends in quarter notes (None: no cut, as with
    `tokens` or encodings without bar lines)."""
    tok = model.tokenizer
    clock = _Clock(grammar_for(tok, controls), tok, length, prime_ids, batch, controls)
    bars, tokens = length.bars, length.tokens
    if tokens is not None:
        budget = tokens
    else:  # generous: a dense pop texture takes ~40 tokens a second, a bar ~100
        budget = max_tokens or min(MAX_TOKENS, int(2000 + (400 * bars if bars is not None else 150 * length.seconds)))
    total = tokens if tokens is not None else bars if bars is not None else length.seconds
    bar = _progress(progress, total, "tok" if tokens is not None else "bars" if bars is not None else "s")

    def tick(n: int) -> None:  # every 50 tokens: how much music the slowest piece has so far
        if bar is not None and n % 50 == 0:
            bar.update(max(0.0, (n if tokens is not None else float(total - clock.left().max())) - bar.n))

    try:
        seqs = generate(model, prime_ids, max_tokens=budget, temperature=temperature, top_k=top_k, top_p=top_p,
                        seed=seed, batch=batch, repetition_penalty=repetition_penalty, constraint=clock.constraint,
                        stop=clock.stop, progress=tick, cache=None if cache else Cache())
    finally:
        if bar is not None:
            bar.close()
    if tokens is None:  # any piece short of the length at the budget is an error, never a silent cut
        short = [i for i, (s, more) in enumerate(zip(seqs, (clock.left() > 0).tolist(), strict=True))
                 if more and len(s) - len(prime_ids) >= budget and s[-1] != EOS]
        if short:
            which = "" if batch == 1 else f"piece {short[0] + 1} of {batch}: "
            raise MusiclstmError(f"{which}the model wrote {budget:,} tokens without reaching the length asked; "
                                 f"lower the temperature or ask for --tokens")
    ends = clock.grammar.end_quarters() if tokens is None else None
    return seqs, (ends.tolist() if ends is not None else [None] * len(seqs))


def _progress(show: bool, total, unit: str):
    """A tqdm bar over the music being written (seconds or bars), or None."""
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit=unit, desc="composing", leave=False,
                bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} {unit} [{elapsed}<{remaining}]")


