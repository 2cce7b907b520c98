"""Music theory the whole package shares: note names, keys and their scales, voice ranges, voice leading.

The bottom room (with `errors`): pure functions and tables over pitch numbers. Every key parser,
scale table and voice-leading rule in musiclstm is here and nowhere else.
May import: errors, numpy. Not: anything else in musiclstm.
"""

from __future__ import annotations

# textbook SATB ranges (MIDI, top voice first): soprano C4-A5, alto F3-D5, tenor C3-A4, bass E2-D4
SATB_RANGES = ((60, 81), (53, 74), (48, 69), (40, 62))
