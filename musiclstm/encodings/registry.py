"""Each encoding's grammar by name (its codec is in `ENCODINGS`, `encodings/__init__.py`).

Adding an encoding: its codec module (`Config`, `Codec`) and a line in `ENCODINGS`; its grammar module
(a `Grammar` subclass) and a line in `GRAMMARS` here.

May import: the encodings' grammar modules. Not: data, models and the rooms above.
"""

from __future__ import annotations

from .grammar import Controls, Grammar
from .grid_grammar import GridGrammar
from .performance_grammar import PerformanceGrammar
from .remi_grammar import RemiGrammar
from .tokenizer import Tokenizer

GRAMMARS: dict[str, type[Grammar]] = {"performance": PerformanceGrammar, "remi": RemiGrammar, "grid": GridGrammar}


def grammar_for(tokenizer: Tokenizer, controls: Controls | None = None) -> Grammar:
    """The grammar of a tokenizer's encoding, with optional musical controls."""
    return GRAMMARS[tokenizer.encoding](tokenizer, controls)
