"""The public corpora `corpus fetch` knows: where each release lives, its archive format, the folder its archive
unpacks to, the layout musiclstm's readers expect, its caps and, where the publisher states one, a sha256.

May import: nothing of musiclstm (a table of plain dataclasses). Not: any other room.
"""

from __future__ import annotations

from dataclasses import dataclass

MB = 1 << 20


@dataclass(frozen=True)
class Remote:
    """One file of a release: its public URL, the name it is stored (and mirrored) under, its sha256 if
    the publisher states one (None: none published, so the layout check is all we have)."""

    url: str
    filename: str
    sha256: str | None = None


@dataclass(frozen=True)
class Source:
    """A public corpus. `archive`: "zip", "tar.gz" or "files" (the remotes are the files themselves);
    `top`: the folder every archive member sits in, dropped on unpacking (DIR holds its contents);
    `expect`: pieces the layout check requires (at least, except where the check says exactly);
    `splits`: JSB only, chorales per split; `train_on`: the folder under DIR to train on."""

    name: str
    description: str
    licence: str
    remotes: tuple[Remote, ...]
    archive: str
    top: str | None
    layout: str
    expect: int
    train_on: str = "."
    splits: dict[str, int] | None = None
    max_download: int = 1024 * MB  # bytes downloaded, all remotes together
    max_unpacked: int = 4096 * MB  # bytes unpacked
    max_members: int = 50_000



_GH = "https://github.com"
_JSB = "https://raw.githubusercontent.com/czhuang/JSB-Chorales-dataset/master"
SOURCES: dict[str, Source] = {s.name: s for s in (
    Source("pop909", "POP909: 909 Chinese pop songs as piano arrangements (MELODY, BRIDGE, PIANO tracks), "
           "with beat, chord and key annotations", "MIT (repository LICENSE)",
           (Remote(f"{_GH}/music-x-lab/POP909-Dataset/archive/refs/heads/master.zip", "POP909-Dataset-master.zip"),),
           "zip", "POP909-Dataset-master", "POP909/NNN/NNN.mid (one folder per song; versions/ holds alternatives)",
           expect=909, train_on="POP909", max_download=1024 * MB),
    Source("nottingham", "Nottingham folk tunes, Jukedeck's cleaned MIDI (melody + chords)",
           "GPLv3 (Jukedeck repository); the tunes themselves: no formal licence",
           (Remote(f"{_GH}/jukedeck/nottingham-dataset/archive/refs/heads/master.zip",
                   "nottingham-dataset-master.zip"),),
           "zip", "nottingham-dataset-master", "MIDI/<collection><n>.mid (melody/ and chords/ below it split the same "
           "tunes)", expect=1034, train_on="MIDI", max_download=512 * MB),
    Source("jsb", "JSB Chorales, the Boulanger-Lewandowski split as JSON (quarter, 8th, 16th piano rolls) and "
           "Coconet's four-voice 16th grid (Jsb16thSeparated.json), the files `benchmark jsb` reads",
           "none stated (the music is public domain)",
           tuple(Remote(f"{_JSB}/{f}", f) for f in ("Jsb16thSeparated.json", "jsb-chorales-quarter.json",
                                                    "jsb-chorales-8th.json", "jsb-chorales-16th.json")),
           "files", None, "Jsb16thSeparated.json, jsb-chorales-{quarter,8th,16th}.json: train/valid/test 229/76/77",
           expect=382, splits={"train": 229, "valid": 76, "test": 77}, max_download=256 * MB,
           max_unpacked=256 * MB, max_members=8),
    Source("lmd-clean", "Lakh MIDI v0.1 `clean_midi`: about 17,000 songs named <Artist>/<Title>.mid "
           "(some files are corrupt; musiclstm skips them)", "dataset CC BY 4.0; the songs: their owners'",
           (Remote("http://hog.ee.columbia.edu/craffel/lmd/clean_midi.tar.gz", "clean_midi.tar.gz"),),
           "tar.gz", "clean_midi", "<Artist>/<Title>.mid", expect=15_000, max_download=1024 * MB,
           max_unpacked=4096 * MB, max_members=40_000),
    Source("maestro", "MAESTRO v3.0.0 (MIDI only): 1,276 piano performances with pedals, split column in the CSV",
           "CC BY-NC-SA 4.0 (non-commercial)",
           (Remote("https://storage.googleapis.com/magentadata/datasets/maestro/v3.0.0/maestro-v3.0.0-midi.zip",
                   "maestro-v3.0.0-midi.zip"),),
           "zip", "maestro-v3.0.0", "<year>/<name>.midi listed in maestro-v3.0.0.csv (midi_filename, split)",
           expect=1276, max_download=512 * MB, max_unpacked=2048 * MB, max_members=5_000),
)}


def list_sources() -> list[Source]:
    """Every fetchable corpus, in a fixed order."""
    return list(SOURCES.values())
