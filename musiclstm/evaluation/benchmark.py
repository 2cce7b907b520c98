"""`musiclstm benchmark jsb`: our LSTMs on the two published JSB Chorales tables.

(a) Music Transformer's table (Huang et al. 2018): `Jsb16thSeparated.json`, a 16th-note grid of
    four voices serialized S1 A1 T1 B1 S2 A2 ..., one token per voice and step (a pitch, repeated
    while held, or a rest); mean NLL per note token on the validation split. Our `grid` encoding
    with `hold=False` is exactly that serialization. The model is early-stopped on 10 % of the
    training chorales (by content hash), so the validation split is only ever scored.
(b) The Boulanger-Lewandowski / TCN table: `jsb-chorales-quarter.json`, quarter-note frames (the set
    of sounding pitches), mean NLL per frame on the test split; early-stopped on the validation
    split. Each frame becomes four tokens: its pitches from the highest down, padded with REST (no
    frame has more than four notes). The frame NLL is the sum of those four token NLLs. Since the
    frame-to-tokens map is one fixed order, the token model assigns each frame at least that
    sequence's probability (other orders can only add mass), so the figure is a true upper bound on
    the model's NLL of the frame: the comparison can only be unfair to us.

The 16th table is read from the JSON form of the data, never from `Jsb16thSeparated.npz`: that file
stores its chorales as pickled Python objects, and unpickling a file from DIR could run any code.
May import: every room below (it trains, samples and scores). Not: app.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ..data.corpus import Corpus, Piece
from ..encodings.grid import load_jsb
from ..encodings.tokenizer import BOS, EOS, Tokenizer
from ..errors import MusiclstmError
from ..models import checkpoint
from ..models.cache import piece_nlls

FILES = {"16th": "Jsb16thSeparated.json", "quarter": "jsb-chorales-quarter.json"}
NAMES = {"16th": "jsb16", "quarter": "jsb_quarter"}  # checkpoint names (bundled, or in --out)
# The published figures (nats), each with how it was measured: an exact NLL compares with ours
# directly; a bound or an approximation is lower than the model's true NLL could be shown to be.
# Sources (listed in docs/measurements.md): Huang et al. 2018, "Music Transformer" (16th); Bai et al. 2018,
# Boulanger-Lewandowski et al. 2012, Fraccaro et al. 2016, Gu et al. 2015, Vohra et al. 2015 (quarter).
# An "LSTM 0.447" figure circulates for the 16th table without a source and is not listed.
PUBLISHED = {
    "16th": {"Coconet": 0.436, "Transformer": 0.417, "Music Transformer (relative attention)": 0.335},
    "quarter": {"LSTM (Bai et al. 2018)": 8.45, "GRU (Bai et al. 2018)": 8.43, "TCN (Bai et al. 2018)": 8.10,
                "RNN-RBM (Boulanger-Lewandowski 2012), approximate": 6.27,
                "RNN-NADE (Boulanger-Lewandowski 2012)": 5.56,
                "RNN-NADE, Hessian-free training (as later tables list it)": 5.19,
                "SRNN (Fraccaro et al. 2016), variational bound": 4.74,
                "NASMC (Gu et al. 2015), SMC estimate": 3.99,
                "DBN-LSTM (Vohra et al. 2015), approximate": 3.47},
}
# Training settings (any TrainConfig field); about 10 minutes for both on this 2-core CPU.
RECIPES = {
    "16th": dict(encoding="grid", embed=128, hidden=256, layers=2, dropout=0.3, seq_len=256, batch_size=32,
                 lr=2e-3, epochs=60, patience=6, augment_transpose=4, sample_tokens=0),
    "quarter": dict(encoding="grid", embed=128, hidden=256, layers=2, dropout=0.4, seq_len=128, batch_size=16,
                    lr=2e-3, epochs=80, patience=8, augment_transpose=4, sample_tokens=0),
}


def jsb_tokenizer(kind: str) -> Tokenizer:
    return Tokenizer("grid", voices=4, steps_per_quarter=4 if kind == "16th" else 1, hold=False)


def _grid(piece, kind: str) -> np.ndarray:
    """One chorale -> (steps, 4) pitches, -1 for silence."""
    if kind == "16th":
        return np.where(np.isnan(piece), -1, piece).astype(np.int64)
    a = np.full((len(piece), 4), -1, np.int64)
    for t, frame in enumerate(piece):
        notes = sorted({int(p) for p in frame}, reverse=True)
        if len(notes) > 4:
            raise MusiclstmError(f"a JSB frame has {len(notes)} notes; the benchmark expects at most 4")
        a[t, : len(notes)] = notes
    return a


def jsb_corpus(root: str | Path, kind: str) -> Corpus:
    """The JSB chorales of one table as a prepared `Corpus` (splits "train", "valid", "report")."""
    path = Path(root) / FILES[kind]
    if not path.is_file():
        npz = kind == "16th" and path.with_suffix(".npz").is_file()
        pickled = " (the .npz form is never read: it holds pickled objects)" if npz else ""
        raise MusiclstmError(f"{path} not found: DIR must hold the JSB Chorales files "
                             f"({', '.join(FILES.values())}){pickled}")
    tok = jsb_tokenizer(kind)
    splits = load_jsb(path)
    pieces = []
    for split, chorales in splits.items():
        for i, c in enumerate(chorales):
            ids = np.r_[BOS, tok.codec.encode_grid(_grid(c, kind), tok.vocab), EOS].astype(np.int64)
            sha = hashlib.sha256(ids.tobytes()).hexdigest()
            if kind == "16th":  # early stopping on a tenth of train; the published valid split is reported
                role = {"valid": "report", "test": "test"}.get(split) or ("valid" if int(sha[:8], 16) % 10 == 0
                                                                         else "train")
            else:  # early stopping on valid; the published test split is reported
                role = {"test": "report"}.get(split, split)
            pieces.append(Piece(Path(f"{path.name}#{split}/{i}"), sha, None, role, ids, len(c) * 0.6))
    fingerprint = hashlib.sha256(path.read_bytes() + kind.encode()).hexdigest()[:16]
    return Corpus(pieces, fingerprint=fingerprint, tokenizer=tok)


def score(net, corpus: Corpus, kind: str) -> dict:
    """The table's figure on the "report" split: NLL per note token (16th) or per frame (quarter)."""
    net.eval()
    total, count = 0.0, 0
    for p in corpus.split("report"):
        nll = piece_nlls(net, p.ids)[:-1]  # the voice tokens; the closing EOS is not a note
        total += float(nll.sum())
        count += len(nll) if kind == "16th" else len(nll) // 4
    return {"nll": total / count, "count": count, "pieces": len(corpus.split("report"))}


def _load(kind: str, checkpoints: Path | None):
    name = NAMES[kind]
    where = checkpoints / f"{name}.pt" if checkpoints is not None else name  # else the bundled one
    model = checkpoint.load(where)
    if model.tokenizer != jsb_tokenizer(kind):
        raise MusiclstmError(f"{model.path} was not trained on the JSB {kind} benchmark tokens")
    return model


def jsb(root: str | Path, *, out: str | Path | None = None, evaluate_only: bool = False,
        checkpoints: str | Path | None = None, progress: bool = True, **overrides) -> dict:
    """Run both JSB comparisons; returns the figures beside the published ones.

    With `evaluate_only`, scores the bundled benchmark checkpoints (or those in `checkpoints`);
    otherwise trains both models into `out` first (`out/jsb16.pt`, `out/jsb_quarter.pt`), with
    `RECIPES` updated by `overrides`.
    """
    from ..training.lm import train

    result: dict = {}
    for kind in ("16th", "quarter"):
        corpus = jsb_corpus(root, kind)
        if evaluate_only:
            model = _load(kind, Path(checkpoints) if checkpoints else None)
        else:
            if out is None:
                raise MusiclstmError("benchmark jsb needs --out to train (or --evaluate-only)")
            run = Path(out) / NAMES[kind]
            best = train(corpus, run, force=True, progress=progress, **{**RECIPES[kind], **overrides})
            checkpoint.slim(best, Path(out) / f"{NAMES[kind]}.pt",
                            description=f"JSB Chorales benchmark model ({kind} table), grid hold=False")
            model = checkpoint.load(Path(out) / f"{NAMES[kind]}.pt")
        s = score(model.net, corpus, kind)
        key = "jsb16_valid_nll_per_note" if kind == "16th" else "jsb_quarter_test_nll_per_frame"
        result[key] = s["nll"]
        result[kind] = {**s, "checkpoint": str(model.path), "step": model.meta.get("step"),
                        "parameters": model.net.num_parameters(), "published": PUBLISHED[kind]}
    return result


def beaten(ours: float, published: dict[str, float]) -> dict[str, bool]:
    """Published row -> whether our NLL is lower (ties are not wins)."""
    return {name: ours < v for name, v in published.items()}


def table(result: dict) -> str:
    """The two comparisons as text, ours beside each published number and whether ours is lower."""
    lines = []
    for kind, key, title in (("16th", "jsb16_valid_nll_per_note", "JSB 16th grid, validation NLL per note token"),
                             ("quarter", "jsb_quarter_test_nll_per_frame",
                              "JSB quarter-note frames, test NLL per frame")):
        r = result[kind]
        lines.append(f"{title} ({r['count']:,} {'tokens' if kind == '16th' else 'frames'}, {r['pieces']} chorales)")
        lines.append(f"  {'musiclstm LSTM (' + format(r['parameters'] / 1e6, '.2f') + ' M parameters)':60s} "
                     f"{result[key]:7.3f}")
        wins = beaten(result[key], r["published"])
        lines += [f"  {name:60s} {v:7.3f}  {'ours lower' if wins[name] else 'ours NOT lower'}"
                  for name, v in r["published"].items()]
    return "\n".join(lines)
