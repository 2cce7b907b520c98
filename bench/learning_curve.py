"""Learning curves: held-out NLL against training minutes, for one or more training runs.

    python bench/learning_curve.py runs/pop_2x512 runs/pop_2x256 --data ../shared/data/pop909 [--files 200]

For each run folder, every validation row of its metrics.jsonl: minutes of training (the run's own clock,
`elapsed_s`, across resumes; for runs logged before it was recorded, wall minutes since the run wrote
config.json), the step, the validation NLL in nats per token, and, with --data, in nats per note: nats per
token times the tokens per note that run's tokenizer writes for the corpus (measured on --files of its files).
The model size (parameters, LSTM layers x hidden) heads each run. A run still training is read as far as it got.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from musiclstm import Tokenizer  # noqa: E402
from musiclstm.data import find_files  # noqa: E402
from musiclstm.errors import MusiclstmError  # noqa: E402
from musiclstm.io.midi import read  # noqa: E402


def tokens_per_note(tok: Tokenizer, root: Path, limit: int) -> float:
    files = find_files(root)
    step = max(1, len(files) // limit)
    tokens = notes = 0
    for f in files[::step][:limit]:
        try:
            score = read(f)
        except MusiclstmError:
            continue
        tokens += len(tok.encode(score)) - 2  # BOS and EOS are not predicted per note
        notes += len(score)
    return tokens / max(notes, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--data", type=Path, help="The corpus the runs trained on (for nats per note).")
    ap.add_argument("--files", type=int, default=200)
    a = ap.parse_args()
    for run in a.runs:
        metrics, config = run / "metrics.jsonl", run / "config.json"
        if not metrics.exists() or not config.exists():
            print(f"{run}: no metrics.jsonl / config.json (skipped)")
            continue
        cfg = json.loads(config.read_text())
        tok = Tokenizer.from_dict(cfg["tokenizer"]) if "tokenizer" in cfg else None
        model = cfg.get("model", cfg)
        per_note = tokens_per_note(tok, a.data, a.files) if a.data and tok is not None else None
        start = config.stat().st_mtime
        print(f"{run}: LSTM {model.get('layers')}x{model.get('hidden')}, embed {model.get('embed')}"
              + (f"; {per_note:.2f} tokens per note ({tok.encoding} v{getattr(tok.config, 'version', '-')})"
                 if per_note else ""))
        print(f"  {'minutes':>8s} {'step':>6s} {'epoch':>6s} {'nats/token':>11s}" + (f" {'nats/note':>10s}" if per_note
                                                                                    else ""))
        for line in metrics.read_text().splitlines():
            row = json.loads(line)
            minutes = row["elapsed_s"] / 60 if "elapsed_s" in row else (row["time"] - start) / 60
            out = f"  {minutes:8.1f} {row['step']:6d} {row['epoch']:6.2f} {row['val_nll']:11.3f}"
            print(out + (f" {row['val_nll'] * per_note:10.3f}" if per_note else ""))


if __name__ == "__main__":
    main()
