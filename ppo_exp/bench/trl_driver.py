"""TRL 1.12's PPO trainer, timed phase by phase: run by path with TRL's own interpreter.

    /work/trl-venv/bin/python ppo_exp/bench/trl_driver.py SPEC.json OUT.json

It imports nothing from ppo_exp (TRL lives in its own virtual environment, see the
README's "Benchmarks" section), only `clock.py` beside it. The models are the local
checkpoints of `bench.models`: policy and reference from the policy directory, the
critic and the reward model as one-logit sequence classifiers. Offline throughout.
TRL's trainer is not modified: its module-level helpers and its optimiser, accelerator
and `gc.collect` are wrapped for the duration of the run.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from clock import PhaseClock, after_imports, patched, result, to_phases  # noqa: E402

MAPPING = {
    "generate": "generate",
    "score_reference": "score_reference",
    "score_critic": "score_critic",
    "score_reward": "score_reward",
    "update_forward": "update_forward",
    "update_backward": "update_backward",
    "update_step": "update_step",
    "logging": "logging",
    "gc": "gc",
}


def run(spec: dict) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    import gc

    import torch
    import trl
    from datasets import Dataset
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        TrainerCallback,
    )
    from trl.experimental.ppo import PPOConfig, PPOTrainer
    from trl.experimental.ppo import ppo_trainer as module

    startup = after_imports(started, spec["threads"])

    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(spec["policy"])
    tok.padding_side = "left"
    policy = AutoModelForCausalLM.from_pretrained(spec["policy"])
    ref = AutoModelForCausalLM.from_pretrained(spec["policy"])
    value = AutoModelForSequenceClassification.from_pretrained(spec["reward"])
    torch.nn.init.zeros_(value.score.weight)  # a fresh critic head, as ppo_exp's
    reward = AutoModelForSequenceClassification.from_pretrained(spec["reward"])
    B = spec["batch_size"]
    ids = tok(spec["prompts"])["input_ids"]
    dataset = Dataset.from_dict({"input_ids": ids})
    workdir = tempfile.mkdtemp(prefix="trl-bench-")
    args = PPOConfig(
        output_dir=workdir,
        per_device_train_batch_size=B,
        gradient_accumulation_steps=1,
        num_mini_batches=spec["num_minibatches"],
        num_ppo_epochs=spec["ppo_epochs"],
        total_episodes=B * spec["iterations"],
        local_rollout_forward_batch_size=B,
        response_length=spec["max_new_tokens"],
        stop_token="eos",
        temperature=0.7,
        learning_rate=1e-4,
        adam_epsilon=1e-5,
        missing_eos_penalty=1.0,
        num_sample_generations=0,
        report_to=spec.get("report_to", "none"),  # "mlflow": the store in MLFLOW_TRACKING_URI
        save_strategy="no",
        logging_steps=1,
        use_cpu=spec.get("device", "cpu") == "cpu",
        seed=spec["seed"],
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    trainer = PPOTrainer(
        args=args, processing_class=tok, model=policy, ref_model=ref, reward_model=reward,
        train_dataset=dataset, value_model=value,
    )
    init_s = time.perf_counter() - t0

    clock = PhaseClock(spec.get("clock", "wall"))
    iterations: list[dict] = []
    boundary = [clock.now()]

    class Boundary(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            now = clock.now()
            wall = now - boundary[0]
            iterations.append(
                {
                    "step": state.global_step,
                    "wall_s": wall,
                    "phases": to_phases(clock.take(), wall, MAPPING),
                    "response_tokens": last_tokens[0],
                }
            )
            boundary[0] = now

    last_tokens = [0.0]
    trainer.add_callback(Boundary())
    real_get_reward, real_forward = module.get_reward, module.forward

    def get_reward(model, query_responses, pad_token_id, context_length):
        name = "score_reward" if model is reward else "score_critic"
        timed = clock.wrap(name, real_get_reward)
        out = timed(model, query_responses, pad_token_id, context_length)
        if model is reward:  # count real response tokens (up to and including the stop)
            response = query_responses[:, context_length:]
            last_tokens[0] = float((response != tok.pad_token_id).sum())
        return out

    def forward(model, query_responses, pad_token_id):
        name = "update_forward" if torch.is_grad_enabled() else "score_reference"
        return clock.wrap(name, real_forward)(model, query_responses, pad_token_id)

    optimizer = trainer.optimizer
    with (
        patched(module, "batch_generation", clock.wrap("generate", module.batch_generation)),
        patched(module, "get_reward", get_reward),
        patched(module, "forward", forward),
        patched(gc, "collect", clock.wrap("gc", gc.collect)),
        patched(trainer.accelerator, "backward",
                clock.wrap("update_backward", trainer.accelerator.backward)),
        patched(optimizer, "step", clock.wrap("update_step", optimizer.step)),
        patched(trainer, "log", clock.wrap("logging", trainer.log)),
    ):
        boundary[0] = clock.now()
        trainer.train()
    optimizer_kind = {k: v for k, v in optimizer.defaults.items() if k in ("fused", "foreach")}
    return result(
        "trl", iterations, startup, init_s=init_s, version=trl.__version__,
        optimizer=f"{type(getattr(optimizer, 'optimizer', optimizer)).__name__} {optimizer_kind}",
        mlflow_loaded="mlflow" in sys.modules,  # report_to="mlflow" imports it
    )


if __name__ == "__main__":
    spec_path, out_path = sys.argv[1:3]
    result = run(json.loads(Path(spec_path).read_text()))
    Path(out_path).write_text(json.dumps(result))
