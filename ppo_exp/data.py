"""Prompt datasets: the `data` config group.

`data=reviews` (the default) is the embedded task's review openings. `data=hf` reads any
`datasets` source: a hub name, local jsonl/json/csv/parquet/arrow files, a directory of
them (splits from the file names) or a `save_to_disk` directory. Prompts come from a
plain-text column or a chat-messages column; instruct models get their chat template with
the generation prompt. Prompts longer than `data.max_prompt_tokens` are dropped and
counted. The held-out split is fixed (it does not move with the run's seed, so evals of
different seeds compare); the train split is shuffled with the run's seed.
"""

from __future__ import annotations

import glob
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from ppo_exp.config import ConfigError, DataConfig
from ppo_exp.task.prompts import make_prompts

log = logging.getLogger("ppo_exp")

TRAIN_PROMPTS = 2048  # distinct training prompts drawn from the review grammar
SPLIT_SEED = 1234  # the held-out fraction is drawn with this, not with the run's seed
BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet",
            ".arrow": "arrow"}

Chat = tuple[dict, ...]  # ({"role": "user", "content": "..."}, ...)


class Prompt(NamedTuple):
    """One prompt: the text the policy is given, and the conversation it came from."""

    text: str  # as the policy sees it: chat template and generation prompt applied if used
    chat: Chat  # the conversation without the generation prompt (for reward templates)


@dataclass
class Prompts:
    train: list[Prompt]
    eval: list[Prompt]
    templated: bool  # the chat template was applied (it already holds special tokens)
    dropped: int  # prompts dropped for being longer than data.max_prompt_tokens
    longest: int  # tokens in the longest prompt kept

    def metrics(self) -> dict[str, float]:
        """`data/*`: how many distinct prompts each split has, what the filter dropped."""
        return {
            "data/prompts_train": len({p.text for p in self.train}),
            "data/prompts_eval": len({p.text for p in self.eval}),
            "data/prompts_dropped": self.dropped,
            "data/prompt_tokens_max": self.longest,
        }


def load_prompts(cfg: DataConfig, tokenizer, *, seed: int, eval_prompts: int) -> Prompts:
    """Read, template, filter and split the prompts that `cfg` names.

    Args:
        cfg: the data section of the run config.
        tokenizer: the policy's tokenizer (chat template, token counts).
        seed: the run's seed: shuffles the train split.
        eval_prompts: held-out prompts per eval (the eval split is cycled if smaller).

    Raises:
        ConfigError: a split, column or chat template that the data or tokenizer lacks,
            or no prompt left after the length filter.
    """
    templated = _use_chat_template(cfg, tokenizer)
    if cfg.kind == "reviews":
        train = [_user(text) for text in make_prompts(TRAIN_PROMPTS, split="train")]
        held_out = [_user(text) for text in make_prompts(eval_prompts, split="eval")]
    else:
        train_rows, eval_rows = _hf_splits(cfg, seed)
        train, held_out = _chats(train_rows, cfg), _chats(eval_rows, cfg)
    limit = cfg.max_prompt_tokens
    kept: list[list[Prompt]] = []
    dropped = longest = 0
    for split, chats in (("train", train), ("eval", held_out)):
        prompts = [Prompt(_render(chat, tokenizer, templated), chat) for chat in chats]
        lengths = [len(ids) for ids in tokenizer(
            [p.text for p in prompts], add_special_tokens=not templated
        )["input_ids"]]
        fits = [limit is None or n <= limit for n in lengths]
        kept.append([p for p, ok in zip(prompts, fits, strict=True) if ok])
        dropped += fits.count(False)
        longest = max([longest, *(n for n, ok in zip(lengths, fits, strict=True) if ok)])
        if not kept[-1]:
            raise ConfigError("data.max_prompt_tokens", limit,
                              f"a limit that keeps some {split} prompts (none fits)")
    if dropped:
        log.info("dropped %d prompts longer than data.max_prompt_tokens=%s", dropped, limit)
    train_kept, eval_kept = kept
    eval_kept = [eval_kept[i % len(eval_kept)] for i in range(eval_prompts)]
    return Prompts(train_kept, eval_kept, templated, dropped, longest)


def _user(text: str) -> Chat:
    return ({"role": "user", "content": text},)


def _use_chat_template(cfg: DataConfig, tokenizer) -> bool:
    mode = str(cfg.chat_template).lower()
    has = bool(getattr(tokenizer, "chat_template", None))
    if mode == "true" and not has:
        raise ConfigError("data.chat_template", cfg.chat_template,
                          "auto or false: the policy's tokenizer has no chat template")
    if cfg.messages_column and not (has and mode != "false"):
        raise ConfigError("data.messages_column", cfg.messages_column,
                          "null (use data.prompt_column) unless the tokenizer's chat "
                          "template is used: chat messages need it")
    return has and mode != "false"


def _render(chat: Chat, tokenizer, templated: bool) -> str:
    if not templated:
        return chat[-1]["content"]
    return tokenizer.apply_chat_template(list(chat), tokenize=False, add_generation_prompt=True)


def _chats(rows, cfg: DataConfig) -> list[Chat]:
    """Conversations from a dataset split: a messages column, or plain-text prompts."""
    if cfg.messages_column:
        chats = []
        for messages in rows[cfg.messages_column]:
            if not isinstance(messages, list) or not all(
                isinstance(m, dict) and {"role", "content"} <= m.keys() for m in messages
            ):
                raise ConfigError("data.messages_column", cfg.messages_column,
                                  "a column of chat messages: lists of {role, content}")
            chat = [{"role": m["role"], "content": m["content"]} for m in messages]
            while chat and chat[-1]["role"] == "assistant":  # the answer is ours to write
                chat.pop()
            if chat:
                chats.append(tuple(chat))
        return chats
    return [_user(str(text)) for text in rows[cfg.prompt_column]]


def _hf_splits(cfg: DataConfig, seed: int):
    """(train rows, eval rows) of the dataset; the train rows shuffled with `seed`."""
    data = _load(cfg)
    splits = list(data)
    if cfg.train_split not in data:
        raise ConfigError("data.train_split", cfg.train_split, "one of " + ", ".join(splits))
    train = data[cfg.train_split]
    column = cfg.messages_column or cfg.prompt_column
    if column not in train.column_names:
        key = "data.messages_column" if cfg.messages_column else "data.prompt_column"
        raise ConfigError(key, column, "a column of the data: " + ", ".join(train.column_names))
    if cfg.eval_split is None:
        parts = train.train_test_split(test_size=cfg.eval_fraction, seed=SPLIT_SEED)
        train, held_out = parts["train"], parts["test"]
    elif cfg.eval_split in data:
        held_out = data[cfg.eval_split]
    else:
        raise ConfigError("data.eval_split", cfg.eval_split,
                          "null (hold out data.eval_fraction) or one of " + ", ".join(splits))
    return train.shuffle(seed=seed), held_out


def _load(cfg: DataConfig):
    """A DatasetDict from a hub name, data files, a directory of them, or `save_to_disk`."""
    from datasets import DatasetDict, load_dataset, load_from_disk

    path = Path(cfg.path).expanduser()
    suffix = "".join(Path(cfg.path).suffixes[-1:])
    if path.is_dir() and any((path / f).exists() for f in ("dataset_dict.json", "state.json")):
        data = load_from_disk(str(path))
        return data if isinstance(data, DatasetDict) else DatasetDict(train=data)
    if suffix in BUILDERS:
        if not glob.glob(str(path)):
            raise ConfigError("data.path", cfg.path, "existing data files (none match)")
        return load_dataset(BUILDERS[suffix], data_files=str(path))
    if path.is_dir():
        return load_dataset(str(path))
    return load_dataset(cfg.path, cfg.subset)
