"""The encodings by name: codec modules and grammars."""

from __future__ import annotations

from .grammar import Controls, Grammar
from .grid_grammar import GridGrammar
from .performance_grammar import PerformanceGrammar
from .remi_grammar import RemiGrammar
from .tokenizer import Tokenizer


def grammar_for(tokenizer: Tokenizer, controls: Controls | None = None) -> Grammar:
    """The grammar of a tokenizer's encoding, with optional musical controls."""
    cls = {"performance": PerformanceGrammar, "remi": RemiGrammar, "grid": GridGrammar}[tokenizer.encoding]
    return cls(tokenizer, controls)
