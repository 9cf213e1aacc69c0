"""The benchmark suite: figures, printed as a table and written as JSON (never timed tests).

    python -m ppo_exp.bench phases            # ppo_exp's seconds per phase of an iteration
    python -m ppo_exp.bench floor             # ... side by side with the eager floor
    python -m ppo_exp.bench trl               # ... and with TRL 1.12 (its own venv, README)
    python -m ppo_exp.bench scaling           # scaling tables (batch, length, model, threads)
    python -m ppo_exp.bench techniques        # each trainer speed-up undone in turn
    python -m ppo_exp.bench run               # the default run through the real command

Options (phases, floor, trl, scaling): --rounds N (alternated runs per system),
--iterations N, --threads N, --batch-size N, --max-new-tokens N, --shape NAME,
--reward classifier|classifier-text|vader (the classifier reads the policy's token ids, or
re-tokenised text), --value-model separate|shared, --fused-floor, --json PATH,
--device cpu|cuda (every system on that device, float32; phases timed with the cuda clock),
--trl-python PATH, --trl-mlflow (also TRL logging to MLflow, as ppo_exp does: system
trl_mlflow), --untracked (also ppo_exp without MLflow, as TRL's default run: system
ppo_exp_untracked, what tracking costs), --tracking-uri URI (the MLflow store tracked
runs log to, e.g. a tracking server; default: a scratch SQLite file per run), --quick
(tiny shapes, for the smoke test),
--compare NAME=SRC (also run the ppo_exp source tree SRC, e.g. an older commit's
`git archive`, as system NAME), --variant NAME:KEY=VALUE[,KEY=VALUE] (also run ppo_exp
with these config keys as system NAME, e.g. --variant compiled:compile=true).
scaling only: --points AXIS=VALUE,... (a subset), --markdown PATH (the table, written
between its markers in PATH, e.g. README.md, or as a new file).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import yaml

from ppo_exp.bench.models import SHAPES
from ppo_exp.bench.options import add_run_size
from ppo_exp.bench.scaling import (
    check_markdown,
    scaling,
    scaling_table,
    select,
    write_markdown,
)
from ppo_exp.bench.suite import (
    TRL_MLFLOW,
    TRL_PYTHON_ENV,
    UNTRACKED,
    Spec,
    load,
    phase_table,
    side_by_side,
    trl_python,
)

MODES = ("phases", "floor", "trl", "scaling", "techniques")
TRL_SETUP = (
    "TRL is not installed: the trl mode needs TRL 1.12 in its own virtual environment, e.g.\n"
    "  python -m venv --system-site-packages .trl-venv\n"
    "  .trl-venv/bin/pip install --dry-run trl==1.12.0   # check that it keeps your torch\n"
    "  .trl-venv/bin/pip install trl==1.12.0\n"
    f"then pass --trl-python .trl-venv/bin/python (or set {TRL_PYTHON_ENV}). Skipping TRL."
)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m ppo_exp.bench",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=MODES)
    parser.add_argument("--rounds", type=int, default=2)
    add_run_size(parser, iterations=4, batch_size=64, max_new_tokens=24)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--shape", choices=SHAPES, default="tiny")
    parser.add_argument("--reward", choices=("classifier", "classifier-text", "vader"),
                        default="classifier",
                        help="classifier: reads the policy's token ids, as TRL's does; "
                             "classifier-text: decoded and re-tokenised (reward.input=text)")
    parser.add_argument("--value-model", choices=("separate", "shared"), default="separate")
    parser.add_argument("--fused-floor", action="store_true", help="AdamW(fused=True) in the floor")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="where every system runs (cuda: the cuda clock, float32)")
    parser.add_argument("--clock", choices=("wall", "cpu", "cuda"), default="wall",
                        help="cpu: each run's CPU time (comparable on a loaded machine)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--trl-python", help=f"TRL's interpreter (default ${TRL_PYTHON_ENV})")
    parser.add_argument("--trl-mlflow", action="store_true",
                        help="trl: also run TRL logging to MLflow, as ppo_exp does (trl_mlflow)")
    parser.add_argument("--untracked", action="store_true",
                        help="also run ppo_exp without MLflow, as TRL's default run "
                             "(ppo_exp_untracked)")
    parser.add_argument("--tracking-uri", metavar="URI",
                        help="the MLflow store tracked runs log to, e.g. a tracking server "
                             "(default: a scratch SQLite file per run)")
    parser.add_argument("--workdir", type=Path, help="keep bench models here (default: scratch)")
    parser.add_argument("--quick", action="store_true", help="tiny shapes: a smoke run")
    parser.add_argument("--points", help="scaling: only these points, e.g. batch=64,threads=2")
    parser.add_argument("--markdown", type=Path,
                        help="scaling: write the table here, between its markers (README.md)")
    parser.add_argument("--compare", action="append", default=[], metavar="NAME=SRC",
                        help="also run ppo_exp from source tree SRC as system NAME")
    parser.add_argument("--variant", action="append", default=[], type=variant,
                        metavar="NAME:KEY=VALUE[,KEY=VALUE]",
                        help="also run ppo_exp with these config keys as system NAME")
    return parser.parse_args(argv)


def variant(text: str) -> tuple[str, dict]:
    """`compiled:compile=true,threads=2` -> ("compiled", {"compile": True, "threads": 2})."""
    name, _, settings = text.partition(":")
    pairs = [item.split("=", 1) for item in settings.split(",") if item]
    if not name or not pairs or any(len(pair) != 2 for pair in pairs):
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected NAME:KEY=VALUE[,KEY=VALUE], e.g. compiled:compile=true"
        )
    return name, {key: yaml.safe_load(value) for key, value in pairs}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] == "run" or argv[0] not in MODES and not argv[0].startswith("-h"):
        from ppo_exp.bench import runs

        runs.main(argv[1:] if argv and argv[0] == "run" else argv)
        return
    args = parse(argv)
    if args.markdown:
        check_markdown(args.markdown)  # before any model is built
    if args.mode == "techniques":
        techniques_mode(args)
        return
    spec = Spec(shape=args.shape, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                iterations=args.iterations, threads=args.threads, reward_kind=args.reward,
                value_model=args.value_model, fused=args.fused_floor,
                clock="cuda" if args.device == "cuda" else args.clock, device=args.device,
                tracking_uri=args.tracking_uri)
    if args.quick:
        spec = Spec(shape=args.shape, batch_size=8, max_new_tokens=6, ppo_epochs=1,
                    num_minibatches=2, iterations=2, eval_prompts=8, mlflow=False,
                    threads=args.threads, reward_kind=args.reward, fused=args.fused_floor,
                    clock=spec.clock, device=args.device)
    systems = {"phases": ("ppo_exp",), "floor": ("ppo_exp", "floor"),
               "trl": ("ppo_exp", "floor", "trl"), "scaling": ()}[args.mode]
    sources = dict(item.split("=", 1) for item in args.compare)
    variants = dict(args.variant)
    if args.mode != "scaling":
        untracked = (UNTRACKED,) if args.untracked else ()
        systems = (*systems[:1], *untracked, *sources, *variants, *systems[1:])
    if args.mode == "trl" and args.trl_mlflow:
        systems = (*systems, TRL_MLFLOW)
    trl = trl_python(args.trl_python)
    if args.mode == "trl" and trl is None:
        print(TRL_SETUP)
        systems = tuple(s for s in systems if s not in ("trl", TRL_MLFLOW))
    with tempfile.TemporaryDirectory() as scratch:
        root = args.workdir or Path(scratch)
        root.mkdir(parents=True, exist_ok=True)
        before = load()
        if args.mode == "scaling":
            def partial(rows: list[dict]) -> None:
                if args.json:
                    args.json.write_text(json.dumps({"mode": "scaling", "partial": True,
                                                     "rows": rows}, default=str))

            points = select(args.points) if args.points else None
            rows = scaling(spec, root=root, rounds=args.rounds, quick=args.quick,
                           points=points, on_row=partial)
            print(scaling_table(rows))
            figures: dict = {"mode": "scaling", "rows": rows}
            if args.markdown:
                how = (f"`python -m ppo_exp.bench {' '.join(argv)}`: {spec.clock} clock, "
                       f"{args.rounds} alternated round(s), medians over iterations "
                       f"2..{spec.iterations}; machine {before} before, {load()} after.")
                write_markdown(args.markdown, scaling_table(rows), how)
        else:
            summaries = side_by_side(spec, systems, rounds=args.rounds, root=root, trl=trl,
                                     sources=sources, variants=variants)
            print(phase_table(summaries))
            figures = {"mode": args.mode, "summaries": summaries}
            if "trl" in summaries:
                ours, theirs = summaries["ppo_exp"]["wall_s"], summaries["trl"]
                print(f"per update: ppo_exp / TRL = {ours / theirs['wall_s']:.2f}; "
                      f"without TRL's gc.collect {ours / theirs['wall_without_gc_s']:.2f} "
                      f"(TRL's optimiser: {theirs['trl_optimizer']})")
        after = load()
    print(f"machine: {before} before, {after} after; {spec.clock} clock, "
          f"{spec.threads} thread(s) per run, "
          f"{args.rounds} alternated round(s), medians over iterations 2..{spec.iterations}")
    if args.json:
        figures.update(spec=vars(spec), load_before=before, load_after=after)
        args.json.write_text(json.dumps(figures, indent=1, default=str))
        print(f"figures written to {args.json}")


def techniques_mode(args: argparse.Namespace) -> None:
    """Each speed-up undone in turn, in this process, at `--threads` threads."""
    from ppo_exp.bench import techniques

    before = load()
    results = techniques.measure(rounds=args.rounds, threads=args.threads, clock=args.clock)
    print(techniques.table(results))
    print(f"machine: {before} before, {load()} after; {args.clock} clock, "
          f"{args.threads} thread(s), "
          f"{args.rounds} alternated round(s), medians")
    if args.json:
        args.json.write_text(json.dumps({"mode": "techniques", "results": results}, indent=1))


if __name__ == "__main__":
    main()
