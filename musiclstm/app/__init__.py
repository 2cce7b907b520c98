"""The ways in: the `musiclstm` command line and the studio web app.

Rooms: `cli` (every command; each one a thin call into the rooms below), `studio` (FastAPI + studio.html).
May import: anything in musiclstm. Nothing imports app but `musiclstm.__main__`.
"""
