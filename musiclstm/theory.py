"""Music theory the whole package shares: note names, keys and their scales, voice ranges, voice leading.

The bottom room (with `errors`): pure functions and tables over pitch numbers. Every key parser,
scale table and voice-leading rule in musiclstm is here and nowhere else: `compose --key`,
`harmonize --key`, the studio and the Python API read keys with `parse_key`; the harmonizer's
sampler (`generation.gibbs`) and the music statistics (`evaluation.music`) judge parallel fifths and
octaves with `parallels`.
May import: errors, numpy. Not: anything else in musiclstm.
"""

from __future__ import annotations

import re

import numpy as np

from .errors import ConfigError

NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")  # how a pitch class is printed
_LETTERS = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
_ACCIDENTALS = {"": 0, "#": 1, "♯": 1, "b": -1, "♭": -1}

# Scales as steps above the tonic. "minor" is the natural minor (compose --key keeps to it);
# "minor_raised" adds the raised sixth and seventh of the melodic and harmonic minor (the harmonizer's
# keys, and what the chorale statistics count as in key).
SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10),
          "minor_raised": (0, 2, 3, 5, 7, 8, 9, 10, 11)}

# textbook SATB ranges (MIDI, top voice first): soprano C4-A5, alto F3-D5, tenor C3-A4, bass E2-D4
SATB_RANGES = ((60, 81), (53, 74), (48, 69), (40, 62))

_KEY = re.compile(r"\s*([A-Ga-g])([#♯b♭]?)\s*[- ]?\s*(major|maj|minor|min|M|m)?\s*", re.IGNORECASE)


def parse_key(text: str) -> tuple[int, bool]:
    """A key -> (tonic pitch class, minor). The one syntax: a letter A-G (either case), an optional
    accidental (# or b), then optionally a space or hyphen and the mode: major, maj or M for major;
    minor, min or m for minor (words in any case; the single letter is case-sensitive: "CM" is C
    major, "Cm" C minor); no mode is major. "D minor", "Dm", "D min", "A-minor", "C major", "CM",
    "C maj", "Bb major", "F# minor", "Eb" all parse."""
    m = _KEY.fullmatch(text or "")
    if not m or (m.group(3) and len(m.group(3)) == 1 and m.group(3) not in "Mm"):
        raise ConfigError(f"unknown key {text!r}: not a key like 'C', 'D minor', 'Dm', 'F# major', 'Bb maj'")
    mode = m.group(3) or "major"
    minor = mode == "m" or (len(mode) > 1 and mode.lower().startswith("min"))
    return (_LETTERS[m.group(1).upper()] + _ACCIDENTALS[m.group(2)]) % 12, minor


def key_name(tonic: int, minor: bool) -> str:
    """(tonic, minor) -> "D minor"."""
    return f"{NOTE_NAMES[tonic % 12]} {'minor' if minor else 'major'}"


def scale(tonic: int, minor: bool, *, raised: bool = True) -> set[int]:
    """Pitch classes of a key: major; minor with its raised sixth and seventh (`raised`, the default),
    or the natural minor."""
    steps = SCALES["major"] if not minor else SCALES["minor_raised" if raised else "minor"]
    return {(tonic + s) % 12 for s in steps}


def scale_consistency(pitch_class_counts) -> float:
    """Share of notes (12 pitch-class counts or weights) in the best-fitting major scale (MusPy's
    `scale_consistency`; a minor key's notes are its relative major's)."""
    h = np.asarray(pitch_class_counts)
    major = np.array(SCALES["major"])
    return float(max(h[(major + r) % 12].sum() for r in range(12)) / max(1, h.sum()))


def parallels(upper0, lower0, upper1, lower1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The one voice-leading check: (fifths, octaves, unisons) bool arrays for two voices moving from
    (upper0, lower0) to (upper1, lower1) (MIDI pitches, numpy-broadcast).

    A parallel fifth: both voices move, in the same direction, from a perfect fifth to a perfect
    fifth (compound allowed: 7, 19, 31 ... semitones), the upper voice above the lower both times.
    A parallel octave: the same with octaves (12, 24 ...). A parallel unison: unison to unison.
    Voices crossed a fourth apart (the upper 5 semitones below the lower) are not a fifth, nor is a
    fifth to a twelfth with the voices swapped."""
    upper0, lower0, upper1, lower1 = (np.asarray(a) for a in (upper0, lower0, upper1, lower1))
    du, dl = upper1 - upper0, lower1 - lower0
    similar = (du != 0) & (dl != 0) & (np.sign(du) == np.sign(dl))
    i0, i1 = upper0 - lower0, upper1 - lower1
    fifths = similar & (i0 > 0) & (i1 > 0) & (i0 % 12 == 7) & (i1 % 12 == 7)
    octaves = similar & (i0 > 0) & (i1 > 0) & (i0 % 12 == 0) & (i1 % 12 == 0)
    unisons = similar & (i0 == 0) & (i1 == 0)
    return fifths, octaves, unisons
