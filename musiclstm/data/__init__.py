"""Data: which files make a corpus, how they are tokenized into a token store, and the windows training reads.

Rooms: `corpus` (files, splits, styles; `Corpus` and `Piece`), `preparation` (tokenize once into a cache, lay
the corpus out in a store; `tokenizing` the parallel, cached part), `packs` (the per-piece cache entries),
`store` (the on-disk token store), `sequences` (pieces laid end to end, read as windows), `windows` (training
batches), `collections` (music21's bundled corpora exported as files), `fetch` (public corpora downloaded:
`sources`, `download`, `unpack`, `layouts`).
May import: errors, io, encodings. Not: models, training, generation, evaluation, app.
"""

from .corpus import Corpus, Piece, as_paths, default_cache_dir, find_files, fingerprint, sequence, style_of
from .preparation import prepare
from .sequences import Sequences
from .windows import PieceWindows, Windows, stream

__all__ = ["Corpus", "Piece", "PieceWindows", "Sequences", "Windows", "as_paths", "default_cache_dir", "find_files",
           "fingerprint", "prepare", "sequence", "stream", "style_of"]
