"""Build what the trainer trains and samples with, from the `model` section of the config.

Policy, critic, reference and value head on `model.device`; trained weights in float32,
frozen ones in `model.dtype` (see ppo/hardware.py); LoRA adapters through peft; gradient
checkpointing; and the sampling settings, built from our config only.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import torch
from torch import nn
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedTokenizerBase,
)

from ppo_exp.config import ConfigError, LoraSettings, PPOConfig
from ppo_exp.ppo.models import ActorCritic, Reference, frozen_copy
from ppo_exp.task.base_model import fused_kernels, tiny_model_path

log = logging.getLogger("ppo_exp")


@dataclass
class Models:
    """The trained actor-critic, the frozen reference, and how to sample from the policy."""

    actor_critic: ActorCritic
    reference: Reference
    # the policy's generation_config (`sampling_config`) picks the best-scored token;
    # passed to its `generate`, these scores make that pick a sample (`SoftmaxSampling`)
    sampling: LogitsProcessorList
    stop_token_ids: list[int]  # any of these ends a response (it is kept, and scored)


def policy_path(cfg: PPOConfig) -> str:
    """The policy checkpoint: `model.path`, or the embedded tiny review model."""
    return str(cfg.model.path or tiny_model_path())


def build_models(
    cfg: PPOConfig,
    tokenizer: PreTrainedTokenizerBase,
    *,
    device: torch.device,
    dtype: torch.dtype,
) -> Models:
    """Load policy, critic and reference as `cfg.model` says, on `device`.

    Args:
        cfg: the run config (model section, stop_tokens, temperature, max_new_tokens).
        tokenizer: the policy's tokenizer (from `load_tokenizer`).
        device: where every model lives.
        dtype: compute dtype; frozen weights are stored in it, trained ones in float32.
    """
    mc, lora = cfg.model, cfg.model.lora
    path = policy_path(cfg)
    # Fully trained weights stay float32 (AdamW state included); a LoRA base is frozen.
    # Each model moves to `device` as soon as it is loaded, so that the reference and the
    # critic are copied there: the host never holds more than one model's weights.
    policy = AutoModelForCausalLM.from_pretrained(
        path, dtype=dtype if lora else torch.float32, **fused_kernels(path)
    ).to(device)
    checkpoint_eos = policy.generation_config.eos_token_id
    if mc.gradient_checkpointing:
        checkpoint_activations(policy)
    if lora is None:
        reference = Reference(policy, frozen_copy(policy, dtype))
    else:
        policy = with_lora(policy, lora, task_type="CAUSAL_LM")
        reference = Reference(policy, None)  # the same weights, adapters disabled

    if mc.value_model == "shared":
        critic = None
    elif mc.value_model == "separate" and lora is None:
        critic = copy.deepcopy(policy.base_model)  # the policy's trunk, trained on its own
    else:
        critic_path = path if mc.value_model == "separate" else mc.value_model
        critic = AutoModel.from_pretrained(
            critic_path, dtype=dtype if lora else torch.float32, **fused_kernels(critic_path)
        ).to(device)
        if mc.gradient_checkpointing:
            checkpoint_activations(critic)
        if lora is not None:
            critic = with_lora(critic, lora, task_type="FEATURE_EXTRACTION")
    hidden = (critic.config if critic is not None else policy.config).hidden_size
    actor_critic = ActorCritic(policy, critic, hidden_size=hidden).eval().to(device)

    stop_ids = stop_token_ids(cfg.stop_tokens, tokenizer, checkpoint_eos)
    generation_config = sampling_config(cfg, tokenizer, stop_ids)
    # generate() fills every unset field from the model's own generation_config, so the
    # checkpoint's (repetition_penalty, min_new_tokens...) is replaced, not just overridden.
    sampler = policy.get_base_model() if lora is not None else policy
    sampler.generation_config = generation_config
    log.info(
        "policy %s on %s in %s: %.1fM parameters trained",
        path, device, dtype, sum(p.numel() for p in trainable(actor_critic)) / 1e6,
    )
    sampling = LogitsProcessorList([SoftmaxSampling(cfg.temperature)])
    return Models(actor_critic, reference, sampling, stop_ids)


def with_lora(model: nn.Module, lora: LoraSettings, *, task_type: str) -> nn.Module:
    """Wrap `model` with trainable float32 LoRA adapters; its own weights freeze."""
    from peft import LoraConfig, get_peft_model

    targets = lora.target_modules
    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules="all-linear" if targets == ["all-linear"] else list(targets),
        task_type=task_type,
    )
    return get_peft_model(model, config, autocast_adapter_dtype=True)


def checkpoint_activations(model: nn.Module) -> None:
    """Gradient checkpointing: keep each layer's input only, recompute the rest in backward.

    Non-reentrant, so it works when no input requires grad (a frozen LoRA base).
    """
    enable = getattr(model, "activation_checkpointing_enable", None)  # transformers >= 5.x
    if enable is None:
        enable = model.gradient_checkpointing_enable
    enable({"use_reentrant": False})


def trainable(model: nn.Module) -> list[nn.Parameter]:
    """The parameters the optimiser updates, in module order."""
    return [p for p in model.parameters() if p.requires_grad]


def stop_token_ids(
    stop_tokens: list[str] | None,
    tokenizer: PreTrainedTokenizerBase,
    checkpoint_eos: int | list[int] | None,
) -> list[int]:
    """The ids that end a response.

    Args:
        stop_tokens: the `stop_tokens` setting; null = the tokenizer's eos plus the
            checkpoint's `generation_config.eos_token_id` (Llama-3-Instruct lists
            `<|eot_id|>` there, Qwen2.5-Instruct `<|im_end|>`).
        tokenizer: converts token strings to ids.
        checkpoint_eos: the checkpoint's generation_config.eos_token_id.

    Raises:
        ConfigError: a stop token is not in the vocabulary, or there is none at all.
    """
    if stop_tokens is not None:
        ids = []
        for token in stop_tokens:
            token_id = tokenizer.convert_tokens_to_ids(token)
            if token_id is None or token_id == tokenizer.unk_token_id:
                raise ConfigError("stop_tokens", list(stop_tokens), "tokens of the vocabulary")
            ids.append(token_id)
        return ids
    ids = [tokenizer.eos_token_id]
    extra = checkpoint_eos if isinstance(checkpoint_eos, list) else [checkpoint_eos]
    ids += [i for i in extra if i is not None and i not in ids]
    ids = [i for i in ids if i is not None]
    if not ids:
        raise ConfigError("stop_tokens", None, "a list of tokens: this tokenizer has no eos")
    return ids


def sampling_config(
    cfg: PPOConfig, tokenizer: PreTrainedTokenizerBase, stop_ids: list[int]
) -> GenerationConfig:
    """`generate`'s settings: the best-scored token at each step, up to `max_new_tokens`
    or a stop token. Passed `SoftmaxSampling` scores, that token is a sample from
    softmax(logits / temperature), what the log-probs assume; nothing else (top-k, top-p,
    a checkpoint's repetition penalty) reshapes the distribution."""
    return GenerationConfig(
        do_sample=False,
        max_new_tokens=cfg.max_new_tokens,
        eos_token_id=stop_ids,
        pad_token_id=tokenizer.pad_token_id,
    )


class SoftmaxSampling(LogitsProcessor):
    """Scores whose largest entry is a sample from softmax(logits / temperature): the
    Gumbel-max trick, logits / temperature + G with G = -log(-log U), U uniform.

    The same exponential race `torch.multinomial` runs (the largest p_i / E_i, E_i =
    -log U_i exponential, in logs), with its noise drawn by `torch.rand`: on a CPU, torch's
    exponential sampler is serial, 1.4 ms for 64 x 1,024 logits against 0.35 ms for this,
    and its cost grows with the vocabulary (a 4-layer policy generating 8 tokens for 64
    prompts: 554 against 236 ms with a 32k vocabulary). A U of exactly 0 gives -inf: that
    token is not drawn, as a zero-probability token is not.
    """

    def __init__(self, temperature: float):
        self.temperature = temperature

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        exponential = torch.rand(scores.shape, device=scores.device).log_().neg_()  # -log U
        return scores / self.temperature - exponential.log_()  # the largest p_i / E_i
