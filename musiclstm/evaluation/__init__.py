"""Judging models and music: NLL, validity, music statistics, the repeat probe, baselines and benchmarks.

Rooms: `evaluate` (the report of `musiclstm evaluate`), `music` (statistics of one Score), `ngram` (the
Kneser-Ney baseline), `metrics` (onset F1), `report` (text tables), `gates` (inside the LSTM),
`benchmark` (the JSB benchmark: trains and evaluates).
May import: everything below (errors ... training). Not: app.
"""
