"""The checkpoints every benchmark runs on, built locally (never from the hub).

A *shape* names a GPT-2 size. "tiny" is the default pretrained review model itself;
the others are random-init GPT-2s with the same tokenizer and a longer position table
(random policies rarely sample the stop token, so their responses fill every slot and
the cost of a length is measured exactly). "gpt2" also has GPT-2's vocabulary size (50,257:
the review tokenizer padded with placeholder tokens), so its embedding and output layer
cost what GPT-2 small's do (~124M parameters). Each policy comes with a reward model: the
same trunk with a one-logit sequence-classification head, so ppo_exp, TRL and the eager
floor all run the same four networks (policy, reference, critic, reward).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

# name: (n_layer, n_embd, n_head); "tiny" is the default model's own shape (~0.9M params).
SHAPES: dict[str, tuple[int, int, int]] = {
    "tiny": (4, 128, 4),
    "tiny-random": (4, 128, 4),  # the same shape, random init, 256 positions
    "small": (6, 256, 8),  # ~5M parameters
    "medium": (8, 512, 8),  # ~26M parameters
    "gpt2": (12, 768, 12),  # GPT-2 small (~124M parameters with VOCAB_SIZES): for GPUs
}
# shapes with a vocabulary of their own size (the others keep the review tokenizer's 1,024)
VOCAB_SIZES: dict[str, int] = {"gpt2": 50_257}
POSITIONS = 256  # position table of the random-init shapes: prompt + up to 128 new tokens


def bench_models(shape: str, root: Path) -> tuple[Path, Path]:
    """The policy and reward-model directories of `shape`, built under `root` if missing.

    Args:
        shape: a key of `SHAPES`.
        root: the benchmark's model cache (any writable directory).

    Returns:
        (policy dir, reward dir), both loadable with `from_pretrained`, offline.
    """
    if shape not in SHAPES:
        raise ValueError(f"invalid shape={shape!r}; accepted: {', '.join(SHAPES)}")
    from ppo_exp.task.base_model import tiny_model_path

    base = tiny_model_path()
    policy, reward = root / f"{shape}-policy", root / f"{shape}-reward"
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the new classifier head's load report is expected
    hf_logging.disable_progress_bar()
    if not policy.is_dir():
        _atomic_build(policy, lambda out: _build_policy(shape, base, out))
    if not reward.is_dir():
        _atomic_build(reward, lambda out: _build_reward(policy, out))
    return policy, reward


def _atomic_build(target: Path, build) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _build_policy(shape: str, base: Path, out: Path) -> None:
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tokenizer = AutoTokenizer.from_pretrained(base)
    vocab_size = VOCAB_SIZES.get(shape, len(tokenizer))
    tokenizer.add_tokens([f"<pad-token-{i}>" for i in range(len(tokenizer), vocab_size)])
    if shape == "tiny":
        model = GPT2LMHeadModel.from_pretrained(base)
    else:
        n_layer, n_embd, n_head = SHAPES[shape]
        reference = GPT2Config.from_pretrained(base)
        config = GPT2Config(
            vocab_size=len(tokenizer),
            n_positions=POSITIONS,
            n_layer=n_layer,
            n_embd=n_embd,
            n_head=n_head,
            activation_function=reference.activation_function,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            bos_token_id=reference.bos_token_id,
            eos_token_id=reference.eos_token_id,
            pad_token_id=reference.pad_token_id,
        )
        torch.manual_seed(0)
        model = GPT2LMHeadModel(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _build_reward(policy: Path, out: Path) -> None:
    import torch
    from transformers import AutoTokenizer, GPT2ForSequenceClassification

    torch.manual_seed(1)
    tokenizer = AutoTokenizer.from_pretrained(policy)
    model = GPT2ForSequenceClassification.from_pretrained(policy, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def parameter_count(policy: Path) -> int:
    """Parameters of the policy at `policy` (embeddings included, tied head counted once)."""
    from transformers import GPT2Config

    c = GPT2Config.from_pretrained(policy)
    per_layer = 12 * c.n_embd**2 + 13 * c.n_embd
    return c.n_layer * per_layer + (c.vocab_size + c.n_positions) * c.n_embd + 2 * c.n_embd
