"""Estimate the memory of a run from the checkpoints' configs: no weights are loaded.

    python -m ppo_exp.memory model.path=Qwen/Qwen2.5-0.5B-Instruct lora=default \\
        model.value_model=shared model.gradient_checkpointing=true model.dtype=bfloat16

Takes the same overrides as `python -m ppo_exp.run`, builds each model on the meta device
(parameter counts from config.json alone) and prints what every part costs: weights,
gradients and AdamW moments of what trains, the reference, the reward model, and the
activations of the largest forward pass (an estimate: Korthikanti et al. 2022's count of
a transformer layer's saved activations, and the float32 (T, V) log-prob tensors).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

GIB = 2**30
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass
class Shape:
    params: int  # all parameters of the causal LM
    trunk: int  # without the LM head (what a separate critic copies)
    hidden: int
    layers: int
    heads: int
    vocab: int
    lora: int  # parameters of LoRA adapters with the run's settings (0 without LoRA)


def shape_of(path: str, lora=None) -> Shape:
    """Parameter counts and sizes of the causal LM at `path`, from its config.json only."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.pytorch_utils import Conv1D

    config = AutoConfig.from_pretrained(path)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    params = sum(p.numel() for p in model.parameters())
    head = model.get_output_embeddings()
    tied = head is not None and head.weight is model.get_input_embeddings().weight
    trunk = params - (0 if tied or head is None else head.weight.numel())
    adapters = 0
    if lora is not None:
        targets = list(lora.target_modules)
        for name, module in model.named_modules():
            if not isinstance(module, (torch.nn.Linear, Conv1D)) or module is head:
                continue
            if targets == ["all-linear"] or any(
                name == t or name.endswith("." + t) for t in targets
            ):
                fan_in, fan_out = module.weight.shape[::-1]
                if isinstance(module, Conv1D):
                    fan_in, fan_out = fan_out, fan_in
                adapters += lora.r * (fan_in + fan_out)
    return Shape(
        params, trunk, config.hidden_size, config.num_hidden_layers,
        config.num_attention_heads, config.vocab_size, adapters,
    )


def estimate(cfg, *, compute_dtype: str, prompt_tokens: int) -> list[tuple[str, float]]:
    """(part, bytes) for the run `cfg` (a PPOConfig) computing in `compute_dtype`."""
    from ppo_exp.ppo.loading import policy_path

    mc = cfg.model
    low = BYTES[compute_dtype]
    policy = shape_of(policy_path(cfg), mc.lora)
    lora = mc.lora is not None
    rows: list[tuple[str, float]] = []
    # what trains: float32 weights (all, or adapters + value head), gradients, AdamW moments
    if mc.value_model == "shared":
        critic_trunk, critic_adapters = 0, 0
    else:
        critic = policy if mc.value_model == "separate" else shape_of(mc.value_model, mc.lora)
        critic_trunk, critic_adapters = critic.trunk, critic.lora
    trained = (policy.lora + critic_adapters if lora else policy.params + critic_trunk)
    trained += policy.hidden + 1  # value head
    rows.append(("policy weights" + (" (frozen base)" if lora else ""),
                 policy.params * (low if lora else 4)))
    if mc.value_model != "shared":
        rows.append(("critic trunk" + (" (frozen base)" if lora else ""),
                     critic_trunk * (low if lora else 4)))
    rows.append(("trained weights: adapters + value head" if lora else "value head",
                 (policy.lora + critic_adapters + policy.hidden + 1) * 4 if lora
                 else (policy.hidden + 1) * 4))
    rows.append(("gradients (float32)", trained * 4))
    rows.append(("AdamW moments (float32)", trained * 8))
    rows.append(("reference", 0 if lora else policy.params * low))
    if cfg.reward.kind == "classifier":
        import torch
        from transformers import AutoConfig, AutoModelForSequenceClassification

        with torch.device("meta"):
            reward = AutoModelForSequenceClassification.from_config(
                AutoConfig.from_pretrained(cfg.reward.path)
            )
        rows.append(("reward model", sum(p.numel() for p in reward.parameters()) * low))
    # activations of one update micro-batch (policy, and a separate critic's trunk)
    micro = cfg.micro_batch_size or cfg.batch_size // cfg.num_minibatches
    seq = prompt_tokens + cfg.max_new_tokens
    per_layer = seq * micro * policy.hidden * (34 + 5 * policy.heads * seq / policy.hidden)
    per_layer *= low / 2  # the count is for 16-bit activations
    trunks = 1 if mc.value_model == "shared" else 2
    if mc.gradient_checkpointing:  # layer inputs kept, one layer recomputed at a time
        layers = seq * micro * policy.hidden * low * policy.layers + per_layer
    else:
        layers = per_layer * policy.layers
    logits = micro * cfg.max_new_tokens * policy.vocab * 4 * 3  # logits, log-softmax, grad
    rows.append((f"update activations ({micro} rows x {seq} tokens)", layers * trunks + logits))
    chunk = cfg.rollout_micro_batch or cfg.batch_size
    rows.append((f"rollout log-probs ({chunk} rows)", chunk * cfg.max_new_tokens * policy.vocab
                 * 4 * 3))
    return rows


def main(argv: list[str]) -> None:
    from hydra import compose, initialize_config_module

    from ppo_exp.config import to_config
    from ppo_exp.ppo.hardware import resolve_device, resolve_dtype

    with initialize_config_module("ppo_exp.conf", version_base=None):
        cfg = to_config(compose(config_name="config", overrides=argv))
    dtype = resolve_dtype(cfg.model.dtype, resolve_device(cfg.model.device))
    name = str(dtype).removeprefix("torch.")
    prompt = cfg.data.max_prompt_tokens or 64
    rows = estimate(cfg, compute_dtype=name, prompt_tokens=prompt)
    width = max(len(part) for part, _ in rows)
    print(f"{'part':<{width}}  GiB   (dtype {name}, prompts <= {prompt} tokens)")
    for part, size in rows:
        print(f"{part:<{width}}  {size / GIB:6.2f}")
    print(f"{'total':<{width}}  {sum(size for _, size in rows) / GIB:6.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
