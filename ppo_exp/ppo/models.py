"""The policy with its critic, and the frozen reference model."""

from __future__ import annotations

import copy
import functools

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_layers import GradientCheckpointingLayer

from ppo_exp.ppo import packing


class ActorCritic(nn.Module):
    """A causal-LM policy and a scalar value model over the same token positions.

    critic=None ("shared"): the value head sits on the policy's last hidden state, which
    halves the compute of every update. Otherwise the critic is its own trunk ("separate":
    a copy of the policy's starting checkpoint, as the N-implementation-details paper
    recommends, so the value loss never pulls on the policy's features; or another
    checkpoint, e.g. the reward model's). Either may carry LoRA adapters.
    The value head is float32 and starts at zero, as in lm-human-preferences.
    """

    def __init__(self, policy: nn.Module, critic: nn.Module | None, *, hidden_size: int):
        super().__init__()
        self.policy = policy
        self.critic = critic
        self.value_head = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)
        # `packed` fills sequences of about half the policy's hidden size H (or its longest
        # row): attention within one then costs about 1/12 of a layer's matrix multiplies
        # (2 * width * H against about 12 * H^2 per token).
        self.pack_width = policy.config.hidden_size // 2

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        response_length: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits that predict each response token, and the value of the state before it.

        Args:
            input_ids, attention_mask, position_ids: (B, L) prompt + response.
            response_length: T, the response part at the end of each row.

        Returns:
            float32 logits (B, T, V) and values (B, T); position t reads the prefix before
            token t.
        """
        inputs = dict(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)
        window = slice(-response_length - 1, -1)  # the states that predict the response
        shared = self.critic is None
        out = self.policy(
            **inputs, logits_to_keep=response_length + 1, output_hidden_states=shared,
            use_cache=False,
        )
        # float32 from here on: a bf16 log-softmax over 150k tokens loses the small ratios
        logits = out.logits[:, :-1].float()  # (B, T, V)
        values = self.values(self.critic_states(out, inputs)[:, window])
        return logits, values  # (B, T, V), (B, T)

    def critic_states(self, policy_out, inputs: dict) -> torch.Tensor:
        """The critic's last hidden states: the policy's own (shared), else its trunk's."""
        if self.critic is None:
            return policy_out.hidden_states[-1]
        return self.critic(**inputs, use_cache=False).last_hidden_state

    def values(self, states: torch.Tensor) -> torch.Tensor:
        """The value head over hidden states (..., H) -> float32 values (...)."""
        return self.value_head(states.to(self.value_head.weight.dtype)).squeeze(-1).float()

    def packed(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        response_length: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`forward`'s logits and values at the real response tokens only: (n, V) and (n,).

        Row by row, the n slots where `attention_mask[:, -response_length:]` is 1 (the
        losses take such (n,) vectors as they are). The rows' real tokens (prompt and
        response, no padding) are packed into a few sequences of about `pack_width` tokens
        (or the longest row), their position ids restarting at 0 for each row, from which
        transformers builds a block-diagonal causal mask (a row attends to itself only);
        see `packing`. Logits come only for the states that predict a real response token,
        so nothing downstream (log-softmax, entropy) runs over padding either.
        """
        real = attention_mask.bool()  # (B, L): left-padded prompt, right-padded response
        length = real.shape[1]
        layout = packing.Packing.of(real, self.pack_width)
        # the state before response token t sits one column to its left (a real token
        # whenever token t is real: the prompt's last token, or response token t - 1)
        before = layout.place[:, length - response_length - 1 : length - 1]  # (B, T)
        wanted = real[:, length - response_length :]  # (B, T): real response tokens
        keep = before[wanted]  # (n,) packed positions whose outputs the loss reads
        inputs = dict(input_ids=layout.pack(input_ids), position_ids=layout.pack(position_ids))
        with packing.head_reads(self.policy, keep):
            out = self.policy(
                **inputs, logits_to_keep=0, output_hidden_states=self.critic is None,
                use_cache=False,
            )
        logits = out.logits[0].float()  # (n, V)
        values = self.values(self.critic_states(out, inputs).flatten(0, 1)[keep])  # (n,)
        return logits, values

    def update_mode(self, on: bool) -> None:
        """Switch on what only the update passes use: gradient checkpointing, LoRA dropout.

        Transformers checkpoints a layer only when that layer is in training mode, and
        peft's LoRA dropout only acts in training mode. Only those modules are flagged:
        everything else, the models' own dropout included, stays in eval mode, so rollout
        and update forward passes give the same log-probs.
        """
        for module in self.update_only:
            module.training = on

    @functools.cached_property
    def update_only(self) -> list[nn.Module]:
        """The modules `update_mode` flags, found once: the models are built by then."""
        return [
            module for name, module in self.named_modules()
            if isinstance(module, GradientCheckpointingLayer)
            and getattr(module, "gradient_checkpointing", False)
            or ".lora_dropout." in name
        ]


class Reference:
    """The frozen starting policy, which the KL penalty measures the policy against.

    Either its own frozen copy (full fine-tuning), or, with LoRA, the policy itself with
    its adapters disabled: the same base weights, no second copy in memory.
    """

    def __init__(self, policy: nn.Module, copy_of_policy: PreTrainedModel | None):
        self.policy = policy
        self.model = copy_of_policy

    @torch.inference_mode()
    def logits(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        response_length: int,
    ) -> torch.Tensor:
        """float32 logits (B, T, V) that predict each response token; inputs as ActorCritic."""
        inputs = dict(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
            logits_to_keep=response_length + 1, use_cache=False,
        )
        if self.model is not None:
            return self.model(**inputs).logits[:, :-1].float()
        with self.policy.disable_adapter():
            return self.policy(**inputs).logits[:, :-1].float()


def frozen_copy(model: PreTrainedModel, dtype: torch.dtype | None = None) -> PreTrainedModel:
    """The reference policy: a copy of the starting policy that never trains."""
    ref = copy.deepcopy(model).eval().requires_grad_(False)
    return ref if dtype is None else ref.to(dtype)


def position_ids_for(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding, exactly as `generate` numbers them: (B, L) -> (B, L)."""
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)
