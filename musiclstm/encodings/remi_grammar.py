"""The remi encoding's grammar: BAR/POSITION/PROGRAM/PITCH/VELOCITY/DURATION in order.

May import: errors, theory, io.score (ROLES), encodings (grammar, tokenizer). Not: data, models and the rooms above.
"""

from __future__ import annotations

import numpy as np
import torch

from ..io.score import ROLES
from ..theory import parse_key
from .grammar import Grammar
from .tokenizer import EOS


class RemiGrammar(Grammar):
    """BAR [TIMESIG] [KEY] POSITION [TEMPO] ([ROLE] [PROGRAM] [VELOCITY] PITCH DURATION)+ ..., positions increasing.

    (Version 1 notes are PROGRAM PITCH VELOCITY DURATION, every token every time.) A piece opens
    with a time signature (and, in version 2, a key) and has a tempo before its first note, so no
    composed piece is left without a meter. Version 2 only names a PROGRAM or VELOCITY that changes.
    Time is counted in seconds at the piece's own TEMPO tokens.
    """

    # phases: 0 start, 1 after BAR, 7 after TIMESIG, 8 after KEY, 2 after POSITION, 9 after TEMPO,
    # 3 after PROGRAM, 5 after VELOCITY, 4 after PITCH, 6 after DURATION (a note is complete),
    # 10 after REPEAT (version 3: the bar is a copy of an earlier one; BAR or EOS follows), 11 after ROLE (version 4:
    # the next notes' track role; [PROGRAM] [VELOCITY] PITCH follows)
    def init(self, B):
        q = self.tok.config.ticks_per_quarter
        version = getattr(self.tok.config, "version", 1)
        self.v2, self.v3, self.v4 = version >= 2, version >= 3, version >= 4
        z = lambda: torch.zeros(B, dtype=torch.bool)  # noqa: E731
        if self.v3:  # a ring of the latest bars, enough for the farthest REPEAT: length, notes, tails, last note
            self.dist = torch.tensor(self.tok.config.repeat_distances)
            self.ring = int(self.dist.max()) + 1
            R = self.ring
            self.hist = {"len": torch.zeros(B, R, dtype=torch.long), "full": torch.zeros(B, R, dtype=torch.bool),
                         "ends": torch.zeros(B, R, 256, dtype=torch.int32),
                         "first": torch.full((B, R, 256), 1 << 30, dtype=torch.int32),
                         "program": torch.full((B, R), -1, dtype=torch.long),
                         "velocity": torch.full((B, R), -1, dtype=torch.long),
                         "role": torch.full((B, R), -1, dtype=torch.long)}
        return {"phase": torch.zeros(B, dtype=torch.long), "pos": torch.full((B,), -1, dtype=torch.long),
                "bar_len": torch.full((B,), 4 * q, dtype=torch.long), "drum": z(),
                "now": torch.zeros(B, dtype=torch.long), "bar_start": torch.full((B,), -4 * q, dtype=torch.long),
                "ends": torch.zeros(B, 256, dtype=torch.long), "pitch": torch.zeros(B, dtype=torch.long),
                "bars": torch.zeros(B, dtype=torch.long), "sig": z(), "key": z(), "tempo": z(), "bar_notes": z(),
                "any_note": z(), "melody": z(),
                "program": torch.full((B,), -1, dtype=torch.long), "role": torch.full((B,), -1, dtype=torch.long),
                "velocity": torch.full((B,), -1, dtype=torch.long),
                "qpm": torch.full((B,), 120.0, dtype=torch.float64), "secs": torch.zeros(B, dtype=torch.float64)}

    def update(self, t):
        s, codec = self.state, self.tok.codec
        q = self.tok.config.ticks_per_quarter
        rows = torch.arange(len(t))
        is_ = lambda kind: self.is_(t, kind) if kind in self._rng else torch.zeros_like(t, dtype=torch.bool)  # noqa: E731
        val = lambda kind: t - self._rng[kind][0]  # noqa: E731
        bar = is_("BAR")
        s["bar_start"] = torch.where(bar, torch.where(s["bars"] > 0, s["bar_start"] + s["bar_len"], 0), s["bar_start"])
        s["pos"] = torch.where(bar, -1, s["pos"])
        s["bars"] += bar.long()
        ts = is_("TIMESIG")
        if ts.any():
            sig = torch.tensor([n * 4 * q // d for n, d in codec.sigs])
            s["bar_len"] = torch.where(ts, sig[val("TIMESIG").clamp(0, len(sig) - 1)], s["bar_len"])
        key = is_("KEY")
        s["sig"] |= ts
        s["key"] |= key
        pos = is_("POSITION")
        s["pos"] = torch.where(pos, val("POSITION"), s["pos"])
        now = torch.where(pos | bar, s["bar_start"] + s["pos"].clamp(min=0), s["now"])
        s["secs"] += (now - s["now"]).clamp(min=0).double() / q * 60.0 / s["qpm"]
        s["now"] = now
        tempo = is_("TEMPO")
        s["tempo"] |= tempo
        s["qpm"] = torch.where(tempo, torch.from_numpy(codec.tempos)[val("TEMPO").clamp(0, len(codec.tempos) - 1)],
                               s["qpm"])
        prog = is_("PROGRAM")
        s["drum"] = torch.where(prog, val("PROGRAM") == 128, s["drum"])
        s["program"] = torch.where(prog, val("PROGRAM"), s["program"])
        role = is_("ROLE")
        if self.v4:
            s["role"] = torch.where(role, val("ROLE"), s["role"])
            s["melody"] |= role & (val("ROLE") == ROLES.index("melody"))
        vel = is_("VELOCITY")
        s["velocity"] = torch.where(vel, val("VELOCITY"), s["velocity"])
        pitch, drum = is_("PITCH"), is_("DRUM")
        s["bar_notes"] = (s["bar_notes"] & ~bar) | pitch | drum
        s["any_note"] |= pitch | drum
        s["pitch"] = torch.where(pitch, val("PITCH"), torch.where(drum, 128 + val("DRUM"), s["pitch"]))
        dur = is_("DURATION")
        if dur.any():
            d = torch.from_numpy(codec.durations)[val("DURATION").clamp(0, len(codec.durations) - 1)]
            s["ends"][rows[dur], s["pitch"][dur]] = (s["now"] + d)[dur]
        rep = is_("REPEAT")
        if self.v3:
            self._remember(t, bar, ts, dur, rep)
        phase = s["phase"]
        phase = torch.where(bar, 1, torch.where(ts, 7, torch.where(key, 8, phase)))
        phase = torch.where(pos, 2, torch.where(tempo, 9, phase))
        phase = torch.where(prog, 3, torch.where(vel, 5, torch.where(role, 11, phase)))
        phase = torch.where(pitch | drum, 4, phase)
        phase = torch.where(dur, 6, phase)
        s["phase"] = torch.where(rep, 10, phase)

    def fold(self, logits):
        """Version 3: a bar line is one event whose number the grammar knows: the model's probability of every
        numbered BAR goes to the one allowed (an untrained model, unsure of the number, still ends its bars)."""
        lo, hi = self._rng["BAR"]
        if hi - lo > 1 and logits.shape[-1] == self.v.size:
            k = (lo + self.state["bars"] % (hi - lo)).to(logits.device)
            logits[torch.arange(len(k), device=logits.device), k] = torch.logsumexp(logits[:, lo:hi].float(), -1).to(
                logits.dtype)

    def _remember(self, t, bar, ts, dur, rep) -> None:
        """Version 3: keep each bar's length, whether it has notes, its notes' ends (from the bar line) and its
        last note's program and velocity; a REPEAT plays its source bar again, so it counts as those notes."""
        s, h, R = self.state, self.hist, self.ring
        cur = (s["bars"] - 1).clamp(min=0) % R
        new_bar = bar.nonzero().squeeze(1)
        h["full"][new_bar, cur[new_bar]] = False
        h["ends"][new_bar, cur[new_bar]] = 0
        h["first"][new_bar, cur[new_bar]] = 1 << 30
        sized = (bar | ts).nonzero().squeeze(1)
        h["len"][sized, cur[sized]] = s["bar_len"][sized]
        n = dur.nonzero().squeeze(1)
        if len(n):
            p = s["pitch"][n]
            rel = (s["ends"][n, p] - s["bar_start"][n]).int()
            h["ends"][n, cur[n], p] = torch.maximum(h["ends"][n, cur[n], p], rel)
            h["first"][n, cur[n], p] = torch.minimum(h["first"][n, cur[n], p], (s["now"] - s["bar_start"])[n].int())
            h["full"][n, cur[n]] = True
            for k in ("program", "velocity", "role"):
                h[k][n, cur[n]] = s[k][n]
        r = rep.nonzero().squeeze(1)
        if len(r):
            d = self.dist[(t[r] - self._rng["REPEAT"][0]).clamp(0, len(self.dist) - 1)]
            src = (cur[r] - d) % R
            h["ends"][r, cur[r]] = h["ends"][r, src]
            h["first"][r, cur[r]] = h["first"][r, src]
            h["full"][r, cur[r]] = True
            tails = h["ends"][r, src].long()
            s["ends"][r] = torch.where(tails > 0, torch.maximum(s["ends"][r], s["bar_start"][r, None] + tails),
                                       s["ends"][r])
            for k in ("program", "velocity", "role"):
                s[k][r] = h[k][r, src]
                h[k][r, cur[r]] = h[k][r, src]
            s["drum"][r] = s["program"][r] == 128
            s["bar_notes"][r] = True
            s["any_note"][r] = True

    def seconds(self):
        """(B,) seconds up to the latest bar line or position, at the tempo of each stretch."""
        return self.state["secs"]

    def bar_seconds(self):
        return self.state["bar_len"].double() / self.tok.config.ticks_per_quarter * 60.0 / self.state["qpm"]

    def bar_seconds_left(self):
        s = self.state  # from the latest position (or bar line) to the bar's end, at the tempo now
        left = (s["bar_start"] + s["bar_len"] - s["now"]).clamp(min=0)
        return left.double() / self.tok.config.ticks_per_quarter * 60.0 / s["qpm"]

    def at_bar_line(self):
        return self.state["phase"] == 1

    def end_quarters(self):
        s = self.state  # just after a BAR the piece ends at that bar line, else at the end of its bar
        end = torch.where(s["phase"] == 1, s["bar_start"], s["bar_start"] + s["bar_len"])
        return end.double() / self.tok.config.ticks_per_quarter

    def bars(self):
        return self.state["bars"]

    def bar_empty(self):
        return ~self.state["bar_notes"]

    def silent(self):
        return ~self.state["any_note"] & (self.state["bars"] > 0)

    def allowed(self, B):
        s = self.state
        a = torch.zeros(B, self.v.size, dtype=torch.bool)
        ph = s["phase"]
        ready = s["sig"] & (s["key"] | (not self.v2))  # the opening meter (and key) are there
        after_bar = (ph == 1) | (ph == 7) | (ph == 8)
        # a position may hold only a TEMPO (the encoder writes one where a bar opens with a rest): BAR or a
        # later POSITION may follow it, as in the training data (else the model is forced into a note there)
        tempo_only = (ph == 9) & (s["pos"] >= 0)
        self._allow_bar_lines(a, B, ready, after_bar, tempo_only)
        self._allow_positions(a, ready, after_bar, tempo_only)
        self._allow_tempos(a)
        pitch_ok, drum_ok, progs = self._free_keys()
        playable = (pitch_ok.any(1) & progs[:128].any()) | (drum_ok.any(1) & self.c.drums)
        at_onset = ((ph == 2) | (ph == 9) | (ph == 6)) & (s["pos"] >= 0) & s["tempo"] & playable
        if self.v2:
            self._allow_notes(a, at_onset, pitch_ok, drum_ok, progs)
        else:
            a[:, self.r("PROGRAM")] = at_onset[:, None] & progs[None]
            a[:, self.r("PITCH")] = ((ph == 3) & ~s["drum"])[:, None] & pitch_ok
            a[:, self.r("DRUM")] = ((ph == 3) & s["drum"])[:, None] & drum_ok
            a[:, self.r("VELOCITY")] = (ph == 4)[:, None]
            a[:, self.r("DURATION")] = (ph == 5)[:, None]
        if self.v3:
            a[:, self.r("REPEAT")] = self._repeatable(after_bar & ready)
        a[:, EOS] = (ph == 6) | (ph == 10)
        return a

    def _allow_bar_lines(self, a, B, ready, after_bar, tempo_only) -> None:
        """BAR (version 3: only the next number) after a note, a REPEAT or the start, or once the opening meter
        is there after a bar line or a lone TEMPO; TIMESIG right after BAR; KEY (version 2) after the meter."""
        s, c, ph = self.state, self.c, self.state["phase"]
        n_bar = self._rng["BAR"][1] - self._rng["BAR"][0]  # version 3 numbers its bars: only the next number
        a[torch.arange(B), self.v.offset["BAR"] + s["bars"] % n_bar] = ((ph == 0) | (ph == 6) | (ph == 10)
                                                        | ((after_bar | tempo_only) & ready))
        a[:, self.r("TIMESIG")] = (ph == 1)[:, None]
        if self.v2:
            a[:, self.r("KEY")] = ((ph == 7) | ((ph == 1) & s["sig"]))[:, None]
            if c.key:  # the KEY token (the written key signature) is the key asked
                tonic, minor = parse_key(c.key)
                a[:, self.r("KEY")] &= torch.arange(self._rng["KEY"][1] - self._rng["KEY"][0])[None] == \
                    tonic + 12 * int(minor)

    def _allow_positions(self, a, ready, after_bar, tempo_only) -> None:
        """POSITIONs later in the bar, after a note, a bar line or a lone TEMPO; with a polyphony cap, only those
        where some allowed key could still start."""
        s, c, ph = self.state, self.c, self.state["phase"]
        n_pos = self._rng["POSITION"][1] - self._rng["POSITION"][0]
        later = (torch.arange(n_pos)[None] > s["pos"][:, None]) & (torch.arange(n_pos)[None] < s["bar_len"][:, None])
        a[:, self.r("POSITION")] = later & (((ph == 6) | after_bar | tempo_only) & ready)[:, None]
        if c.max_polyphony:  # only positions where some allowed pitch could still start
            t = s["bar_start"][:, None] + torch.arange(n_pos)[None]  # (B, P) ticks
            sounding = s["ends"][:, None, :] > t[:, :, None]  # (B, P, 256): pitched keys, then drum keys
            key = (~sounding[..., :128] & self.pitches).any(-1) | ((~sounding[..., 128:]).any(-1) & bool(c.drums))
            room = (sounding.sum(-1) < c.max_polyphony) & key  # counted as notes are (drums too)
            a[:, self.r("POSITION")] &= room

    def _allow_tempos(self, a) -> None:
        """TEMPO right after a POSITION; with a tempo asked, only that one, and only before the first."""
        s, c = self.state, self.c
        tempo_ok = torch.ones(len(self.tok.codec.tempos), dtype=torch.bool)
        if c.qpm is not None:
            tempos = self.tok.codec.tempos
            tempo_ok = torch.from_numpy(tempos == np.clip(round(c.qpm), tempos[0], tempos[-1]))
        a[:, self.r("TEMPO")] = (s["phase"] == 2)[:, None] & tempo_ok[None]
        if c.qpm is not None:  # the piece's tempo is given: it must be stated before the first note
            a[:, self.r("TEMPO")] &= ~s["tempo"][:, None]

    def _free_keys(self):
        """Which notes could still start now: (B, 128) free pitches (polyphony, key, range), (B, 128) free drum
        keys, and the (129,) programs allowed (128: drums)."""
        s, c = self.state, self.c
        free = s["ends"] <= s["now"][:, None]  # (B, 256): that pitch is not sounding now
        if c.max_polyphony:
            free &= ((~free).sum(1, keepdim=True) < c.max_polyphony)
        pitch_ok = free[:, :128] & self.pitches[None]
        drum_ok = free[:, 128:]
        progs = torch.zeros(129, dtype=torch.bool)
        progs[list(c.programs) if c.programs is not None else slice(0, 128)] = True
        progs[128] = c.drums
        return pitch_ok, drum_ok, progs

    def _allow_notes(self, a, at_onset, pitch_ok, drum_ok, progs) -> None:
        """Versions 2 and up: [ROLE] [PROGRAM] [VELOCITY] PITCH|DRUM DURATION, a ROLE, PROGRAM or VELOCITY only
        where it changes, a note only on a free key of an allowed program."""
        s, ph = self.state, self.state["phase"]
        prog_ok = progs[s["program"].clamp(0, 128)] & (s["program"] >= 0)  # the current program may go on
        if self.v4:  # a ROLE where a note could start, only one that changes; a note follows it
            n_roles = self._rng["ROLE"][1] - self._rng["ROLE"][0]
            a[:, self.r("ROLE")] = at_onset[:, None] & (torch.arange(n_roles)[None] != s["role"][:, None])
            if self.c.melody_first:  # a counter-melody answers a melody: not before it
                counter = self._rng["ROLE"][0] + ROLES.index("counter-melody")
                a[:, counter] &= s["melody"]
        named_role = ph == 11
        new_prog = (at_onset | named_role)[:, None] & progs[None] & \
            (torch.arange(129)[None] != s["program"][:, None])
        new_prog &= torch.where(torch.arange(129)[None] == 128, drum_ok.any(1, keepdim=True),
                                pitch_ok.any(1, keepdim=True))
        a[:, self.r("PROGRAM")] = new_prog
        # a note may be named from here: after its PROGRAM, or on the current program if it has a free key
        own = torch.where(s["drum"], drum_ok.any(1), pitch_ok.any(1))
        head = ((at_onset | named_role) & prog_ok & own) | (ph == 3)
        a[:, self.r("VELOCITY")] = head[:, None] & (torch.arange(self.tok.config.velocity_bins)[None]
                                                     != s["velocity"][:, None])
        named = (head & (s["velocity"] >= 0)) | (ph == 5)
        a[:, self.r("PITCH")] = (named & ~s["drum"])[:, None] & pitch_ok
        a[:, self.r("DRUM")] = (named & s["drum"])[:, None] & drum_ok
        a[:, self.r("DURATION")] = (ph == 4)[:, None]

    def _repeatable(self, here: torch.Tensor) -> torch.Tensor:
        """(B, distances): REPEAT_d only right after a bar line, where bar d back exists, holds notes and has this
        bar's length, and where no key the copy strikes still sounds from before the bar line when it strikes
        (the rule every note keeps). With a polyphony cap, only when no note sounds across the bar line (the copy
        then sounds as its source did)."""
        s, h = self.state, self.hist
        D = len(self.dist)
        if not here.any():
            return torch.zeros(len(here), D, dtype=torch.bool)
        cur = s["bars"] - 1
        src = cur[:, None] - self.dist[None]  # (B, D)
        rows = torch.arange(len(cur))[:, None]
        ok = (src >= 0) & h["full"][rows, src % self.ring] & (h["len"][rows, src % self.ring] == s["bar_len"][:, None])
        tails = (s["ends"] - s["bar_start"][:, None]).clamp(min=0)  # (B, 256): how long each key still sounds
        if bool((tails > 0).any()):
            first = h["first"][rows, src % self.ring]  # (B, D, 256): when the copy first strikes each key
            ok &= (tails[:, None, :] <= first).all(-1)
        if self.c.max_polyphony:
            here = here & (tails == 0).all(1)
        return ok & here[:, None]
