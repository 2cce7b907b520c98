"""`Tokenizer`: one class, three encodings, a vocabulary fixed by the config (never by the data).

Ids are laid out as a table of event ranges, like Performance RNN's: first the specials
(PAD=0, BOS=1, EOS=2), then one STYLE token per conditioning style named in the config, then the
encoding's own events (see `musiclstm.encodings`). `vocab_size` and every id follow from the
config alone, so a checkpoint that stores `to_dict()` rebuilds the exact same vocabulary.
May import: errors, io, the codec modules. Not: data, models, training, generation, evaluation, app.
"""

from __future__ import annotations

from dataclasses import asdict, fields

import numpy as np

from ..errors import ConfigError
from ..io.score import Score
from . import ENCODINGS

SPECIALS = ("PAD", "BOS", "EOS")
PAD, BOS, EOS = 0, 1, 2


class Vocab:
    """A fixed table of event ranges: [(kind, size), ...] laid end to end from id 0."""

    def __init__(self, table: list[tuple[str, int]]):
        self.kinds = [k for k, _ in table]
        self.sizes = [n for _, n in table]
        self.offset = dict(zip(self.kinds, np.cumsum([0] + self.sizes[:-1]).tolist(), strict=True))
        self.size = int(sum(self.sizes))
        self._starts = np.array([self.offset[k] for k in self.kinds])

    def __len__(self) -> int:
        return self.size

    def id(self, kind: str, value=0):
        """The id of event `kind` with index `value` (vectorized over numpy `value`)."""
        return self.offset[kind] + value

    def kind_index(self, ids) -> np.ndarray:
        """(N,) index into `kinds` for each id (ids must be in range)."""
        return np.searchsorted(self._starts, np.asarray(ids), side="right") - 1

    def split(self, i: int) -> tuple[str, int]:
        """id -> (kind, value); ("?", i) for an id out of range."""
        if not 0 <= i < self.size:
            return "?", i
        k = int(self.kind_index(i))
        return self.kinds[k], i - self._starts[k]


class Tokenizer:
    """Turns music into token ids and back.

    >>> tok = Tokenizer("performance")
    >>> tok.vocab_size
    391
    """

    def __init__(self, encoding: str = "remi", *, styles=(), **options):
        if encoding not in ENCODINGS:
            raise ConfigError(f"unknown encoding {encoding!r}; choose one of {', '.join(ENCODINGS)}")
        module = ENCODINGS[encoding]
        names = {f.name for f in fields(module.Config)}
        unknown = set(options) - names
        if unknown:
            raise ConfigError(f"unknown {encoding} option(s): {', '.join(sorted(unknown))}")
        self.encoding = encoding
        self.styles = tuple(str(s) for s in styles)
        self.config = module.Config(**options)
        self.codec = module.Codec(self.config)
        table = [(s, 1) for s in SPECIALS] + [("STYLE", len(self.styles))] + self.codec.table()
        self.vocab = Vocab(table)

    # ---- configuration ---------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Everything needed to rebuild this tokenizer (JSON-serializable)."""
        return {"encoding": self.encoding, "styles": list(self.styles), **asdict(self.config)}

    @classmethod
    def from_dict(cls, d: dict) -> Tokenizer:
        """Rebuild a tokenizer; a dict saved before its encoding had versions is version 1."""
        d = dict(d)
        if "version" not in d and "version" in {f.name for f in fields(ENCODINGS[d.get("encoding")].Config)}:
            d["version"] = 1
        return cls(d.pop("encoding"), styles=d.pop("styles", ()), **{k: tuple(v) if isinstance(v, list) else v
                                                                      for k, v in d.items()})

    def __eq__(self, other) -> bool:
        return isinstance(other, Tokenizer) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"Tokenizer({self.encoding!r}, vocab_size={self.vocab_size})"

    @property
    def vocab_size(self) -> int:
        return self.vocab.size

    def style_id(self, style: str) -> int:
        """The id of a conditioning style token."""
        if style not in self.styles:
            known = ", ".join(self.styles) or "none"
            raise ConfigError(f"unknown style {style!r}; this model knows: {known}")
        return self.vocab.id("STYLE", self.styles.index(style))

    # ---- encode / decode -------------------------------------------------------------------
    def encode(self, music, *, style: str | None = None, bos: bool = True, eos: bool = True) -> list[int]:
        """A path, PrettyMIDI, Score (or, for `grid`, a (steps, voices) pitch array) -> ids."""
        return self.encode_array(music, style=style, bos=bos, eos=eos).tolist()

    def encode_array(self, music, *, style=None, bos=True, eos=True) -> np.ndarray:
        """Like `encode`, as an int64 numpy array (faster for corpora)."""
        if isinstance(music, np.ndarray) and hasattr(self.codec, "encode_grid"):
            body = self.codec.encode_grid(music, self.vocab)
        else:
            body = self.codec.encode(self.read(music), self.vocab)
        return self.frame(body, style=style, bos=bos, eos=eos)

    def frame(self, body, *, style: str | None = None, bos: bool = True, eos: bool = True,
              strict: bool = True) -> np.ndarray:
        """The one builder of what a model reads: BOS [STYLE] body EOS (int64), for training, evaluation,
        primers and `encode`. A style this tokenizer does not know is an error (`strict`, as for a
        primer asked to be in a style) or left out (a corpus piece from a folder the model never saw)."""
        known = style is not None and (strict or style in self.styles)
        head = ([BOS] if bos else []) + ([self.style_id(style)] if known else [])
        return np.concatenate([np.array(head, np.int64), np.asarray(body, np.int64).ravel(),
                               np.array([EOS] if eos else [], np.int64)])

    @staticmethod
    def read(music) -> Score:
        """Anything `encode` accepts -> Score (through the one reader, `musiclstm.io.midi.read`)."""
        if isinstance(music, Score):
            return music
        from ..io.midi import read

        return read(music)

    def decode_score(self, ids) -> Score:
        """Ids -> Score. Never raises: specials and out-of-grammar ids are skipped."""
        try:
            arr = np.asarray(ids if isinstance(ids, np.ndarray) else list(ids), dtype=np.int64).ravel()
        except (OverflowError, TypeError, ValueError):  # ints beyond int64 or non-numbers: drop them one by one
            arr = np.array([i for i in np.asarray(list(ids), dtype=object).ravel()
                            if isinstance(i, int | np.integer) and 0 <= i < self.vocab.size], dtype=np.int64)
        arr = arr[(arr >= 0) & (arr < self.vocab.size)]
        return self.codec.decode(arr, self.vocab)

    def decode(self, ids):
        """Ids -> `pretty_midi.PrettyMIDI`. Never raises on any id sequence."""
        from ..io.midi import to_pretty_midi

        return to_pretty_midi(self.decode_score(ids))

    def names(self, ids) -> list[str]:
        """Readable token names, e.g. ['BOS', 'VELOCITY_20', 'NOTE_ON_60', 'TIME_SHIFT_50']."""
        out = []
        for i in ids:
            kind, v = self.vocab.split(int(i))
            if kind == "?":
                out.append(f"?{v}")
                continue
            out.append(kind if self.vocab.sizes[self.vocab.kinds.index(kind)] == 1 and kind != "STYLE"
                       else f"{kind}_{self.styles[v] if kind == 'STYLE' else self.codec.value_name(kind, v)}")
        return out
