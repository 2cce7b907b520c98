"""Reading and writing music: the `Score` every room shares, MIDI/MusicXML/ABC in and out, audio, plots.

Rooms: `score` (the note arrays), `midi` (the one reader and the MIDI writer), `outputs` (write a piece's
MIDI, sidecar, WAV, PNG, MusicXML: all or none; audio), `plot` (piano rolls, loss curves, gate plots).
May import: errors, theory. Not: encodings, data, models, training, generation, evaluation, app.
"""
