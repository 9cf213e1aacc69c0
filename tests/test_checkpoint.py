"""Checkpoints: a resumed run equals an uninterrupted one, saves are atomic, refusals.

Resume equality is exact on the CPU with the thread count pinned (results are identical for
the same seed *and* thread count): every metric but the wall-clock `perf/*` ones.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import Recorder
from tiny_checkpoints import build_causal_lm

from ppo_exp.config import ConfigError, LoraSettings, ModelConfig, PPOConfig
from ppo_exp.ppo import checkpoint
from ppo_exp.ppo.trainer import PPOTrainer, train
from ppo_exp.resume import resume_point

# Four iterations, evals at 2 and 4 (their learning-curve areas carry history), lr decay
# and the adaptive KL controller (their state must come back too).
RUN = dict(
    iterations=4, batch_size=8, num_minibatches=2, ppo_epochs=2, max_new_tokens=8,
    eval_every=2, eval_prompts=8, sample_every=0, seed=5, lr_decay=True, kl_target=2.0,
)


class Killed(Exception):
    """Stands for a process killed at some point after a checkpoint."""


class KilledAt(Recorder):
    """Records, then dies while iteration `step` is being logged."""

    def __init__(self, step: int):
        super().__init__()
        self.step = step

    def log_metrics(self, metrics, step):
        super().log_metrics(metrics, step)
        if step == self.step:
            raise Killed(step)


def max_abs_difference(a: dict[str, float], b: dict[str, float]) -> float:
    assert a.keys() == b.keys()
    return max(abs(a[k] - b[k]) for k in a if not k.startswith("perf/"))


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # exact equality holds for the same thread count
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def llama(tmp_path_factory, base_model_path):
    folder = tmp_path_factory.mktemp("llama")
    return str(build_causal_lm("llama", torch.float32, folder, base_model_path))


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
MODELS = {
    "full": lambda llama: ModelConfig(device="cpu"),
    "lora": lambda llama: ModelConfig(path=llama, lora=LoraSettings(r=4), device="cpu"),
    "cuda": lambda llama: ModelConfig(device="cuda"),  # bf16 autocast, CUDA random states
}


@pytest.mark.slow
@pytest.mark.parametrize(
    "kind", ["full", "lora", pytest.param("cuda", marks=[pytest.mark.gpu, CUDA])]
)
def test_a_run_killed_after_a_checkpoint_and_resumed_equals_an_uninterrupted_run(
    kind, tmp_path, base_model_path, llama
):
    cfg = PPOConfig(**RUN, checkpoint_every=2, model=MODELS[kind](llama))
    whole = Recorder()
    final = train(cfg, [whole], job_dir=tmp_path / "whole")

    killed = KilledAt(3)  # iteration 3 logged, then the process dies: checkpoint 2 remains
    with pytest.raises(Killed):
        train(cfg, [killed], job_dir=tmp_path / "job", meta={"run": "x"})
    saved = checkpoint.latest(tmp_path / "job")
    assert saved.name == "iteration_0002"
    assert checkpoint.read_info(saved)["meta"] == {"run": "x"}
    resumed = Recorder()
    resumed_final = train(cfg, [resumed], job_dir=tmp_path / "job", resume=saved)

    assert sorted(resumed.metrics) == [3, 4]  # goes on after the checkpoint's iteration
    differences = {
        step: max_abs_difference(whole.metrics[step], resumed.metrics[step]) for step in (3, 4)
    }
    differences["final"] = max_abs_difference(final, resumed_final)
    print(f"{kind}: max abs difference of every metric, resumed vs uninterrupted: {differences}")
    assert differences == {3: 0.0, 4: 0.0, "final": 0.0}
    assert whole.metrics[4]["rollout/kl_coef"] != PPOConfig().kl_coef  # the controller moved
    assert checkpoint.latest(tmp_path / "job").name == "iteration_0004"


@pytest.mark.slow
def test_a_lora_checkpoint_holds_the_adapters_only(tmp_path, llama):
    lora = ModelConfig(path=llama, lora=LoraSettings(r=4))
    cfg = PPOConfig(**{**RUN, "iterations": 1}, model=lora)
    train(cfg, job_dir=tmp_path)
    saved = checkpoint.latest(tmp_path)
    for part in ("policy", "critic"):
        files = {p.name for p in (saved / part).iterdir()}
        assert "adapter_model.safetensors" in files and "model.safetensors" not in files
    assert (saved / "policy" / "tokenizer.json").is_file()


@pytest.mark.slow
def test_a_crash_mid_save_leaves_the_previous_checkpoint_whole(
    tmp_path, base_model_path, monkeypatch
):
    trainer = PPOTrainer(PPOConfig(**RUN), job_dir=tmp_path)
    checkpoint.save_trainer(trainer, 1)
    before = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)  # the weights are written, the state is not
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save_trainer(trainer, 2)
    monkeypatch.undo()
    assert checkpoint.latest(tmp_path).name == "iteration_0001"
    after = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert {k: v for k, v in after.items() if k in before} == before  # untouched
    assert not (tmp_path / "checkpoints" / "iteration_0002").exists()

    checkpoint.save_trainer(trainer, 2)  # the next save clears the crashed one's leftovers
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["iteration_0002"]
    restored = PPOTrainer(PPOConfig(**RUN))
    restored.restore(checkpoint.latest(tmp_path))
    assert restored.start == 2
    for name, value in trainer.model.state_dict().items():
        assert torch.equal(value, restored.model.state_dict()[name]), name


def write_checkpoint_info(folder, cfg: PPOConfig, iteration: int = 2) -> None:
    """A checkpoint's checkpoint.json alone: what the refusals read before any model loads."""
    import json

    target = folder / "checkpoints" / f"iteration_{iteration:04d}"
    target.mkdir(parents=True)
    info = {"iteration": iteration, "config": dataclasses.asdict(cfg), "meta": {}}
    (target / checkpoint.INFO).write_text(json.dumps(info))


def test_resume_auto_starts_fresh_without_a_checkpoint_and_takes_the_newest(tmp_path):
    cfg = PPOConfig(resume="auto")
    assert resume_point(cfg, tmp_path) is None
    write_checkpoint_info(tmp_path, cfg, iteration=2)
    write_checkpoint_info(tmp_path, cfg, iteration=10)
    (tmp_path / "checkpoints" / ".tmp-iteration_0012-99").mkdir()  # a crashed save: ignored
    point = resume_point(cfg, tmp_path)
    assert point.iteration == 10 and point.checkpoint.name == "iteration_0010"


def test_resume_accepts_budget_changes_and_refuses_other_differences(tmp_path):
    write_checkpoint_info(tmp_path, PPOConfig(iterations=4, clip_eps=0.3))
    longer = PPOConfig(iterations=8, clip_eps=0.3, checkpoint_every=2, resume=str(tmp_path))
    assert resume_point(longer, None).iteration == 2  # a job dir names its newest checkpoint
    with pytest.raises(ConfigError, match="differs in clip_eps: 0.3 there, 0.2 here"):
        resume_point(PPOConfig(resume=str(tmp_path)), None)
    with pytest.raises(ConfigError, match="resume='nowhere'.*a checkpoint folder"):
        resume_point(PPOConfig(resume="nowhere"), None)


def test_config_differences_name_dotted_keys_and_skip_budget_keys():
    saved = dataclasses.asdict(PPOConfig(iterations=4, model=ModelConfig(lora=LoraSettings(r=4))))
    now = dataclasses.asdict(PPOConfig(iterations=9, model=ModelConfig(lora=LoraSettings(r=8))))
    assert checkpoint.config_differences(saved, now) == {"model.lora.r": (4, 8)}


def test_checkpoints_are_due_every_n_iterations_and_after_the_last():
    due = [i for i in range(1, 8) if checkpoint.is_due(i, every=3, iterations=7)]
    assert due == [3, 6, 7]
    assert [i for i in range(1, 8) if checkpoint.is_due(i, every=None, iterations=7)] == [7]
    assert [i for i in range(1, 4) if checkpoint.is_due(i, every=0, iterations=3)] == [3]
