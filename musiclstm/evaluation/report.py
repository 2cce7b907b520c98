"""The terminal table of `musiclstm evaluate`: NLL beside the n-gram, the repeat probe, the music
statistics (real, model, shuffled; mean±sd and Cohen's d), overlap, memorisation and validity;
two models side by side.

May import: nothing in musiclstm (plain dicts in, text out). Not: the rest of evaluation, nor any room below.
"""

from __future__ import annotations

GROUPS = {"tonality": ("in_scale", "key_correlation", "window_key_correlation", "window_key_changes",
                       "pitch_class_entropy"),
          "melody (top line)": ("steps", "skips", "leaps", "repeated", "longest_repeat"),
          "arrangement (track roles)": ("melody_over_accompaniment", "melody_steps"),
          "rhythm": ("empty_beat_rate", "groove_consistency", "density_first_third", "density_last_third",
                     "longest_silence"),
          "form": ("repeated_bars", "repeated_bars_exact", "longest_repeat_run", "looping", "phrases_return",
                   "repeated_phrase_bars", "distinct_interval_4grams"),
          "voices (per 100 beats; shares)": ("parallel_fifths", "parallel_octaves", "voice_crossings", "out_of_range",
                                             "overfull_onsets"),
          "meter, length, ending": ("time_signature", "length_vs_asked", "last_bass_on_tonic")}


def _ms(s: dict) -> str:
    if s["mean"] is None:
        return f"{'-':>11s}"
    return f"{s['mean']:5.2f}±{s['sd']:<5.2f}" if abs(s["mean"]) < 10 else f"{s['mean']:5.1f}±{s['sd']:<5.1f}"


def _d(d) -> str:
    return f"{d:6.1f}" if d is not None else f"{'-':>6s}"


def _nll_lines(rs: list[dict], names: list[str]) -> list[str]:
    r = rs[0]
    lines = [f"held out: {r['held_out_files']} files, {r['tokens']:,} tokens, each from a zero state after BOS "
             f"(n-gram fitted on {r['training_files']} files)"]
    for x, name in zip(rs, names, strict=True):
        c = x.get("data_check", {})
        state = {True: "matches the checkpoint's", False: "DIFFERS from the checkpoint's",
                 None: "not recorded in the checkpoint"}[c.get("match")]
        lines.append(f"data fingerprint {c.get('data_fingerprint')} {state}{' (' + name + ')' if name else ''}")
    lines.append(f"{'':22s}{'nats/token':>11s}{'bits/token':>11s}{'perplexity':>11s}")
    for x, name in zip(rs, names, strict=True):
        lines.append(f"{('LSTM ' + name).strip():22s}{x['nll_nats_per_token']:11.3f}{x['bits_per_token']:11.3f}"
                     f"{x['perplexity']:11.2f}")
    for x, name in zip(rs, names, strict=True):
        if x.get("nll_nats_per_note") is not None:
            lines.append(f"{('per note ' + name).strip():22s}{x['nll_nats_per_note']:11.3f} nats/note "
                         f"({x['notes']:,} notes)")
    lines.append(f"{'Kneser-Ney ' + str(r['ngram_order']) + '-gram':22s}{r['ngram_nll_nats_per_token']:11.3f}"
                 f"{r['ngram_bits_per_token']:11.3f}{r['ngram_perplexity']:11.2f}")
    lines.append("by token type (tokens, n-gram, LSTM nats/token" + (", per model):" if len(rs) > 1 else "):"))
    for k, v in r["by_type"].items():
        lstms = "".join(f"{x['by_type'].get(k, {}).get('nll_nats_per_token', float('nan')):8.3f}" for x in rs)
        lines.append(f"  {k:18s}{v['tokens']:9d}{v['ngram_nll_nats_per_token']:8.3f}{lstms}")
    return lines


def _probe_lines(rs: list[dict], names: list[str]) -> list[str]:
    lines = []
    for x, name in zip(rs, names, strict=True):
        p = x.get("repeat_probe")
        if not p:
            continue
        parts = [f"{k} {v['repeated']:.2f} vs {v['other']:.2f}" for k, v in
                 [*((k, p["by_type"][k]) for k in ("PITCH", "POSITION", "DURATION") if k in p["by_type"]),
                  ("all", p["all"])] if v["repeated"] is not None and v["other"] is not None]
        lines.append(f"repeat probe{' ' + name if name else ''}: {p['repeated_bars']} of {p['bars']} held-out bars "
                     "repeat an earlier bar; nats/token in those vs the others:")
        lines.append("  " + ", ".join(parts) if parts else "  (no repeated bars)")
        n = p.get("per_note") or {}
        if n.get("ratio") is not None:
            lines.append(f"  whole bars, nats per note: repeated {n['repeated']:.2f} vs new {n['other']:.2f} "
                         f"(ratio {n['ratio']:.2f})")
    return lines


def _music_lines(rs: list[dict], names: list[str]) -> list[str]:
    ms = [x["music"] for x in rs if "music" in x]
    if not ms:
        return []
    m = ms[0]
    lines = [f"music: {m['pieces']} held-out pieces, {m['samples']} samples, pitch-shuffled pieces; first "
             f"{m['quarters']:g} quarters after leading empty bars; mean±sd, d = Cohen's d against real"]
    head = f"  {'':26s}{'real':>11s}" + "".join(f"{('model ' + n).strip():>12s}{'d':>6s}" for n in names)
    if any(x.get("harmonizer") for x in rs):
        lines.append("  samples of " + ", ".join(n or "the model" for x, n in zip(rs, names, strict=False)
                                                 if x.get("harmonizer")) +
                     ": soprano by the model, alto, tenor and bass by the harmonizer (compose --harmonizer)")
    lines.append(head + f"{'shuffled':>12s}{'d':>6s}")
    for group, keys in GROUPS.items():
        keys = [k for k in keys if k in m["statistics"] and any(x["statistics"][k]["real"]["n"] or
                                                                x["statistics"][k]["model"]["n"] for x in ms)]
        if not keys:
            continue
        lines.append(f"  {group}")
        for k in keys:
            st = [x["statistics"][k] for x in ms]
            row = f"    {k:24s}{_ms(st[0]['real'])}"
            row += "".join(f" {_ms(s['model'])}{_d(s['d_model'])}" for s in st)
            lines.append(row + f" {_ms(st[0]['shuffled'])}{_d(st[0]['d_shuffled'])}")
    for x, name in zip(ms, names, strict=False):
        h = x.get("repeat_distances")
        if h and h["repeats"]["real"] + h["repeats"]["model"]:
            real, model = (" ".join(f"{d}:{v:.2f}" for d, v in h["share"][k].items()) for k in ("real", "model"))
            lines.append(f"  repeat distances{' ' + name if name else ''} (bars: share of repeated bars), real "
                         f"[{real}] model [{model}]; overlap " + (f"{h['overlap']:.2f}" if h["overlap"] is not None
                                                                      and h["overlap"] == h["overlap"] else "-"))
    return lines


def report(r: dict, compare: dict | None = None, names: tuple[str, str] = ("", "")) -> str:
    """A readable summary of `evaluate`'s result (two results side by side with `compare`)."""
    rs, ns = ([r, compare], list(names)) if compare is not None else ([r], [""])
    lines = _nll_lines(rs, ns) + _probe_lines(rs, ns) + _music_lines(rs, ns)
    for x, name in zip(rs, ns, strict=True):
        if "samples" not in x:
            continue
        s, m, v = x["samples"], x["memorisation"], x["validity"]
        tag = f" ({name})" if name else ""
        lines.append(f"overlapping area of {s['count']} samples with the data{tag} (1 = same): mean "
                     f"{s['mean_overlapping_area']:.3f}; " + ", ".join(f"{k} {v:.2f}" for k, v in
                                                                       s["overlapping_area"].items()))
        lines.append(f"memorisation{tag}: longest run copied from a training piece {m['longest_copied_notes']} notes "
                     f"(mean {m['mean_longest_copied_notes']:.1f}; samples have {m['notes_per_sample']:.0f} notes)")
        lines.append(f"validity{tag}: {v['invalid_tokens']} tokens against the grammar of {v['tokens']:,}, "
                     f"{v['zero_length_notes']} zero-length notes, {v['notes_over_16_beats']} notes over 16 beats")
    return "\n".join(lines)
