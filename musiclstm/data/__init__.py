"""Data: which files make a corpus, how they are tokenized into a token store, and the windows training reads.

Rooms: `corpus` (files, splits, styles; `Corpus` and `Piece`), `preparation` (tokenize once into a cache, lay
the corpus out in a store), `store` (the on-disk token store), `windows` (training batches),
`collections` (music21's bundled corpora exported as files).
May import: errors, io, encodings. Not: models, training, generation, evaluation, app.
"""

from .corpus import Corpus, Piece, as_paths, default_cache_dir, find_files, fingerprint, sequence, style_of
from .preparation import prepare
from .store import Sequences
from .windows import PieceWindows, Windows, stream

__all__ = ["Corpus", "Piece", "PieceWindows", "Sequences", "Windows", "as_paths", "default_cache_dir", "find_files",
           "fingerprint", "prepare", "sequence", "stream", "style_of"]
