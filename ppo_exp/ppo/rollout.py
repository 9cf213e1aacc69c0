"""Steps 1-2 of a PPO iteration: sample responses to prompts and score them.

`Sampler` turns a list of prompts into a `Rollout`: every tensor the replay epochs read,
computed once under `torch.inference_mode`; `minibatch_of` cuts rows out of it for the
update (ppo/replay.py).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from transformers import LogitsProcessorList, PreTrainedTokenizerBase

from ppo_exp.config import PPOConfig, RewardConfig
from ppo_exp.data import Prompt
from ppo_exp.ppo import losses
from ppo_exp.ppo.hardware import autocast
from ppo_exp.ppo.models import ActorCritic, Reference, position_ids_for
from ppo_exp.task.rewards import Scorer, TokenScorer, full_texts


class Rollout(NamedTuple):
    """One batch of sampled responses. B = batch, L = prompt + response, T = response.

    Everything PPO reads during the replay epochs is computed once, under
    `torch.inference_mode`, then cloned outside it into normal tensors (a clone made
    inside would still be an inference tensor).
    """

    input_ids: torch.Tensor  # (B, L) left-padded prompt + right-padded response
    attention_mask: torch.Tensor  # (B, L)
    position_ids: torch.Tensor  # (B, L)
    response: torch.Tensor  # (B, T) token ids, padding after the stop token
    mask: torch.Tensor  # (B, T) 1.0 up to and including the stop token
    logprobs: torch.Tensor  # (B, T) policy log-probs at sampling time, at temperature
    ref_logprobs: torch.Tensor  # (B, T) frozen reference model, same temperature
    values: torch.Tensor  # (B, T) critic's values at sampling time
    entropy: torch.Tensor  # (B, T) policy entropy at sampling time
    scores: torch.Tensor  # (B,) reward-model scores, after the missing-stop penalty
    raw_scores: torch.Tensor  # (B,) the reward model's own scores, before that penalty
    has_eos: torch.Tensor  # (B,) bool, response ended with the stop token
    texts: list[str]  # decoded responses


@dataclass
class Sampler:
    """Samples responses from the policy and scores them: `sampler(prompts)` is a Rollout."""

    cfg: PPOConfig
    model: ActorCritic  # its policy samples; it also gives log-probs, values and entropy
    ref: Reference  # the frozen reference, for the KL penalty
    tokenizer: PreTrainedTokenizerBase
    stop_ids: torch.Tensor  # (S,) any of these ends a response
    sampling: LogitsProcessorList  # makes generate's pick a sample (loading.SoftmaxSampling)
    scorer: Scorer | TokenScorer  # the reward: texts, or token ids (reward.input=tokens)
    reward_chat: PreTrainedTokenizerBase | None  # its template formats reward.text=full
    templated: bool  # prompts already hold their chat template's special tokens
    device: torch.device
    dtype: torch.dtype

    def __call__(self, prompts: list[Prompt]) -> Rollout:
        """Sample and score responses to `prompts`; tensors autograd may read."""
        sampled = self.sample(prompts)
        return Rollout(*(x.clone() if torch.is_tensor(x) else x for x in sampled))

    @torch.inference_mode()
    def sample(self, prompts: list[Prompt]) -> Rollout:
        cfg, tok = self.cfg, self.tokenizer
        prompt_texts = [p.text for p in prompts]  # a chat template holds its special tokens
        enc = tok(
            prompt_texts, return_tensors="pt", padding=True,
            add_special_tokens=not self.templated,
        ).to(self.device)
        prompt_len = enc.input_ids.shape[1]
        # Plain sampling at `temperature`, stopping at any stop token: the policy's
        # generation_config is ours alone (loading.sampling_config), never the checkpoint's.
        with autocast(self.device, self.dtype):
            input_ids = self.model.policy.generate(**enc, logits_processor=self.sampling)  # (B, L)
        response = input_ids[:, prompt_len:]  # (B, T)
        mask, has_eos = truncate_after_stop(response, self.stop_ids)
        response = torch.where(mask.bool(), response, tok.pad_token_id)
        input_ids = torch.cat([input_ids[:, :prompt_len], response], dim=1)
        attention_mask = torch.cat([enc.attention_mask, mask.long()], dim=1)
        position_ids = position_ids_for(attention_mask)
        logprobs, ref_logprobs, values, entropy = self.forwards(
            input_ids, attention_mask, position_ids, response
        )

        texts = tok.batch_decode(response, skip_special_tokens=True)
        scored = reward_inputs(
            prompts, texts, input_ids, attention_mask, response.shape[1],
            reward=cfg.reward, chat=self.reward_chat,
        )
        raw_scores = self.scorer(*scored).to(self.device, torch.float32)
        scores = raw_scores
        if cfg.missing_eos_penalty is not None:
            scores = raw_scores - cfg.missing_eos_penalty * (~has_eos).float()

        return Rollout(
            input_ids, attention_mask, position_ids, response, mask, logprobs, ref_logprobs,
            values * mask, entropy, scores, raw_scores, has_eos, texts,
        )

    def forwards(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        response: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Log-probs, reference log-probs, values and entropy of the responses, (B, T) each.

        Recomputed with the same full forward pass the update uses (rather than taken from
        generate's KV-cached scores), so the first minibatch's ratio is 1 and not a
        numerical artefact (exactly with padded rows; packed ones, the default, change the
        order of float sums: approx-KL ~1e-9 on some CPUs). Logits are divided by the
        sampling temperature, as in the N-implementation-details paper.
        `rollout_micro_batch` rows at a time (unset: a training batch, `batch_size`, so
        the held-out eval's `eval_prompts` rows never hold more memory than training
        does), so only that many (T, V) logits tensors are alive at once.
        """
        cfg, T = self.cfg, response.shape[1]
        chunks = []
        for rows in torch.arange(len(response)).split(cfg.rollout_micro_batch or cfg.batch_size):
            inputs = (input_ids[rows], attention_mask[rows], position_ids[rows], T)
            with autocast(self.device, self.dtype):
                logits, values = self.model(*inputs)
            logprobs, entropy = losses.logprobs_and_entropy(
                logits, response[rows], temperature=cfg.temperature, entropy_grad=False
            )
            del logits  # (b, T, V): freed before the reference's
            with autocast(self.device, self.dtype):
                ref_logits = self.ref.logits(*inputs)
            ref_logprobs = losses.logprobs_from_logits(
                ref_logits / cfg.temperature, response[rows]
            )
            chunks.append((logprobs, ref_logprobs, values, entropy))
        logprobs, ref_logprobs, values, entropy = (
            torch.cat(parts) for parts in zip(*chunks, strict=True)
        )
        return logprobs, ref_logprobs, values, entropy


def rollout_statistics(
    rollout: Rollout,
    rewards: torch.Tensor,
    returns: torch.Tensor,
    kl_per_response: float,
    kl_coef: float,
) -> dict[str, float]:
    """What a rollout measured: `rollout/*` (scores before and after the missing-stop
    penalty, KL, entropy, lengths, stop rate, summed per-token rewards) and how well the
    critic's values explain the GAE returns (`value/explained_var`)."""
    return {
        "rollout/reward_mean": float(rollout.raw_scores.mean()),
        "rollout/reward_std": float(rollout.raw_scores.std()),
        "rollout/penalized_reward_mean": float(rollout.scores.mean()),
        "rollout/kl": kl_per_response,
        "rollout/kl_coef": kl_coef,
        "rollout/entropy": float(losses.masked_mean(rollout.entropy, rollout.mask)),
        "rollout/response_length": float(rollout.mask.sum(1).mean()),
        "rollout/eos_rate": float(rollout.has_eos.float().mean()),
        "rollout/rlhf_reward": float(rewards.sum(1).mean()),
        "value/explained_var": losses.explained_variance(rollout.values, returns, rollout.mask),
    }


def samples_table(prompts: list[Prompt], rollout: Rollout, rows: int) -> pd.DataFrame:
    """The first `rows` prompts (as the model saw them), responses and scores."""
    n = min(rows, len(prompts))
    return pd.DataFrame(
        {
            "prompt": [p.text for p in prompts[:n]],
            "response": rollout.texts[:n],
            "score": rollout.scores[:n].tolist(),
        }
    )


class Minibatch(NamedTuple):
    """Rows `i` of a rollout, cut to `length` response tokens. T = length, L = prompt + T.

    The per-token targets are (b, T) rows with their `mask`, or, for the packed update,
    (n,) vectors of the rows' real tokens alone, row after row, and `mask` None.
    """

    input_ids: torch.Tensor  # (b, L)
    attention_mask: torch.Tensor  # (b, L)
    position_ids: torch.Tensor  # (b, L)
    response: torch.Tensor  # (b, T) or (n,)
    mask: torch.Tensor | None  # (b, T); None: every target is a real token
    logprobs: torch.Tensor  # (b, T) or (n,), at sampling time
    values: torch.Tensor  # (b, T) or (n,), at sampling time
    advantages: torch.Tensor  # (b, T) or (n,)
    returns: torch.Tensor  # (b, T) or (n,)
    response_length: int  # T


@dataclass(frozen=True)
class ResponseTokens:
    """Every rollout row's real response tokens, row after row, and what the PPO loss
    compares them with: the packed update's targets, gathered once per update.

    A minibatch then takes its rows' tokens with one index per tensor (`rows`), instead
    of cutting its (b, T) rows and then finding their real tokens, per minibatch.
    """

    response: torch.Tensor  # (N,) token ids
    targets: torch.Tensor  # (4, N): log-probs and values at sampling time, advantages, returns
    starts: list[int]  # row r's tokens are [starts[r], starts[r] + lengths[r])
    lengths: list[int]

    @classmethod
    def of(
        cls, rollout: Rollout, advantages: torch.Tensor, returns: torch.Tensor
    ) -> ResponseTokens:
        real = rollout.mask.bool()
        lengths = real.sum(1).tolist()
        starts = list(itertools.accumulate(lengths, initial=0))[:-1]
        targets = torch.stack([rollout.logprobs, rollout.values, advantages, returns])
        return cls(rollout.response[real], targets[:, real], starts, lengths)

    def rows(self, i: list[int]) -> tuple[torch.Tensor, ...]:
        """Response tokens, log-probs, values, advantages and returns of rows `i`: (n,)
        each, in the order of `i`, each row's tokens in order."""
        ranges = [np.arange(self.starts[row], self.starts[row] + self.lengths[row]) for row in i]
        index = torch.from_numpy(np.concatenate(ranges)).to(self.response.device)
        return self.response[index], *self.targets[:, index]


def minibatch_of(
    rollout: Rollout,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    i: torch.Tensor,
    length: int,
    tokens: ResponseTokens | None = None,
) -> Minibatch:
    """The rows `i` of the rollout, without the response slots after `length`; with
    `tokens`, their targets are their real tokens alone (the packed update's).

    Causal attention means no real position reads a later one, so dropping padding
    columns that every row of the minibatch has leaves every real position's output as
    it was (up to floating-point order); only the amount of work changes.
    """
    cut = rollout.response.shape[1] - length  # padding columns common to all rows
    sequence = slice(None, rollout.input_ids.shape[1] - cut)
    inputs = (rollout.input_ids, rollout.attention_mask, rollout.position_ids)
    if tokens is not None:
        response, *targets = tokens.rows(i.tolist())
        return Minibatch(*(t[i, sequence] for t in inputs), response, None, *targets, length)
    return Minibatch(
        *(t[i, sequence] for t in inputs),
        *(t[i, :length] for t in (rollout.response, rollout.mask, rollout.logprobs,
                                  rollout.values, advantages, returns)),
        length,
    )


def reward_inputs(
    prompts: list[Prompt],
    texts: list[str],
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_columns: int,
    *,
    reward: RewardConfig,
    chat,
) -> tuple:
    """A scorer's arguments: the texts it reads (`scored_texts`), or with
    `reward.input=tokens` the policy's (B, L) ids and attention mask: prompt + response
    (`reward.text=full`), or the last `response_columns` columns, the response alone."""
    if reward.input == "tokens":
        columns = slice(None) if reward.text == "full" else slice(-response_columns, None)
        return input_ids[:, columns], attention_mask[:, columns]
    return (scored_texts(prompts, texts, text=reward.text, chat=chat),)


def scored_texts(prompts: list[Prompt], responses: list[str], *, text: str, chat) -> list[str]:
    """What a scorer reads: the responses alone (text="response") or prompt + response,
    through the reward tokenizer's chat template `chat` where it has one (`full_texts`)."""
    if text == "response":
        return responses
    return full_texts([p.text for p in prompts], [p.chat for p in prompts], responses, chat)


def truncate_after_stop(
    response: torch.Tensor, stop_token_ids: torch.Tensor | int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask (B, T) of 1.0 up to and including each row's first stop token; and (B,) has-stop.

    `stop_token_ids`: one id, or a 1-D tensor of ids any of which ends a response.
    """
    is_stop = torch.isin(response, torch.as_tensor(stop_token_ids, device=response.device))
    has_stop = is_stop.any(1)
    # Stops seen strictly before each position: 0 means the token is still in the response.
    stops_before = is_stop.long().cumsum(1) - is_stop.long()
    return (stops_before == 0).float(), has_stop
