"""The three token encodings. Each module has a `Config` dataclass and a `Codec` with
`table()` (its event ranges), `encode(score, vocab) -> ids` (vectorized numpy) and
`decode(ids, vocab) -> Score` (a forgiving state machine that never raises).

What each encoding loses:

* **performance** (Performance RNN / Music Transformer, 388 events): drums are dropped; all other
  instruments merge into one piano stream (programs, track names and meters are lost; decoded as
  Acoustic Grand Piano at 120 qpm); times are quantized to 10 ms; velocities to 32 bins; the
  sustain pedal is folded into note durations (a note sounds until the pedal lifts), pedal events
  themselves are not kept; one pitch is one key: unisons struck in the same 10 ms step are one
  note (a vocal line doubled in the piano: onset F1 0.75-0.99 against the notes of such scores,
  1.0 against the key presses), and a note struck while its pitch sounds ends the earlier one
  there and lasts until the latest of their ends (the sound is kept, the voices are not); a
  decoded note lasts at most `max_note_seconds`.
* **remi** (beat-relative, multi-track): onsets quantized to 1/12 of a quarter (holds 16ths,
  triplets and 16th-triplets exactly); durations to a table of 50 values from 1/12 to 32
  quarters (longer notes are cut); velocities to 32 bins; tempo to whole qpm between 30 and 300,
  placed on the grid; time signatures outside the table (bar longer than 8
  quarters) become 4/4; pedal, track names and several tracks with the same program (they merge)
  are lost; drums keep their own pitch tokens. Version 2 (the default) keeps the key signature
  (the first one, and changes, at the bar line at or before them; a file without one gets the
  Krumhansl-Schmuckler estimate of its notes, which decodes as a key signature the file did not
  have) and reads a meter of one-beat bars throughout (POP909's 1/4) as 4/4. Version 1 (older
  checkpoints) also loses key signatures and keeps such meters.
* **grid** (fixed voices per step, e.g. SATB on 16ths): onsets and ends quantized to the step
  (a 16th by default); at most `voices` notes sound at once (tracks are voices when there are
  exactly `voices` tracks, otherwise the highest `voices` sounding pitches of each step: a held
  note keeps its voice, new notes take the free ones from the top; a note pushed out by higher
  ones while it sounds is cut there and, if it is among the highest again, re-struck);
  velocities, programs, drums, tempo and meter are lost (decoded at `qpm`, velocity 80); a held
  note is a HOLD token, so a re-struck pitch is kept only when `hold` is on.
May import: errors, theory, io. Not: data, models, training, generation, evaluation, app.
"""

from . import grid, performance, remi

ENCODINGS = {"performance": performance, "remi": remi, "grid": grid}
