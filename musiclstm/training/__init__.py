"""Training the two model kinds: presets and configs, the one loop, devices and precision, the end of a run.

Rooms: `loop` (what both kinds share), `lm` (MusicLSTM: `train`), `harmonizer` (the chorale network's
masks and holdout), `tune` (the continuous cache tuned on held-out pieces).
May import: errors, theory, io, encodings, data, models, generation (a sample at the end of a run).
Not: evaluation, app.
"""
