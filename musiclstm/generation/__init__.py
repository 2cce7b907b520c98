"""Making music with a trained model: sampling, the grammar-guided compose, harmonize and infill.

Rooms: `sample` (the token sampler with top-k/top-p and the cache), `compose` (primer, controls, length,
decode once), `gibbs` (pseudo-Gibbs sampling of chorale cells, with the voice-leading rules), `harmonize`
(harmonize a melody, infill bars).
May import: errors, theory, io, encodings, models. Not: data, training, evaluation, app.
"""
