"""Peak memory and speed of PPO iterations on a Qwen2.5-0.5B-shaped model, CPU or GPU.

    python -m ppo_exp.bench.memory                 # 24 layers: the real shape (heavy)
    python -m ppo_exp.bench.memory --layers 4 --configs full-separate
    python -m ppo_exp.bench.memory --device cuda --batch-size 64 --max-new-tokens 128 \
        --ppo-epochs 4 --num-minibatches 4 --iterations 3    # a real-size run on one GPU

The model is random-init from Qwen2.5-0.5B's dimensions (hidden 896, 14 heads, 2 KV heads,
intermediate 4864, vocab 151936, tied embeddings), saved in bf16 as Qwen ships, with a
word-level tokenizer of the same vocabulary size: the shape, not the weights. Each
configuration runs in its own process (by default batch 8 x 32 new tokens, one epoch, one
minibatch, one iteration), which reports its peak RSS (and peak GPU memory on CUDA), its
seconds per iteration and response tokens per second (medians over the iterations after
the first when there are several), and the estimate of `python -m ppo_exp.memory` for
the same settings. A random-init policy rarely samples its stop token, so every response
fills `max_new_tokens`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from ppo_exp.bench.clock import peak_rss_mb
from ppo_exp.bench.options import add_run_size

CONFIGS = {
    "lora-shared-ckpt": [
        "lora=default", "model.value_model=shared", "model.gradient_checkpointing=true",
    ],
    "full-separate": ["model.value_model=separate"],
}
FIXED = ["eval_every=0", "eval_prompts=8", "sample_every=0", "model.name=qwen2.5-0.5b-shape"]


def build(out: Path, layers: int, vocab_size: int = 151936) -> Path:
    """Save the random-init Qwen2.5-0.5B-shaped checkpoint (bf16) and a tokenizer in `out`."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    from ppo_exp.task.prompts import generate_reviews

    words = sorted({w for review in generate_reviews(2000, seed=0) for w in review.split()})
    vocab = {"<unk>": 0, "<|endoftext|>": 1, **{w: i + 2 for i, w in enumerate(words)}}
    vocab.update({f"w{i}": i for i in range(len(vocab), vocab_size)})
    raw = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=raw, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
        unk_token="<unk>",
    )
    config = Qwen2Config(
        hidden_size=896, intermediate_size=4864, num_hidden_layers=layers,
        num_attention_heads=14, num_key_value_heads=2, vocab_size=vocab_size,
        max_position_embeddings=32768, rope_theta=1e6, rms_norm_eps=1e-6,
        tie_word_embeddings=True, bos_token_id=1, eos_token_id=1, pad_token_id=1,
    )
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).to(torch.bfloat16).save_pretrained(out)
    tok.save_pretrained(out)
    return out


class Recorder:
    """Tracker keeping each iteration's `perf/*` metrics."""

    def __init__(self) -> None:
        self.perf: list[dict[str, float]] = []

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if "perf/rollout_s" in metrics:
            self.perf.append({k: v for k, v in metrics.items() if k.startswith("perf/")})

    def log_samples(self, samples, step: int) -> None:
        pass


def child(path: str, name: str, overrides: list[str]) -> None:
    """Run configuration `name` with `overrides`; prints a JSON line of figures."""
    import statistics

    import torch
    from hydra import compose, initialize_config_module

    from ppo_exp.config import to_config
    from ppo_exp.memory import estimate
    from ppo_exp.ppo.trainer import PPOTrainer

    overrides = [f"model.path={path}", *FIXED, *overrides, *CONFIGS[name]]
    with initialize_config_module("ppo_exp.conf", version_base=None):
        cfg = to_config(compose(config_name="config", overrides=overrides))
    trainer = PPOTrainer(cfg)
    recorder = Recorder()
    trainer.train([recorder])
    timed = recorder.perf[1:] or recorder.perf  # the first iteration pays for warm-up

    def median(key: str) -> float:
        return statistics.median(row[key] for row in timed)

    prompt = max(len(trainer.tokenizer(p.text).input_ids) for p in trainer.train_prompts)
    compute = str(trainer.dtype).removeprefix("torch.")
    estimated = sum(size for _, size in estimate(cfg, compute_dtype=compute,
                                                  prompt_tokens=prompt))
    cuda = trainer.device.type == "cuda"
    print(json.dumps({
        "config": name,
        "device": torch.cuda.get_device_name(trainer.device) if cuda else "cpu",
        "dtype": compute,
        "peak_rss_gib": peak_rss_mb() / 1024,
        "peak_gpu_gib": torch.cuda.max_memory_allocated(trainer.device) / 2**30 if cuda else None,
        "estimate_gib": estimated / 2**30,
        "seconds_per_iteration": median("perf/rollout_s") + median("perf/update_s"),
        "rollout_s": median("perf/rollout_s"),
        "update_s": median("perf/update_s"),
        "tokens_per_s": median("perf/tokens_per_s"),
        "trained_parameters": sum(p.numel() for group in trainer.replay.groups for p in group),
    }))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--vocab", type=int, default=151936, help="smaller for a smoke run")
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--device", default="cpu", help="model.device: cpu, cuda, auto")
    add_run_size(parser, iterations=1, batch_size=8, max_new_tokens=32)
    parser.add_argument("--ppo-epochs", type=int, default=1)
    parser.add_argument("--num-minibatches", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--child", nargs=2, metavar=("PATH", "CONFIG"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    overrides = [
        f"model.device={args.device}", f"iterations={args.iterations}",
        f"batch_size={args.batch_size}", f"max_new_tokens={args.max_new_tokens}",
        f"ppo_epochs={args.ppo_epochs}", f"num_minibatches={args.num_minibatches}",
    ]
    if args.child:
        child(*args.child, overrides)
        return
    for name in args.configs.split(","):
        if name not in CONFIGS:
            parser.error(f"invalid --configs entry {name!r}; accepted: {', '.join(CONFIGS)}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = build(Path(tmp) / "qwen", args.layers, args.vocab)
        print(f"Qwen2.5-0.5B shape, {args.layers} layers, device {args.device}, batch "
              f"{args.batch_size} x {args.max_new_tokens} new tokens, {args.ppo_epochs} epochs x "
              f"{args.num_minibatches} minibatches, {args.iterations} iterations, "
              f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
        for name in args.configs.split(","):
            out = subprocess.run(
                [sys.executable, "-m", "ppo_exp.bench.memory", *argv_of(args),
                 "--child", str(path), name],
                capture_output=True, text=True,
            )
            lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
            if out.returncode or not lines:
                print(f"{name}: failed\n{out.stderr[-2000:]}")
                continue
            row = json.loads(lines[-1])
            rows.append(row)
            gpu = row["peak_gpu_gib"]
            gpu = "" if gpu is None else f"peak GPU {gpu:6.2f} GiB  "
            print(f"{name:18} {row['dtype']:8} peak RSS {row['peak_rss_gib']:6.2f} GiB  {gpu}"
                  f"(estimate {row['estimate_gib']:5.2f})  "
                  f"{row['seconds_per_iteration']:7.2f} s/iteration (rollout "
                  f"{row['rollout_s']:.2f}, update {row['update_s']:.2f})  "
                  f"{row['tokens_per_s']:8.0f} tokens/s  "
                  f"{row['trained_parameters'] / 1e6:.1f}M trained")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


def argv_of(args: argparse.Namespace) -> list[str]:
    """The run options of `args` as command-line arguments for a child process."""
    return [
        f"--device={args.device}", f"--batch-size={args.batch_size}",
        f"--max-new-tokens={args.max_new_tokens}", f"--ppo-epochs={args.ppo_epochs}",
        f"--num-minibatches={args.num_minibatches}", f"--iterations={args.iterations}",
    ]


if __name__ == "__main__":
    main()
