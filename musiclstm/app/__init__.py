"""The ways in: the `musiclstm` command line and the studio web app.

Rooms: `cli` (the `musiclstm` group; its commands in the `*_command(s)` modules beside it, each a thin call
into the rooms below), `studio` (FastAPI + studio.html; its routes `studio_routes`, its queue `studio_jobs`, its
session `studio_session`).
May import: anything in musiclstm. Nothing imports app but `musiclstm.__main__`.
"""
