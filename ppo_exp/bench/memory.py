"""Peak RSS and seconds of one PPO iteration on a Qwen2.5-0.5B-shaped model, on the CPU.

    python -m ppo_exp.bench.memory                 # 24 layers: the real shape (heavy)
    python -m ppo_exp.bench.memory --layers 4 --configs full-separate

The model is random-init from Qwen2.5-0.5B's dimensions (hidden 896, 14 heads, 2 KV heads,
intermediate 4864, vocab 151936, tied embeddings), saved in bf16 as Qwen ships, with a
word-level tokenizer of the same vocabulary size: the shape, not the weights. Each
configuration runs in its own process (batch 8 x 32 new tokens, one epoch, one minibatch),
which reports its peak RSS, its seconds per iteration, and the estimate of
`python -m ppo_exp.memory` for the same settings.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

CONFIGS = {
    "lora-shared-ckpt": [
        "lora=default", "model.value_model=shared", "model.gradient_checkpointing=true",
    ],
    "full-separate": ["model.value_model=separate"],
}
RUN = [
    "iterations=1", "batch_size=8", "max_new_tokens=32", "ppo_epochs=1", "num_minibatches=1",
    "eval_every=0", "eval_prompts=8", "sample_every=0", "model.name=qwen2.5-0.5b-shape",
]


def build(out: Path, layers: int) -> Path:
    """Save the random-init Qwen2.5-0.5B-shaped checkpoint (bf16) and a tokenizer in `out`."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    from ppo_exp.task.prompts import generate_reviews

    vocab_size = 151936
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


def child(path: str, name: str) -> None:
    """One iteration of configuration `name`; prints a JSON line of figures."""
    from hydra import compose, initialize_config_module

    from ppo_exp.config import to_config
    from ppo_exp.memory import estimate
    from ppo_exp.ppo.trainer import PPOTrainer

    overrides = [f"model.path={path}", *RUN, *CONFIGS[name]]
    with initialize_config_module("ppo_exp.conf", version_base=None):
        cfg = to_config(compose(config_name="config", overrides=overrides))
    trainer = PPOTrainer(cfg)
    final = trainer.train()
    prompt = max(len(trainer.tokenizer(p.text).input_ids) for p in trainer.train_prompts)
    estimated = sum(size for _, size in estimate(cfg, compute_dtype="float32",
                                                  prompt_tokens=prompt))
    print(json.dumps({
        "config": name,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "estimate_gib": estimated / 2**30,
        "seconds_per_iteration": final["perf/rollout_s"] + final["perf/update_s"],
        "rollout_s": final["perf/rollout_s"],
        "update_s": final["perf/update_s"],
        "trained_parameters": sum(p.numel() for group in trainer.groups for p in group),
    }))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--child", nargs=2, metavar=("PATH", "CONFIG"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = build(Path(tmp) / "qwen", args.layers)
        print(f"Qwen2.5-0.5B shape, {args.layers} layers, CPU, "
              f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
        for name in args.configs.split(","):
            out = subprocess.run(
                [sys.executable, "-m", "ppo_exp.bench.memory", "--child", str(path), name],
                capture_output=True, text=True,
            )
            lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
            if out.returncode or not lines:
                print(f"{name}: failed\n{out.stderr[-2000:]}")
                continue
            row = json.loads(lines[-1])
            print(f"{name:18} peak RSS {row['peak_rss_gib']:6.2f} GiB  (estimate "
                  f"{row['estimate_gib']:5.2f})  {row['seconds_per_iteration']:7.1f} s/iteration "
                  f"(rollout {row['rollout_s']:.1f}, update {row['update_s']:.1f})  "
                  f"{row['trained_parameters'] / 1e6:.1f}M trained")


if __name__ == "__main__":
    main()
