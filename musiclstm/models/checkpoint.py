"""Checkpoints: one self-contained file, written atomically, loaded without running code.

A checkpoint is a `torch.save` of plain tensors, numbers and strings: the weights, a JSON string
with the tokenizer, model and training configs, metrics and a data fingerprint, and (in `last.pt`)
the optimizer and random state to resume from. It is loaded with `torch.load(weights_only=True)`,
which refuses any pickled object that is not such plain data, so a crafted file cannot run code.
May import: errors, encodings (the tokenizer), models (registry, cache). Not: data, training, generation,
evaluation, app: the file format names no feature.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..encodings.tokenizer import Tokenizer
from ..errors import CheckpointError
from . import registry
from .cache import Cache
from .lstm import MusicLSTM

FORMAT = "musiclstm-checkpoint"
VERSION = 1
# Small models shipped with the package: the repository's top-level checkpoints/ folder, which
# pyproject.toml installs as the package folder musiclstm/bundled (the first path is the installed
# one, the second a source checkout's).
_PACKAGE = Path(__file__).resolve().parent.parent  # the musiclstm folder
BUNDLED_DIRS = (_PACKAGE / "bundled", _PACKAGE.parent / "checkpoints")


DEFAULT = "folk"  # the bundled model that `load()` and a bare `musiclstm compose` use


HARMONIZERS = ("harmonizer",)  # bundled models of kind "harmonizer" (musiclstm.generation.harmonize), by name


def bundled_models(kind: str | None = "lm") -> dict[str, Path]:
    """Name -> file of every bundled model of `kind` ("lm": those that compose, "harmonizer", None: all);
    the installed folder wins over a source checkout's."""
    found: dict[str, Path] = {}
    for d in reversed(BUNDLED_DIRS):
        found.update({f.stem: f for f in sorted(d.glob("*.pt"))} if d.is_dir() else {})
    if kind is None:
        return found
    return {n: f for n, f in found.items() if (n in HARMONIZERS) == (kind == "harmonizer")}


@dataclass
class Model:
    """A loaded model: the network, its tokenizer and everything the checkpoint recorded."""

    net: MusicLSTM
    tokenizer: Tokenizer
    meta: dict = field(default_factory=dict)
    path: Path | None = None

    @property
    def fingerprint(self) -> str:
        """A short hash (16 hex digits) of the weights themselves: names, shapes and fp32 values.

        Two models trained on the same data to the same step differ here; so does a `slim` fp16
        copy (its weights are rounded). The data fingerprint and step stay in `meta`.
        """
        return weights_fingerprint(self.net)

    @property
    def cache(self):
        """The continuous cache tuned for this model on held-out pieces (`musiclstm.models.cache`), or None."""
        c = self.meta.get("cache")
        return Cache(**{k: c[k] for k in ("lam", "theta", "window", "skip") if k in c}) if c else None


def origin(model: Model) -> dict:
    """Where a fine-tuned run started (recorded as its meta's "init"): a bundled model by its name, so no
    machine's install path is kept, a file by its path; with the weights' fingerprint."""
    path = Path(model.path).resolve() if model.path is not None else None
    names = [n for n, f in bundled_models(None).items() if path is not None and Path(f).resolve() == path]
    return {"path": f"bundled {names[0]}" if names else str(path), "fingerprint": model.fingerprint}


def weights_fingerprint(net: torch.nn.Module) -> str:
    """sha256 over every parameter and buffer (name, shape, float32 bytes), first 16 hex digits."""
    h = hashlib.sha256()
    for name, t in sorted(net.state_dict().items()):
        t = t.detach().to("cpu", torch.float32 if t.is_floating_point() else t.dtype).contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


def save(path: Path, net: MusicLSTM, tokenizer: Tokenizer, meta: dict, resume: dict | None = None) -> Path:
    """Write a checkpoint atomically: a temporary file in the same folder, fsync, then rename."""
    path = Path(path)
    meta = {**meta, "format": FORMAT, "version": VERSION, "tokenizer": tokenizer.to_dict(),
            "model": {k: getattr(net.config, k) for k in net.config.__dataclass_fields__}}
    blob = {"format": FORMAT, "version": VERSION, "meta": json.dumps(meta),
            "weights": {k: v.detach().cpu() for k, v in net.state_dict().items()}}
    if resume is not None:
        blob["resume"] = resume
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            torch.save(blob, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"cannot write checkpoint {path}: {e.strerror or e}") from e
    return path


def resolve(path_or_name: str | os.PathLike | None) -> Path:
    """A checkpoint file, a run folder (its best.pt, else last.pt) or a bundled model's name."""
    if path_or_name is None:  # the bundled default: never a file or folder of the working directory
        bundled = bundled_models(None)
        if "default" in bundled or DEFAULT in bundled:
            return bundled.get("default", bundled.get(DEFAULT))
        raise CheckpointError(f"no bundled default model in this install (bundled: "
                              f"{', '.join(sorted(bundled)) or 'none yet'}); train one with 'musiclstm train' "
                              "and pass --checkpoint")
    p = Path(path_or_name)
    if p.is_dir():
        for name in ("best.pt", "last.pt"):
            if (p / name).is_file():
                return p / name
        raise CheckpointError(f"no best.pt or last.pt in {p}")
    if p.is_file():
        return p
    bundled = bundled_models(None)
    if path_or_name == "default" and "default" not in bundled:
        path_or_name = DEFAULT
    if str(path_or_name) in bundled:
        return bundled[str(path_or_name)]
    names = ", ".join(sorted(bundled)) or "none yet"
    if path_or_name == DEFAULT:
        raise CheckpointError(f"no bundled default model in this install (bundled: {names}); "
                              "train one with 'musiclstm train' and pass --checkpoint")
    raise CheckpointError(f"no checkpoint file, run folder or bundled model named {str(path_or_name)!r} "
                          f"(bundled: {names})")


def slim(src: str | os.PathLike, dst: str | os.PathLike, *, half: bool = True, **meta) -> Path:
    """Copy a checkpoint for shipping: no resume state, weights in fp16 (`load` casts them back to
    fp32), extra `meta` fields (e.g. description=...) added. Halves the file; the bundled models
    are made this way (see checkpoints/build.sh)."""
    blob = read(resolve(src))
    model = load(src, kind=None)
    if half:
        model.net.half()
    info = {k: v for k, v in blob["meta"].items() if k not in ("format", "version", "tokenizer", "model")}
    return save(Path(dst), model.net, model.tokenizer, {**info, **meta, "weights_dtype": "float16" if half else
                                                        "float32"})


def read(path: Path) -> dict:
    """Load a checkpoint's raw contents safely; any foreign, truncated or unsafe file -> CheckpointError."""
    path = Path(path)
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        with open(path, "rb") as fh:
            head = fh.read(2)
        if head[:1] != b"\x80" and head != b"PK":  # neither a pickle nor torch's zip: some other file
            raise CheckpointError(f"{path} is not a readable checkpoint (a foreign file, not a torch.save file)") from e
        raise CheckpointError(f"{path} is not a safe musiclstm checkpoint (it holds pickled code or objects; "
                              "refused without running it)") from e
    except Exception as e:  # the unpickler raises anything on foreign bytes (IndexError, KeyError, ...)
        first = (str(e).splitlines() or [type(e).__name__])[0][:120]
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated or foreign file: {first})") from e
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a musiclstm checkpoint")
    if blob.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint format version {blob.get('version')}; "
                              f"this musiclstm reads version {VERSION}")
    try:
        blob["meta"] = json.loads(blob["meta"])
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} has damaged metadata") from e
    return blob


def kind_of(meta: dict) -> str:
    """"lm" for the left-to-right MusicLSTM, "harmonizer" for `musiclstm.models.harmonizer`'s bidirectional model."""
    return meta.get("model", {}).get("kind", "lm")


def load(path_or_name: str | os.PathLike | None = None, *, device: str | torch.device = "cpu",
         kind: str | None = "lm") -> Model:
    """Load a model for generation: `load()` is the bundled default; else a file, run folder or name.

    `kind`: the model kind the caller can use ("lm" composes, "harmonizer" harmonizes; None: either).
    """
    path = resolve(path_or_name)
    blob = read(path)
    meta = blob["meta"]
    found = kind_of(meta)
    if kind is not None and found != kind:
        use = "musiclstm harmonize / infill" if found == "harmonizer" else "musiclstm compose"
        raise CheckpointError(f"{path.name} is a {found} model, not a {kind} model: use it with {use}")
    try:
        tokenizer = Tokenizer.from_dict(meta["tokenizer"])
        net = registry.build(found, meta["model"])
        config = net.config
        net.load_state_dict(blob["weights"])
    except (KeyError, TypeError, RuntimeError) as e:
        raise CheckpointError(f"{path} does not match this musiclstm's model or tokenizer: "
                              f"{str(e).splitlines()[0][:160]}") from e
    if config.vocab_size != tokenizer.vocab_size:
        raise CheckpointError(f"{path}: model vocabulary {config.vocab_size} != tokenizer's {tokenizer.vocab_size}")
    return Model(net.to(device).eval(), tokenizer, meta, path)
