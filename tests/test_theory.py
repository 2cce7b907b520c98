"""The one key syntax and scale table (musiclstm.theory), as compose, harmonize, the studio and the API read keys."""

from __future__ import annotations

import pytest

from musiclstm.errors import ConfigError
from musiclstm.theory import key_name, parse_key, scale


@pytest.mark.parametrize("text, want", [
    ("D minor", (2, True)), ("Dm", (2, True)), ("D min", (2, True)), ("A-minor", (9, True)),
    ("C major", (0, False)), ("CM", (0, False)), ("C maj", (0, False)), ("Bb major", (10, False)),
    ("F# minor", (6, True)), ("Eb", (3, False)), ("e minor", (4, True)), ("C", (0, False)), ("G MAJOR", (7, False)),
])
def test_one_key_syntax(text, want):
    assert parse_key(text) == want


@pytest.mark.parametrize("text", ["H", "C x", "", "C majorr", "Cb#"])
def test_not_a_key_is_one_clear_error(text):
    with pytest.raises(ConfigError, match="not a key like"):
        parse_key(text)


def test_key_names_and_scales():
    assert key_name(*parse_key("F# minor")) == "F# minor"
    assert scale(0, False) == {0, 2, 4, 5, 7, 9, 11}
    assert scale(9, True, raised=False) == {9, 11, 0, 2, 4, 5, 7}  # A natural minor: compose --key
    assert scale(9, True) == {9, 11, 0, 2, 4, 5, 6, 7, 8}  # with the raised 6th and 7th: harmonize --key
