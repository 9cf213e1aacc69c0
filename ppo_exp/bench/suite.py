"""Side-by-side runs: ppo_exp, the eager floor and TRL on the same shapes, alternating.

Each run is a fresh process (its peak RSS is its own) pinned to `threads` torch threads;
rounds alternate the systems so that a change in machine load hits them alike. Figures
are medians over iterations 2..N of every run (the first iteration pays for warm-up).
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ppo_exp.bench.clock import PHASES
from ppo_exp.bench.models import bench_models, parameter_count

SYSTEMS = ("ppo_exp", "floor", "trl")
TRL_MLFLOW = "trl_mlflow"  # TRL logging to a scratch MLflow store, as ppo_exp always does
UNTRACKED = "ppo_exp_untracked"  # ppo_exp without MLflow, as TRL's default run
TRL_PYTHON_ENV = "PPO_EXP_TRL_PYTHON"  # TRL's interpreter; default ./.trl-venv/bin/python


@dataclass
class Spec:
    """The shapes of one benchmark point, the same for every system."""

    shape: str = "tiny"  # a key of models.SHAPES
    batch_size: int = 64
    max_new_tokens: int = 24
    ppo_epochs: int = 4
    num_minibatches: int = 4
    iterations: int = 4  # per run; the first is left out of the medians
    threads: int = 1  # torch threads per run (OMP/MKL too)
    device: str = "cpu"  # "cpu" or "cuda": where every system runs (float32 everywhere)
    seed: int = 0
    value_model: str = "separate"
    # "classifier": reads the policy's token ids (reward.input=tokens: the same work as TRL);
    # "classifier-text": decoded and re-tokenised texts (reward.input=text); "vader"
    reward_kind: str = "classifier"
    eval_prompts: int = 128  # ppo_exp's held-out eval at step 0 (part of its peak RSS)
    fused: bool = False  # the floor's AdamW(fused=True)
    mlflow: bool = True  # ppo_exp logs to a scratch MLflow store, as a real run does
    # the MLflow store tracked runs log to (a tracking server, a database); None: a scratch
    # SQLite file per run
    tracking_uri: str | None = None
    clock: str = "wall"  # "wall"; "cpu": process CPU time, for a loaded machine; "cuda"
    config: dict[str, Any] = field(default_factory=dict)  # extra PPOConfig keys for ppo_exp


def trl_python(explicit: str | None = None) -> Path | None:
    """TRL's interpreter, if that virtual environment exists (else None)."""
    path = Path(explicit or os.environ.get(TRL_PYTHON_ENV) or ".trl-venv/bin/python")
    # absolute, for runs in scratch directories; not resolved: a venv's python is a link
    return path.absolute() if path.exists() else None


def run_once(
    system: str, spec: Spec, root: Path, *, trl: Path | None = None,
    sources: dict[str, str] | None = None, variants: dict[str, dict] | None = None,
) -> dict:
    """One fresh-process run of `system` on `spec`; returns the worker's JSON.

    `sources` maps extra system names to other ppo_exp source trees (a directory holding
    the `ppo_exp` package, e.g. `git archive` of an older commit), run like ppo_exp;
    `variants` maps extra system names to PPOConfig keys that ppo_exp runs with (e.g.
    {"compiled": {"compile": True}}). `UNTRACKED` is ppo_exp with no MLflow run.
    """
    sources, variants = sources or {}, variants or {}
    policy, reward = bench_models(spec.shape, root / "models")
    from ppo_exp.task.prompts import make_prompts

    if system in variants:
        spec = dataclasses.replace(spec, config={**spec.config, **variants[system]})
    if system == UNTRACKED:
        spec = dataclasses.replace(spec, mlflow=False)
    payload = {
        **dataclasses.asdict(spec),
        "policy": str(policy),
        "reward": str(reward),
        "prompts": make_prompts(spec.batch_size * spec.iterations, split="train"),
        **({"report_to": "mlflow"} if system == TRL_MLFLOW else {}),
    }
    with tempfile.TemporaryDirectory(dir=root) as scratch:
        spec_file, out_file = Path(scratch) / "spec.json", Path(scratch) / "out.json"
        spec_file.write_text(json.dumps(payload))
        threads = str(spec.threads)
        env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
               "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        if system in sources:
            env["PYTHONPATH"] = os.pathsep.join([sources[system], env.get("PYTHONPATH", "")])
        if system in ("trl", TRL_MLFLOW):
            driver = Path(__file__).with_name("trl_driver.py")
            command = [str(trl), str(driver), str(spec_file), str(out_file)]
            if system == TRL_MLFLOW:  # TRL's MLflowCallback reads these
                scratch_store = f"sqlite:///{Path(scratch).absolute()}/mlflow.db"
                env.update(MLFLOW_TRACKING_URI=spec.tracking_uri or scratch_store,
                           MLFLOW_EXPERIMENT_NAME="trl-bench")
        else:
            ours = system in sources or system in variants or system == UNTRACKED
            worker = "ppo_exp" if ours else system
            command = [sys.executable, "-m", "ppo_exp.bench.worker", worker,
                       str(spec_file), str(out_file)]
        done = subprocess.run(command, env=env, cwd=scratch, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{system} run failed:\n{done.stderr[-3000:]}")
        result = json.loads(out_file.read_text())
    result["system"] = system
    result["params"] = parameter_count(policy)
    return result


def side_by_side(
    spec: Spec, systems: tuple[str, ...], *, rounds: int, root: Path, trl: Path | None = None,
    sources: dict[str, str] | None = None, variants: dict[str, dict] | None = None,
) -> dict[str, dict]:
    """Alternate `rounds` runs of each system; return each system's summary."""
    runs: dict[str, list[dict]] = {s: [] for s in systems}
    for _ in range(rounds):
        for system in systems:
            runs[system].append(
                run_once(system, spec, root, trl=trl, sources=sources, variants=variants)
            )
    return {system: summarise(results) for system, results in runs.items()}


def summarise(results: list[dict]) -> dict[str, Any]:
    """Medians over iterations 2..N of all runs of one system, and its peak memory."""
    iterations = [it for r in results for it in r["iterations"][1:]] or [
        it for r in results for it in r["iterations"]
    ]

    def median(values: list[float]) -> float:
        return statistics.median(values) if values else float("nan")

    phases = {p: median([it["phases"].get(p, 0.0) for it in iterations]) for p in PHASES}
    wall = median([it["wall_s"] for it in iterations])
    first = results[0]
    return {
        "system": first["system"],
        "wall_s": wall,
        # the first iteration: warm-up, and a compiled forward's compilation
        "first_iteration_s": median([r["iterations"][0]["wall_s"] for r in results
                                     if r["iterations"]]),
        "wall_without_gc_s": median([it["wall_s"] - it["phases"].get("gc", 0.0)
                                     for it in iterations]),
        "phases": phases,
        "tokens_per_s": median([it["response_tokens"] / it["wall_s"] for it in iterations]),
        "response_tokens": median([it["response_tokens"] for it in iterations]),
        "peak_rss_mb": median([r["peak_rss_mb"] for r in results]),
        "rss_after_imports_mb": median([r["rss_after_imports_mb"] for r in results]),
        "imports_s": median([r["imports_s"] for r in results]),
        "init_s": median([r["init_s"] for r in results]),
        "harness_s": median([r["harness_s"] for r in results]),
        "params": first["params"],
        "runs": len(results),
        "iterations_measured": len(iterations),
        **({"trl_version": first["version"], "trl_optimizer": first["optimizer"]}
           if first["system"] in ("trl", TRL_MLFLOW) else {}),
    }


def load() -> str:
    """The machine's load averages (`uptime`), printed with every figure."""
    try:
        one, five, fifteen = Path("/proc/loadavg").read_text().split()[:3]
    except (OSError, ValueError):
        return "load average unknown"
    return f"load average {one}, {five}, {fifteen} on {os.cpu_count()} cores"


def phase_table(summaries: dict[str, dict]) -> str:
    """Markdown: seconds per phase for each system, and ppo_exp's ratio to the others."""
    systems = list(summaries)
    others = [s for s in systems if s != "ppo_exp"] if "ppo_exp" in summaries else []
    head = ["phase", *(f"{s} s" for s in systems), *(f"ppo_exp / {s}" for s in others)]
    rows = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]

    def ratio(a: float, b: float) -> str:
        return f"{a / b:.2f}" if b > 1e-4 and a == a else "–"

    lines = [(p, {s: summaries[s]["phases"][p] for s in systems}) for p in PHASES]
    lines.append(("**iteration**", {s: summaries[s]["wall_s"] for s in systems}))
    if "trl" in summaries:
        lines.append(("iteration without gc", {s: summaries[s]["wall_without_gc_s"]
                                               for s in systems}))
    for name, values in lines:
        if all(v < 5e-4 for v in values.values()) and not name.startswith(("**", "it")):
            continue
        cells = [name, *(f"{values[s]:.3f}" for s in systems)]
        cells += [ratio(values["ppo_exp"], values[o]) for o in others]
        rows.append("| " + " | ".join(cells) + " |")
    extra = [("first iteration: warm-up, compilation (s)", "first_iteration_s", "{:.2f}"),
             ("response tokens / s", "tokens_per_s", "{:.0f}"),
             ("peak RSS (MB)", "peak_rss_mb", "{:.0f}"),
             ("RSS after imports (MB)", "rss_after_imports_mb", "{:.0f}"),
             ("imports + model load (s)", None, "{:.2f}"),
             ("harness: MLflow run + logging setup (s)", "harness_s", "{:.2f}")]
    for name, key, fmt in extra:
        values = {s: (summaries[s][key] if key else summaries[s]["imports_s"]
                      + summaries[s]["init_s"]) for s in systems}
        cells = [name, *(fmt.format(values[s]) for s in systems)]
        cells += [ratio(values["ppo_exp"], values[o]) for o in others]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)
