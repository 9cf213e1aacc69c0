"""On a CUDA GPU: devices, precisions and memory options through the real code path.

Every test here is marked `gpu` and skipped where CUDA is absent (CI has none): run them
on a GPU machine with `python -m pytest -m gpu`. The checkpoints are the tiny random-init
models of tests/tiny_checkpoints.py, saved in bf16 as instruct models ship.
"""

from __future__ import annotations

import math

import mlflow
import pytest
import torch
from conftest import TINY_RUN, run_cli
from tiny_checkpoints import build_causal_lm, build_classifier

from ppo_exp.config import LoraSettings, ModelConfig, PPOConfig
from ppo_exp.ppo.trainer import PPOTrainer

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]
SMOKE = dict(
    iterations=2, batch_size=8, num_minibatches=2, max_new_tokens=8, eval_every=0,
    eval_prompts=8, sample_every=0,
)


@pytest.fixture(scope="module")
def qwen_bf16(tmp_path_factory, base_model_path):
    return build_causal_lm(
        "qwen2", torch.bfloat16, tmp_path_factory.mktemp("qwen2-bf16"), base_model_path
    )


def trainer_for(path, **model) -> PPOTrainer:
    return PPOTrainer(PPOConfig(**SMOKE, model=ModelConfig(name=None, path=str(path), **model)))


def test_auto_picks_the_gpu_and_bf16(qwen_bf16):
    trainer = trainer_for(qwen_bf16)
    assert trainer.device.type == "cuda"
    assert trainer.dtype == (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32)


def test_full_finetuning_keeps_trained_weights_and_adam_state_in_float32(qwen_bf16):
    # Separate critic, no LoRA: what is trained (policy, critic, value head) and AdamW's
    # moments stay float32 on the GPU; the frozen reference is stored in the compute dtype.
    trainer = trainer_for(qwen_bf16, dtype="bfloat16", value_model="separate")
    trained = [p for group in trainer.replay.groups for p in group]
    assert trained and all(p.is_cuda and p.dtype == torch.float32 for p in trained)
    assert all(p.is_cuda and p.dtype == torch.bfloat16 for p in trainer.ref.model.parameters())
    final = trainer.train()
    assert math.isfinite(final["loss/total"])
    optimizer_state = trainer.replay.optimizer.state
    states = [optimizer_state[p] for p in trained if p in optimizer_state]
    assert states and all(s["exp_avg"].dtype == torch.float32 and s["exp_avg"].is_cuda
                          for s in states)


def test_float16_trains_with_a_grad_scaler(qwen_bf16):
    trainer = trainer_for(qwen_bf16, dtype="float16")
    assert trainer.dtype == torch.float16 and trainer.replay.scaler.is_enabled()
    final = trainer.train()
    assert math.isfinite(final["loss/total"]) and math.isfinite(final["rollout/kl"])


def test_lora_shared_critic_with_checkpointing_and_micro_batches(qwen_bf16):
    cfg = PPOConfig(
        **SMOKE, micro_batch_size=2, rollout_micro_batch=4,
        model=ModelConfig(name=None, path=str(qwen_bf16), lora=LoraSettings(r=4),
                          value_model="shared", gradient_checkpointing=True),
    )
    trainer = PPOTrainer(cfg)
    rollout = trainer.rollout(trainer.train_prompts[:8])
    for tensor in (rollout.response, rollout.logprobs, rollout.ref_logprobs, rollout.values,
                   rollout.scores):
        assert tensor.is_cuda
    assert rollout.logprobs.dtype == torch.float32
    assert trainer.ref.model is None  # the reference is the base with adapters disabled
    final = trainer.train()
    assert math.isfinite(final["loss/total"])
    assert torch.cuda.max_memory_allocated() > 0


def test_the_command_trains_on_the_gpu_with_a_classifier_reward(
    tmp_path, mlflow_uri, qwen_bf16
):
    # The real command: a bf16 instruct checkpoint with LoRA and a classifier reward model
    # (its own tokenizer and chat template), everything on cuda.
    reward = build_classifier(tmp_path / "classifier")
    result = run_cli(
        f"model.path={qwen_bf16}", "model.name=null", "model.device=cuda", "lora=default",
        "reward=classifier", f"reward.path={reward}", "reward.text=full", *TINY_RUN,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    mlflow.set_tracking_uri(mlflow_uri)
    (run,) = mlflow.search_runs(experiment_names=["ppo_exp"], output_format="list")
    assert run.info.status == "FINISHED"
    assert run.data.tags["ppo_exp.device"] == "cuda"
    assert run.data.tags["ppo_exp.dtype"] == "bfloat16"
    assert math.isfinite(run.data.metrics["loss/total"])
