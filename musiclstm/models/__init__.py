"""The networks and their file format: the left-to-right LSTM, the harmonizer, the continuous cache, checkpoints.

Rooms: `lstm` (MusicLSTM), `harmonizer` (the bidirectional chorale network and its cells), `cache` (the
continuous cache over hidden states), `registry` (model kind -> config and network), `checkpoint`
(persistence: save, read, load; below every feature, it names no feature).
May import: errors, theory, io, encodings. Not: data, training, generation, evaluation, app.
"""
