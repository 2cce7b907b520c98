"""`python -m musiclstm ...` (also what `torchrun -m musiclstm train ...` runs)."""

from .cli import main

main()
