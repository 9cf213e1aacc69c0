"""The default policy: a tiny GPT-2 pretrained on the review grammar, built once and cached.

The first call to `tiny_model_path()` generates the corpus, trains a byte-level BPE tokenizer on
it, pretrains the model with next-token prediction (about a minute on two CPU cores) and saves
both with `save_pretrained`. Later calls, from any process, return the cached directory, which
`load_causal_lm` loads like any Hugging Face checkpoint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from tqdm.auto import tqdm
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from ppo_exp.task.prompts import generate_reviews

logger = logging.getLogger("ppo_exp")

CACHE_DIR = Path(os.environ.get("PPO_EXP_CACHE", "~/.cache/ppo_exp")).expanduser()
EOS, PAD = "<|eos|>", "<|pad|>"


@dataclass(frozen=True)
class Recipe:
    """Everything that determines the built model; its hash names the cache directory."""

    version: str = "tiny-reviews-v1"  # bump when the code changes what gets built
    vocab_size: int = 1024
    n_layer: int = 4
    n_embd: int = 128
    n_head: int = 4
    n_positions: int = 64
    corpus_size: int = 60_000
    corpus_seed: int = 0
    steps: int = 900
    batch_size: int = 64
    lr: float = 3e-3
    warmup_steps: int = 50
    seed: int = 0


RECIPE = Recipe()


def _recipe_hash(recipe: Recipe) -> str:
    settings = dataclasses.asdict(recipe)
    # A sample of the corpus, so that editing the grammar in data.py also invalidates the cache.
    settings["corpus_sample"] = generate_reviews(64, seed=recipe.corpus_seed)
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]


def _train_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE, as in GPT-2: any input is encodable and decoding gives back plain text."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    # pad != eos: PPO masks padding out of the loss but must keep the eos that ends a response.
    # Left padding lines up the last prompt token of a batch for generation.
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=EOS,
        pad_token=PAD,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )


def _length_bucketed_batches(
    tokens: torch.Tensor, pad_id: int, batch_size: int, generator: torch.Generator
) -> Iterator[torch.Tensor]:
    """Yield shuffled batches of right-padded rows of similar length, forever.

    Reviews run from 5 to 45 tokens; batching similar lengths together and trimming the padding
    columns roughly halves the compute per step, which matters on a CPU budget.
    """
    lengths = (tokens != pad_id).sum(1)
    while True:
        shuffled = torch.randperm(len(tokens), generator=generator)
        by_length = shuffled[torch.argsort(lengths[shuffled], stable=True)]
        batches = by_length.split(batch_size)
        for i in torch.randperm(len(batches), generator=generator).tolist():
            rows = tokens[batches[i]]
            yield rows[:, : int(lengths[batches[i]].max())]


def _pretrain(model: GPT2LMHeadModel, tokens: torch.Tensor, pad_id: int, recipe: Recipe) -> None:
    """Next-token prediction on right-padded rows of `tokens`, with AdamW and a cosine schedule."""
    generator = torch.Generator().manual_seed(recipe.seed)
    batches = _length_bucketed_batches(tokens, pad_id, recipe.batch_size, generator)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=0.01)

    def lr_factor(step: int) -> float:
        if step < recipe.warmup_steps:
            return (step + 1) / recipe.warmup_steps
        progress = (step - recipe.warmup_steps) / max(1, recipe.steps - recipe.warmup_steps)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    model.train()
    progress = tqdm(range(recipe.steps), desc="pretraining tiny-reviews", leave=False)
    for step in progress:
        batch = next(batches)
        mask = batch != pad_id
        labels = batch.masked_fill(~mask, -100)  # no loss on padding (the model shifts labels)
        loss = model(input_ids=batch, attention_mask=mask.long(), labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        if step % 20 == 0:
            progress.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()


def _build_and_save(out_dir: Path, recipe: Recipe) -> None:
    """Generate the corpus, train tokenizer and model, and save both into `out_dir`."""
    torch.manual_seed(recipe.seed)
    reviews = generate_reviews(recipe.corpus_size, seed=recipe.corpus_seed)
    texts = [review + EOS for review in reviews]
    tokenizer = _train_tokenizer(texts, recipe.vocab_size)
    # Right-padded rows, so that every review starts at position 0 as a prompt does.
    tokens = torch.nn.utils.rnn.pad_sequence(
        [torch.tensor(ids[: recipe.n_positions]) for ids in tokenizer(texts)["input_ids"]],
        batch_first=True,
        padding_value=tokenizer.pad_token_id,
    )

    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=recipe.n_positions,
        n_embd=recipe.n_embd,
        n_layer=recipe.n_layer,
        n_head=recipe.n_head,
        resid_pdrop=0.0,  # no dropout: PPO's log-prob ratios need a deterministic forward pass
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = GPT2LMHeadModel(config)
    _pretrain(model, tokens, tokenizer.pad_token_id, recipe)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def tiny_model_path(cache_dir: Path | None = None) -> Path:
    """The directory of the pretrained tiny review model and its tokenizer, built if missing.

    Args:
        cache_dir: where models are cached; defaults to `CACHE_DIR` ($PPO_EXP_CACHE).

    Returns:
        A directory loadable with `load_causal_lm` (or `from_pretrained`).
    """
    cache_dir = Path(cache_dir or CACHE_DIR)
    target = cache_dir / f"tiny-reviews-{_recipe_hash(RECIPE)}"
    if target.is_dir():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Build next to the target and rename it into place: the rename is atomic, so a directory
    # under the final name is always complete, even if this process is killed mid-build.
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=cache_dir))
    try:
        logger.info("building the tiny review model (about a minute, done once) into %s", target)
        # On a fork of the global generator: a run that builds the model then samples
        # exactly as one that finds it cached (the build seeds and draws from it).
        with torch.random.fork_rng(devices=[]):
            _build_and_save(tmp, RECIPE)
        try:
            os.rename(tmp, target)
        except OSError:
            # Another process (a parallel study worker) finished first: keep its copy.
            if not target.is_dir():
                raise
            logger.info("tiny review model was built concurrently; using %s", target)
        else:
            logger.info("saved the tiny review model to %s", target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """A checkpoint's tokenizer, left-padding (prompts end where generation starts), with a pad.

    Args:
        path: anything `from_pretrained` accepts, e.g. `tiny_model_path()` or "gpt2".
    """
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        # Many checkpoints (GPT-2 included) ship without one; padding is masked out anyway.
        logger.warning("tokenizer of %s has no pad token; using eos %r", path, tokenizer.eos_token)
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(
    path: str | Path, *, dtype: torch.dtype = torch.float32
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer from a local directory or a hub id, ready to generate.

    Args:
        path: anything `from_pretrained` accepts, e.g. `tiny_model_path()` or "gpt2".
        dtype: the weights' dtype, whatever the checkpoint was saved in.

    Returns:
        The model in eval mode (dropout off) and a left-padding tokenizer with a pad token.
    """
    tokenizer = load_tokenizer(path)
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, **fused_kernels(path))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    return model, tokenizer


def fused_kernels(path: str | Path) -> dict[str, str]:
    """`from_pretrained` overrides that run the checkpoint's maths in fewer kernels.

    GPT-2's `gelu_new` (the tanh approximation written as five Python-level ops, each
    with its own backward) becomes `gelu_pytorch_tanh`, the same formula as one kernel:
    outputs agree to ~2e-7 and the activation runs about twice as fast. The cached
    checkpoint (and the base model's recipe) is unchanged.

    Args:
        path: the checkpoint (local directory or hub id).

    Returns:
        Keyword arguments for `from_pretrained`: empty when nothing applies.
    """
    config = AutoConfig.from_pretrained(str(path))
    if getattr(config, "activation_function", None) == "gelu_new":
        return {"activation_function": "gelu_pytorch_tanh"}
    return {}
