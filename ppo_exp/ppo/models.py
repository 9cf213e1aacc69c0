"""The policy with its critic, and the frozen reference model."""

from __future__ import annotations

import copy

import torch
from torch import nn
from transformers import PreTrainedModel


class ActorCritic(nn.Module):
    """A causal-LM policy and a scalar value model over the same token positions.

    value_model="separate": the critic is its own copy of the policy's trunk, started from
    the same checkpoint (as the N-implementation-details paper recommends), so the value
    loss never pulls on the policy's features. value_model="shared": the value head sits
    on the policy's last hidden state, which halves the compute of every update.
    The value head starts at zero, as in lm-human-preferences, so early values are 0.
    """

    def __init__(self, policy: PreTrainedModel, *, value_model: str):
        super().__init__()
        self.policy = policy
        self.critic = copy.deepcopy(policy.base_model) if value_model == "separate" else None
        self.value_head = nn.Linear(policy.config.hidden_size, 1)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)

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
            logits (B, T, V) and values (B, T); position t reads the prefix before token t.
        """
        inputs = dict(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)
        window = slice(-response_length - 1, -1)  # the states that predict the response
        shared = self.critic is None
        out = self.policy(**inputs, logits_to_keep=response_length + 1, output_hidden_states=shared)
        logits = out.logits[:, :-1]  # (B, T, V)
        hidden = out.hidden_states[-1] if shared else self.critic(**inputs).last_hidden_state
        values = self.value_head(hidden[:, window]).squeeze(-1)  # (B, T)
        return logits, values


def frozen_copy(model: PreTrainedModel) -> PreTrainedModel:
    """The reference policy: a copy of the starting policy that never trains."""
    return copy.deepcopy(model).eval().requires_grad_(False)


def position_ids_for(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding, exactly as `generate` numbers them: (B, L) -> (B, L)."""
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)
