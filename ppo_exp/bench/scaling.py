"""Scaling tables: ppo_exp against the eager floor as one dimension grows at a time.

Axes (each from the base point `Spec()`: tiny model, 64 rollouts, <= 24 tokens, 1 thread):
rollout batch 16 -> 256; response length 16 -> 128 (random-init tiny model, so every
response fills its slots); model size 0.9M -> ~26M parameters (16 rollouts); 1 vs 2
threads. Each point alternates a ppo_exp run and a floor run of a few iterations; the
held-out eval is cut to 16 prompts and MLflow is off, so the figures are training's.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from ppo_exp.bench.clock import PHASES
from ppo_exp.bench.suite import Spec, side_by_side

# (axis, value, spec overrides)
POINTS: list[tuple[str, str, dict]] = [
    *[("batch", str(b), {"batch_size": b}) for b in (16, 64, 256)],
    *[("response length", str(t), {"shape": "tiny-random", "max_new_tokens": t})
      for t in (16, 32, 64, 128)],
    *[("model", s, {"shape": s, "batch_size": 16}) for s in ("tiny-random", "small", "medium")],
    *[("threads", str(n), {"threads": n}) for n in (1, 2)],
]


def scaling(
    base: Spec, *, root: Path, rounds: int = 1, quick: bool = False,
    points: list[tuple[str, str, dict]] | None = None, on_row=None,
) -> list[dict]:
    """Run every point of `POINTS` from `base`; return one row per point.

    Args:
        base: the shapes every axis starts from.
        root: scratch directory (bench models are cached under it).
        rounds: alternated ppo_exp/floor runs per point.
        quick: the first value of each axis only, at tiny shapes (a smoke run).
        points: the points to run instead of `POINTS`.
        on_row: called with the rows so far after each point (partial results survive).
    """
    if points is None:
        points = POINTS
        if quick:
            points = [p for i, p in enumerate(POINTS) if i == 0 or POINTS[i - 1][0] != p[0]]
    rows = []
    done: dict[str, dict] = {}  # the same shapes on two axes (threads=1 is batch=64) run once
    for axis, value, overrides in points:
        spec = dataclasses.replace(base, eval_prompts=16, mlflow=False, **overrides)
        if quick:
            spec = dataclasses.replace(spec, batch_size=max(4, spec.batch_size // 16),
                                       max_new_tokens=min(spec.max_new_tokens, 8))
        key = repr(spec)
        if key not in done:
            done[key] = side_by_side(spec, ("ppo_exp", "floor"), rounds=rounds, root=root)
        result = done[key]
        ours, floor = result["ppo_exp"], result["floor"]
        worst, worst_ratio = worst_phase(ours, floor)
        rows.append({
            "axis": axis, "value": value, "params": ours["params"],
            "batch_size": spec.batch_size, "max_new_tokens": spec.max_new_tokens,
            "threads": spec.threads, "response_tokens": ours["response_tokens"],
            "ppo_exp_s": ours["wall_s"], "floor_s": floor["wall_s"],
            "ratio": ours["wall_s"] / floor["wall_s"],
            "worst_phase": worst, "worst_phase_ratio": worst_ratio,
            "ppo_exp_rss_mb": ours["peak_rss_mb"], "floor_rss_mb": floor["peak_rss_mb"],
            "tokens_per_s": ours["tokens_per_s"],
            "ppo_exp": ours, "floor": floor,
        })
        if on_row is not None:
            on_row(rows)
    return rows


def worst_phase(ours: dict, floor: dict) -> tuple[str, float]:
    """The phase where ppo_exp is slowest against the floor, among every phase the floor
    times (`clock.PHASES` less those it has no counterpart for: clipping, logging...)."""
    ratios = {p: ours["phases"][p] / floor["phases"][p]
              for p in PHASES if p != "other" and floor["phases"].get(p, 0.0) > 1e-4}
    if not ratios:
        return "–", float("nan")
    worst = max(ratios, key=ratios.get)
    return worst, ratios[worst]


def select(names: str) -> list[tuple[str, str, dict]]:
    """The points named "axis=value,axis=value" (in that order), e.g. "batch=64,threads=2"."""
    by_name = {f"{axis}={value}": (axis, value, o) for axis, value, o in POINTS}
    chosen = [name.strip() for name in names.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in by_name]
    if unknown:
        raise SystemExit(f"invalid --points {','.join(unknown)}; accepted: {', '.join(by_name)}")
    return [by_name[name] for name in chosen]


def scaling_table(rows: list[dict]) -> str:
    """Markdown for the README: one line per point. ms/token (ppo_exp's seconds per
    iteration over its real response tokens) stays flat while cost grows linearly."""
    head = ("| axis | value | params | batch | max tokens | threads | real tokens | "
            "ppo_exp s/it | floor s/it | ratio | worst phase (ratio) | peak RSS MB "
            "(ppo_exp / floor) | tokens/s | ms/token |")
    out = [head, "|" + " --- |" * head.count(" | ") + " --- |"]
    for r in rows:
        out.append(
            f"| {r['axis']} | {r['value']} | {r['params'] / 1e6:.1f}M | {r['batch_size']} | "
            f"{r['max_new_tokens']} | {r['threads']} | {r['response_tokens']:.0f} | "
            f"{r['ppo_exp_s']:.2f} | {r['floor_s']:.2f} | {r['ratio']:.2f} | "
            f"{r['worst_phase']} ({r['worst_phase_ratio']:.2f}) | "
            f"{r['ppo_exp_rss_mb']:.0f} / {r['floor_rss_mb']:.0f} | {r['tokens_per_s']:.0f} | "
            f"{1000 * r['ppo_exp_s'] / max(r['response_tokens'], 1):.2f} |"
        )
    return "\n".join(out)


BEGIN = "<!-- scaling table: generated by `python -m ppo_exp.bench scaling --markdown PATH` -->"
END = "<!-- end of the generated scaling table -->"


def write_markdown(path: Path, table: str, how: str) -> None:
    """Write `table` and the line saying how it was measured to `path`, between the
    BEGIN/END markers: a file that holds them (the README) keeps everything around them;
    a new file holds only the block."""
    check_markdown(path)
    block = f"{BEGIN}\n{how}\n\n{table}\n{END}"
    if not path.exists():
        path.write_text(block + "\n")
        return
    text = path.read_text()
    start, end = text.find(BEGIN), text.find(END)
    path.write_text(text[:start] + block + text[end + len(END):])


def check_markdown(path: Path) -> None:
    """Refuse, before anything runs, a --markdown file that has no markers to write between."""
    if path.exists():
        text = path.read_text()
        if BEGIN not in text or END not in text or text.find(END) < text.find(BEGIN):
            print(f"error: invalid --markdown {path}: an existing file needs the lines "
                  f"{BEGIN} and {END} to write between; add them, or name a new file",
                  file=sys.stderr)
            raise SystemExit(2)
    elif not path.parent.is_dir():
        print(f"error: invalid --markdown {path}: no folder {path.parent}", file=sys.stderr)
        raise SystemExit(2)
