"""The `musiclstm` command: a thin layer over the Python API (parse options, call, print one line).

Here the `cli` group (errors as one line, never a traceback), the thread setting and `main`; the commands
live beside it by what they do, each module registering its own on `cli`: `train_command` (train),
`music_commands` (compose, harmonize, infill), `model_commands` (info, evaluate, gates, benchmark),
`corpus_commands` (corpus list, export, fetch), `listen_commands` (render, studio).
May import: every room below (lazily, inside each command, so `--help` stays fast). Not imported by any room.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from ..errors import MusiclstmError

EXISTING = click.Path(exists=True, path_type=Path)


class Group(click.Group):
    """Turns project errors and bad options into one line on stderr and a non-zero exit, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as e:  # click's own would add a usage block: keep the one line that matters
            where = e.ctx.command_path if e.ctx else ctx.command_path
            click.echo(f"error: {e.format_message()} (see '{where} -h')", err=True)
            sys.exit(e.exit_code)
        except MusiclstmError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except OSError as e:  # a file or folder the system refused: one line too, never a traceback
            where = f" {e.filename}" if e.filename else ""
            click.echo(f"error: cannot use{where}: {e.strerror or e}", err=True)
            sys.exit(1)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="musiclstm")
def cli() -> None:
    """musiclstm: train an LSTM on any MIDI folder and compose new music with it.

    \b
    musiclstm compose                          # a new piece from the bundled model
    musiclstm train my_midis/ --out runs/mine  # train your own
    musiclstm compose --checkpoint runs/mine
    """


# CPU threads for PyTorch when --threads is not given. bench/threads.py on the 2-core machine (training
# tokens/s, idle -> one core busy): 1 thread 8,107 -> 4,498; 2 threads 1,688 -> 428 (OpenMP spin-waits
# for the busy core); 2 threads with OMP_WAIT_POLICY=PASSIVE 10,534 -> 4,777. One thread holds up best.
DEFAULT_THREADS = 1


def set_threads(threads: int | None = None) -> int:
    """Run PyTorch's CPU math on `threads` threads (None: DEFAULT_THREADS, at most the cores); returns it.

    Inter-op parallelism is set to 1: an LSTM runs one operator at a time, so extra inter-op
    workers only compete for cores.
    """
    import torch

    n = threads or min(DEFAULT_THREADS, os.cpu_count() or 1)
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # set once per process, before any inter-op work; a second call is refused
        pass
    return n


def wants_progress(quiet: bool) -> bool:
    """Progress bars: unless --quiet, and only on a terminal."""
    return not quiet and sys.stderr.isatty()


def main() -> None:
    cli(prog_name="musiclstm")


# each module below registers its commands on `cli` (they import it from here, so they come last)
from . import corpus_commands, listen_commands, model_commands, music_commands, train_command  # noqa: E402, F401
