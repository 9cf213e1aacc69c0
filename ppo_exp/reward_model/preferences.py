"""Preference pairs: from any `datasets` source, or built offline from the default task.

Every source ends as a `datasets.DatasetDict` with a `train` and a `test` split whose
columns are `chosen` and `rejected` (strings), plus `prompt` where there is one, and
`gold_chosen` / `gold_rejected` (the gold scores) for the embedded pairs, whose
noise-free label is known.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import datasets
import torch

from ppo_exp.config import ConfigError
from ppo_exp.reward_model.config import FILE_BUILDERS, PreferencesConfig
from ppo_exp.reward_model.loss import annotate

log = logging.getLogger("ppo_exp")

PROMPT_POOL = 2048  # distinct training prompts the pairs are drawn from (as PPO)
SAMPLE_BATCH = 128  # prompts per `generate` call


def load_preferences(p: PreferencesConfig) -> datasets.DatasetDict:
    """The train and held-out pairs named by `p` (see the module docstring for the columns)."""
    if p.source == "embedded":
        pairs = build_embedded(p)
    else:
        pairs = _load_source(p)
    if "test" not in pairs:
        pairs = pairs["train"].train_test_split(test_size=p.test_size, seed=p.seed)
    if p.max_pairs is not None and len(pairs["train"]) > p.max_pairs:
        pairs["train"] = pairs["train"].select(range(p.max_pairs))
    return pairs


def _load_source(p: PreferencesConfig) -> datasets.DatasetDict:
    """Read a dataset with `datasets.load_dataset`, then check and rename its columns."""
    path = Path(p.path).expanduser()
    if path.suffix in FILE_BUILDERS and path.is_file():
        source = datasets.load_dataset(FILE_BUILDERS[path.suffix], data_files=str(path))
    else:
        source = datasets.load_dataset(p.path, p.name)
    splits = {"train": p.split} | ({"test": p.test_split} if p.test_split else {})
    pairs = datasets.DatasetDict()
    for role, split in splits.items():
        if split not in source:
            key = "preferences.split" if role == "train" else "preferences.test_split"
            raise ConfigError(key, split, f"a split of {p.path}: {', '.join(source)}")
        pairs[role] = _standard_columns(source[split], p)
    return pairs


def _standard_columns(data: datasets.Dataset, p: PreferencesConfig) -> datasets.Dataset:
    """Keep the chosen, rejected (and prompt) columns, under those names."""
    wanted = {"chosen": p.chosen, "rejected": p.rejected} | (
        {"prompt": p.prompt} if p.prompt else {}
    )
    for role, column in wanted.items():
        if column not in data.column_names:
            accepted = f"a column of {p.path}: {', '.join(data.column_names)}"
            raise ConfigError(f"preferences.{role}", column, accepted)
    data = data.select_columns(list(wanted.values()))
    return data.rename_columns({c: r for r, c in wanted.items() if c != r})


def as_text(value: Any, tokenizer) -> str:
    """A preference text as one string: plain text as is, chat messages formatted.

    Chat messages (a list of {"role", "content"}, as in Anthropic HH-style data) go
    through the tokenizer's chat template when it has one, else one "role: content"
    line per message.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(m, dict) and "content" in m for m in value):
        if getattr(tokenizer, "chat_template", None):
            return tokenizer.apply_chat_template(value, tokenize=False)
        return "\n".join(f"{m.get('role', 'user')}: {m['content']}" for m in value)
    raise TypeError(f"a preference text must be a string or chat messages, got {value!r:.80}")


# -- the embedded pairs ----------------------------------------------------------------------


def build_embedded(p: PreferencesConfig) -> datasets.DatasetDict:
    """Pairs of responses of the default model to training prompts, labelled by VADER.

    Two responses are sampled per prompt; the annotator (`loss.annotate`) prefers one of
    them from their VADER scores; pairs whose two scores are exactly equal are dropped
    (they carry no preference). Sampling and labels are seeded by `p.seed`.

    Returns:
        A DatasetDict with one `train` split (held-out pairs are carved out later):
        prompt, chosen, rejected, gold_chosen, gold_rejected.
    """
    # Imported here: the model, its prompts and VADER are only needed for this source.
    from ppo_exp.config import RewardConfig
    from ppo_exp.task.base_model import load_causal_lm, tiny_model_path
    from ppo_exp.task.prompts import make_prompts
    from ppo_exp.task.rewards import build_reward

    model, tokenizer = load_causal_lm(tiny_model_path())
    gold = build_reward(RewardConfig(kind="vader"))
    pool = make_prompts(PROMPT_POOL, split="train")
    generator = torch.Generator().manual_seed(p.seed)
    rows: dict[str, list] = {k: [] for k in ("prompt", "a", "b", "gold_a", "gold_b")}
    while len(rows["a"]) < p.pairs:
        need = math.ceil((p.pairs - len(rows["a"])) * 1.25)
        picks = torch.randint(len(pool), (min(need, SAMPLE_BATCH),), generator=generator)
        prompts = [pool[i] for i in picks]
        a, b = (  # two responses to each prompt, drawn one after the other
            sample_responses(
                model,
                tokenizer,
                prompts,
                temperature=p.sample_temperature,
                max_new_tokens=p.max_new_tokens,
                generator=generator,
            )
            for _ in range(2)
        )
        gold_a, gold_b = gold(a), gold(b)
        for i in (gold_a != gold_b).nonzero().flatten().tolist()[: p.pairs - len(rows["a"])]:
            for key, column in zip(rows, (prompts, a, b, gold_a, gold_b), strict=True):
                rows[key].append(column[i] if key in ("prompt", "a", "b") else float(column[i]))
    gold_a, gold_b = torch.tensor(rows["gold_a"]), torch.tensor(rows["gold_b"])
    prefers_a = annotate(
        gold_a, gold_b, temperature=p.temperature, label_noise=p.label_noise, generator=generator
    ).tolist()

    def pick(first: list, second: list) -> list:
        return [x if k else y for x, y, k in zip(first, second, prefers_a, strict=True)]

    table = {
        "prompt": rows["prompt"],
        "chosen": pick(rows["a"], rows["b"]),
        "rejected": pick(rows["b"], rows["a"]),
        "gold_chosen": pick(rows["gold_a"], rows["gold_b"]),
        "gold_rejected": pick(rows["gold_b"], rows["gold_a"]),
    }
    agree = (
        sum(c > r for c, r in zip(table["gold_chosen"], table["gold_rejected"], strict=True))
        / p.pairs
    )
    log.info("built %d preference pairs; %.1f%% of labels agree with VADER", p.pairs, 100 * agree)
    return datasets.DatasetDict(train=datasets.Dataset.from_dict(table))


@torch.inference_mode()
def sample_responses(
    model,
    tokenizer,
    prompts: list[str],
    *,
    temperature: float,
    max_new_tokens: int,
    generator: torch.Generator,
) -> list[str]:
    """Sample one response per prompt (pure sampling, as the PPO rollouts), decoded.

    Args:
        model, tokenizer: a causal LM and its left-padding tokenizer (`load_causal_lm`).
        prompts: the prompts.
        temperature: sampling temperature.
        max_new_tokens: response length cap.
        generator: seeds the sampling (torch's global stream is forked, not consumed).

    Returns:
        The responses without the prompt, cut at the stop token.
    """
    out = []
    seed = int(torch.randint(2**62, (1,), generator=generator))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for start in range(0, len(prompts), SAMPLE_BATCH):
            enc = tokenizer(
                prompts[start : start + SAMPLE_BATCH], return_tensors="pt", padding=True
            )
            ids = model.generate(
                **enc,
                do_sample=True,
                temperature=temperature,
                top_k=0,
                top_p=1.0,
                max_new_tokens=max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )  # (B, L)
            out += tokenizer.batch_decode(
                ids[:, enc.input_ids.shape[1] :], skip_special_tokens=True
            )
    return out
