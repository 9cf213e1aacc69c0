"""The eager floor: the least work plain PyTorch needs for one PPO iteration.

Per iteration, on the same checkpoints and shapes as the trainer: one `generate` with
the KV cache; one forward of each model (policy, reference, critic, reward) on prompt +
response; then `ppo_epochs * num_minibatches` times a policy and critic forward, the
trainer's default loss (clipped surrogate, clipped value loss) with the statistics it
logs (entropy, approx-KL, clip fractions; read once per iteration), a backward pass,
gradient-norm clipping per group (policy; critic and value head) and an AdamW step.
No masking (every row runs at full length), no packing, no logging: every figure of
the trainer is also a ratio to this.
"""

from __future__ import annotations

import copy
import time
from typing import Any

from ppo_exp.bench.clock import PHASES, PhaseClock, after_imports, result, to_phases


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Run the floor per `spec` (see `suite.Spec`) and return per-iteration phase timings."""
    started = time.perf_counter()
    import torch
    import torch.nn.functional as F
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )

    startup = after_imports(started, spec["threads"])
    torch.manual_seed(spec["seed"])

    t0 = time.perf_counter()
    device = torch.device(spec.get("device", "cpu"))
    tok = AutoTokenizer.from_pretrained(spec["policy"])
    tok.padding_side = "left"
    policy = AutoModelForCausalLM.from_pretrained(spec["policy"]).to(device).eval()
    ref = copy.deepcopy(policy).requires_grad_(False)
    critic = copy.deepcopy(policy.base_model)
    value_head = torch.nn.Linear(policy.config.hidden_size, 1, device=device)
    reward = AutoModelForSequenceClassification.from_pretrained(spec["reward"]).to(device).eval()
    groups = [list(policy.parameters()), [*critic.parameters(), *value_head.parameters()]]
    params = [*groups[0], *groups[1]]
    optimizer = torch.optim.AdamW(params, lr=1e-4, eps=1e-5, fused=spec.get("fused", False))
    init_s = time.perf_counter() - t0

    clock = PhaseClock(spec.get("clock", "wall"))
    prompts = spec["prompts"]
    B, T_max = spec["batch_size"], spec["max_new_tokens"]
    minibatch = B // spec["num_minibatches"]
    iterations = []
    for it in range(1, spec["iterations"] + 1):
        began = clock.now()
        picks = [prompts[(it * B + i) % len(prompts)] for i in range(B)]
        enc = tok(picks, return_tensors="pt", padding=True).to(device)
        with torch.inference_mode():
            ids = clock.wrap("generate", policy.generate)(
                **enc, do_sample=True, temperature=0.7, top_k=0, top_p=1.0,
                max_new_tokens=T_max, pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id,
            )  # (B, L)
            T = ids.shape[1] - enc.input_ids.shape[1]
            mask = torch.cat([enc.attention_mask, torch.ones_like(ids[:, -T:])], dim=1)
            kw = dict(input_ids=ids, attention_mask=mask)
            scored = clock.wrap("score_policy", policy)(**kw, logits_to_keep=T + 1)
            clock.wrap("score_reference", ref)(**kw, logits_to_keep=T + 1)
            states = clock.wrap("score_critic", critic)(**kw).last_hidden_state
            clock.wrap("score_reward", reward)(**kw)
            # the rollout's log-probs and values, which the PPO loss compares against
            old_logp = F.log_softmax(scored.logits[:, :-1] / 0.7, -1)
            old_logp = old_logp.gather(2, ids[:, -T:].unsqueeze(-1)).squeeze(-1)
            old_values = value_head(states[:, -T - 1 : -1]).squeeze(-1)
        b = {"ids": ids.clone(), "mask": mask.clone(), "response": ids[:, -T:].clone(),
             "old_logp": old_logp.clone(), "old_values": old_values.clone(),
             "advantages": torch.randn(B, T, device=device),
             "returns": torch.randn(B, T, device=device), "T": T}

        live: dict = {}  # this minibatch's rows, outputs and loss, until the next rows()

        def rows(i, b=b, live=live):  # the minibatch's rows, and nothing left from the last
            live.clear()
            optimizer.zero_grad(set_to_none=True)
            return {k: v[i] for k, v in b.items() if k != "T"}

        def forward(mb, b=b):
            kw = dict(input_ids=mb["ids"], attention_mask=mb["mask"])
            logits = policy(**kw, logits_to_keep=b["T"] + 1).logits
            return logits, critic(**kw).last_hidden_state

        stats: list = []

        def loss_of(mb, logits, hidden, b=b, stats=stats):
            # ppo_exp's default loss in plain torch: clipped surrogate (clip_eps 0.2),
            # clipped value loss (0.2, vf_coef 0.1), and the statistics it logs (entropy,
            # approx-KL, clip fractions), kept on the device
            log_p = F.log_softmax(logits[:, :-1] / 0.7, -1)
            logp = log_p.gather(2, mb["response"].unsqueeze(-1)).squeeze(-1)
            log_ratio = logp - mb["old_logp"]
            ratio = log_ratio.exp()
            adv, old_v, ret = mb["advantages"], mb["old_values"], mb["returns"]
            unclipped, clipped = -adv * ratio, -adv * ratio.clamp(0.8, 1.2)
            pg = torch.maximum(unclipped, clipped).mean()
            values = value_head(hidden[:, -b["T"] - 1 : -1]).squeeze(-1)
            error = (values - ret) ** 2
            clipped_error = (old_v + (values - old_v).clamp(-0.2, 0.2) - ret) ** 2
            vf = 0.5 * torch.maximum(error, clipped_error).mean()
            with torch.no_grad():
                stats.append(torch.stack([
                    -(log_p.exp() * log_p).sum(-1).mean(), ((ratio - 1) - log_ratio).mean(),
                    (clipped > unclipped).float().mean(), (clipped_error > error).float().mean(),
                ]))
            return pg + 0.1 * vf

        def clip():  # each group on its own, max norm 1.0, as ppo_exp's default
            for group in groups:
                torch.nn.utils.clip_grad_norm_(group, 1.0)

        for _ in range(spec["ppo_epochs"]):
            order = torch.randperm(B)
            for start in range(0, B, minibatch):
                i = order[start : start + minibatch]
                # phases split as the trainer's: gathering the rows, zeroing the
                # gradients and freeing the last minibatch's outputs and graph count with
                # the loss (the trainer frees them as `Replay.gradients` returns); the
                # forward is the models' alone
                live["mb"] = clock.wrap("update_loss", rows)(i)
                live["out"] = clock.wrap("update_forward", forward)(live["mb"])
                live["loss"] = clock.wrap("update_loss", loss_of)(live["mb"], *live["out"])
                clock.wrap("update_backward", live["loss"].backward)()
                clock.wrap("update_clip", clip)()
                clock.wrap("update_step", optimizer.step)()
        torch.stack(stats).mean(0).tolist()  # read once per iteration, as ppo_exp does
        wall = clock.now() - began
        iterations.append(
            {
                "step": it,
                "wall_s": wall,
                "phases": to_phases(clock.take(), wall, {p: p for p in PHASES}),
                "response_tokens": B * T,
            }
        )
    return result("floor", iterations, startup, init_s=init_s)
