"""`python -m musiclstm ...` (also what `torchrun -m musiclstm train ...` runs)."""

from .app.cli import main

main()
