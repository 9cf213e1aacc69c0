"""Real architectures and precisions, devices, sampling, LoRA and micro-batching.

Every checkpoint is a tiny random-init model saved with save_pretrained (tests/
tiny_checkpoints.py), so these run offline and in seconds, through the real code path.
"""

from __future__ import annotations

import dataclasses
import math

import mlflow
import pytest
import torch
from conftest import TINY_RUN, Recorder, run_cli
from tiny_checkpoints import ARCHS, build_causal_lm, build_classifier

from ppo_exp.config import ConfigError, LoraSettings, ModelConfig, PPOConfig
from ppo_exp.ppo import hardware
from ppo_exp.ppo.loading import SoftmaxSampling
from ppo_exp.ppo.packing import Packing, balanced_bins
from ppo_exp.ppo.replay import Replay, drop_gradients
from ppo_exp.ppo.trainer import PPOTrainer, train

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
SMOKE = dict(
    iterations=2, batch_size=8, num_minibatches=2, max_new_tokens=8, eval_every=0,
    eval_prompts=8, sample_every=0,
)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, base_model_path):
    """{"llama-bf16": dir, ..., "classifier": dir}: every family, saved in bf16 and fp32."""
    root = tmp_path_factory.mktemp("checkpoints")
    found = {
        f"{arch}-{name}": build_causal_lm(arch, dtype, root / f"{arch}-{name}", base_model_path)
        for arch in ARCHS
        for name, dtype in DTYPES.items()
    }
    found["classifier"] = build_classifier(root / "classifier")
    return found


def config(path, **overrides) -> PPOConfig:
    model = {k: overrides.pop(k) for k in list(overrides) if k in ModelConfig.__annotations__}
    return PPOConfig(
        **{**SMOKE, **overrides}, model=ModelConfig(name="tiny", path=str(path), **model)
    )


# --- every family, both precisions, through the real command -------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(("precision", "value_model"), [("bf16", "shared"), ("fp32", "separate")])
def test_every_family_trains_through_the_command(
    tmp_path, mlflow_uri, checkpoints, precision, value_model
):
    # One multirun over the 5 families saved in `precision`, on CPU (dtype auto = float32
    # there: bf16 checkpoints are upcast), with a classifier reward that has its own
    # tokenizer and chat template scoring prompt + response.
    paths = ",".join(str(checkpoints[f"{arch}-{precision}"]) for arch in ARCHS)
    result = run_cli(
        "-m", f"model.path={paths}", "model.name=null", f"model.value_model={value_model}",
        "reward=classifier", f"reward.path={checkpoints['classifier']}", "reward.text=full",
        *TINY_RUN, "iterations=1", "hydra.sweep.dir=multirun", cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    mlflow.set_tracking_uri(mlflow_uri)
    runs = [
        r for r in mlflow.search_runs(experiment_names=["ppo_exp"], output_format="list")
        if r.data.tags["ppo_exp.kind"] == "run"
    ]
    assert len(runs) == len(ARCHS)
    for run in runs:
        assert run.info.status == "FINISHED"
        assert run.data.metrics["rollout/response_length"] > 0
        assert math.isfinite(run.data.metrics["loss/total"])


@pytest.mark.slow
@pytest.mark.parametrize("value_model", ["separate", "shared"])
def test_bf16_compute_on_cpu_trains(checkpoints, value_model):
    # Autocast to bf16 on the CPU: the value head meets bf16 hidden states.
    final = train(config(checkpoints["mistral-bf16"], dtype="bfloat16", value_model=value_model))
    assert math.isfinite(final["loss/total"]) and final["rollout/response_length"] > 0


# --- sampling matches the log-probs ---------------------------------------------------------


@pytest.mark.slow
def test_checkpoint_sampling_extras_are_ignored(checkpoints):
    # The Qwen2 checkpoint's generation_config carries repetition_penalty=1.3,
    # min_new_tokens=6 and top_k=20: none of it may reach sampling.
    trainer = PPOTrainer(config(checkpoints["qwen2-fp32"], ppo_epochs=1, num_minibatches=1))
    tok = trainer.tokenizer
    enc = tok([p.text for p in trainer.train_prompts[:8]], return_tensors="pt", padding=True)
    torch.manual_seed(5)
    out = trainer.model.policy.generate(
        **enc, logits_processor=trainer.sampler.sampling,
        output_scores=True, output_logits=True, return_dict_in_generate=True,
    )
    torch.manual_seed(5)  # the same uniforms again: the only random numbers drawn
    picked = out.sequences[:, enc.input_ids.shape[1]:]
    for t, (scores, logits) in enumerate(zip(out.scores, out.logits, strict=True)):
        # the token picked is the best of logits / temperature + Gumbel noise, nothing
        # else added: a sample from exactly softmax(logits / temperature)
        gumbel = -torch.rand(logits.shape).log().neg().log()
        assert torch.allclose(scores, logits / trainer.cfg.temperature + gumbel)
        running = picked[:, t] != tok.pad_token_id
        assert torch.equal(scores.argmax(-1)[running], picked[running, t])
    # both stop tokens of the checkpoint end a response: <|im_end|> and the eos
    assert set(trainer.stop_ids.tolist()) == {
        tok.convert_tokens_to_ids("<|im_end|>"), tok.eos_token_id,
    }
    recorder = Recorder()
    trainer.cfg = dataclasses.replace(trainer.cfg, lr=1e-12)
    trainer.train([recorder])
    assert recorder.metrics[1]["policy/ratio"] == pytest.approx(1.0, abs=1e-6)
    assert recorder.metrics[1]["policy/approx_kl"] == pytest.approx(0.0, abs=1e-7)


def test_softmax_sampling_draws_from_the_tempered_softmax():
    # argmax of SoftmaxSampling's scores, drawn 200,000 times per row, against the
    # probabilities softmax(logits / temperature) it is meant to sample from
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, -float("inf")], [0.0, 0.0, 3.0, 0.5, -2.0]])
    temperature, draws = 0.7, 200_000
    sampling = SoftmaxSampling(temperature)
    torch.manual_seed(0)
    picks = sampling(None, logits.repeat_interleave(draws, 0)).argmax(-1).view(2, draws)
    counts = torch.stack([torch.bincount(row, minlength=5) for row in picks]).double()
    expected = torch.softmax(logits.double() / temperature, -1)
    torch.testing.assert_close(counts / draws, expected, atol=5e-3, rtol=0)  # ~4.5 sd
    assert counts[0, 4] == 0  # a zero-probability token is never drawn


@pytest.mark.slow
def test_stop_tokens_override_and_unknown_token(checkpoints):
    trainer = PPOTrainer(config(checkpoints["qwen2-fp32"], stop_tokens=["<|im_end|>"]))
    assert trainer.stop_ids.tolist() == [trainer.tokenizer.convert_tokens_to_ids("<|im_end|>")]
    with pytest.raises(ConfigError, match="stop_tokens"):
        PPOTrainer(config(checkpoints["qwen2-fp32"], stop_tokens=["<|not_a_token|>"]))


# --- device and dtype -----------------------------------------------------------------------


def test_device_auto_is_cpu_without_cuda_and_cuda_with_it():
    assert hardware.resolve_device("auto", cuda_available=False) == torch.device("cpu")
    assert hardware.resolve_device("auto", cuda_available=True) == torch.device("cuda")
    assert hardware.resolve_device("cpu", cuda_available=True) == torch.device("cpu")
    with pytest.raises(ConfigError, match="model.device='cuda'.*CUDA is not available"):
        hardware.resolve_device("cuda", cuda_available=False)
    with pytest.raises(ConfigError, match="model.device='tpu'"):
        hardware.resolve_device("tpu", cuda_available=False)


def test_dtype_auto_is_float32_on_cpu_and_unsupported_dtypes_are_refused(monkeypatch):
    cpu = torch.device("cpu")
    assert hardware.resolve_dtype("auto", cpu) == torch.float32
    assert hardware.resolve_dtype("float32", cpu) == torch.float32
    # this CPU runs bf16 (emulated where it lacks native support): accepted as asked
    assert hardware.resolve_dtype("bfloat16", cpu) == torch.bfloat16
    # a device that cannot run bf16 gets the documented one-line error, naming what it runs
    monkeypatch.setattr(
        hardware, "dtype_runs", lambda dtype, device: dtype == torch.float32
    )
    with pytest.raises(ConfigError) as info:
        hardware.resolve_dtype("bfloat16", cpu)
    assert str(info.value) == (
        "invalid config: model.dtype='bfloat16'; accepted: auto or one this cpu runs: float32"
    )


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_gpu_everything_lives_on_cuda_in_bf16(checkpoints):
    trainer = PPOTrainer(config(checkpoints["qwen2-bf16"], lora=LoraSettings()))
    assert trainer.device.type == "cuda" and trainer.dtype == torch.bfloat16
    assert all(p.device.type == "cuda" for p in trainer.model.parameters())
    rollout = trainer.rollout(trainer.train_prompts[:8])
    assert rollout.scores.device.type == "cuda" and rollout.logprobs.dtype == torch.float32
    final = trainer.train()
    assert math.isfinite(final["loss/total"])


# --- LoRA -----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("value_model", ["shared", "separate"])
def test_lora_reference_is_the_base_model_and_only_adapters_train(checkpoints, value_model):
    from transformers import AutoModelForCausalLM

    from ppo_exp.ppo import losses

    path = checkpoints["llama-fp32"]
    trainer = PPOTrainer(config(
        path, lora=LoraSettings(r=4), value_model=value_model, gradient_checkpointing=True,
    ))
    rollout = trainer.rollout(trainer.train_prompts[:8])
    base = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    T = rollout.response.shape[1]
    with torch.no_grad():
        logits = base(
            input_ids=rollout.input_ids, attention_mask=rollout.attention_mask,
            position_ids=rollout.position_ids,
        ).logits[:, -T - 1 : -1]
    expected = losses.logprobs_from_logits(logits / trainer.cfg.temperature, rollout.response)
    assert torch.allclose(rollout.ref_logprobs, expected, atol=1e-5)
    # a reference with its adapters disabled needs no second copy of the weights
    assert trainer.ref.model is None

    frozen = {n: p.detach().clone() for n, p in trainer.model.named_parameters()
              if not p.requires_grad}
    rewards = trainer.token_rewards(rollout)
    advantages, returns = trainer.advantages(rollout, rewards)
    trainer.update(rollout, advantages, returns)
    with_grad = {n for n, p in trainer.model.named_parameters() if p.grad is not None}
    assert with_grad and all("lora_" in n or n.startswith("value_head") for n in with_grad)
    assert any("lora_B" in n for n in with_grad)
    for name, param in trainer.model.named_parameters():
        if name in frozen:
            assert torch.equal(param, frozen[name]), name


@pytest.mark.slow
def test_a_lora_run_learns(base_model_path):
    # The embedded task with LoRA adapters on the tiny review model: reward rises.
    recorder = Recorder()
    cfg = PPOConfig(
        iterations=6, batch_size=32, eval_every=6, eval_prompts=64, sample_every=0, lr=5e-3,
        model=ModelConfig(lora=LoraSettings(r=8, alpha=16)),
    )
    final = train(cfg, [recorder])
    base = recorder.metrics[0]["eval/reward_mean"]
    # 0.09 -> 0.35 with transformers 5.24 / peft 0.21 (0.11 -> 0.67 with the versions of
    # the session that wrote it: sampling streams differ between versions). The held-out
    # mean over 64 responses varies by about 0.05 between draws, so 0.15 is ~3 of those.
    assert final["eval/reward_mean"] > base + 0.15, (base, final["eval/reward_mean"])


# --- micro-batches --------------------------------------------------------------------------


def test_dropped_gradients_start_the_next_backward_afresh():
    trained, other = torch.nn.Linear(3, 2), torch.nn.Linear(3, 1)
    x = torch.randn(4, 3)

    def backward():
        (trained(x).sum() + other(x).square().sum()).backward()

    backward()
    first = [p.grad.clone() for p in trained.parameters()]
    others = [p.grad.clone() for p in other.parameters()]
    drop_gradients(list(trained.parameters()))
    assert all(p.grad is None for p in trained.parameters())
    backward()
    for p, grad in zip(trained.parameters(), first, strict=True):
        assert torch.equal(p.grad, grad)  # written afresh, not added to the last
    for p, grad in zip(other.parameters(), others, strict=True):
        assert torch.equal(p.grad, 2 * grad)  # not in the list: accumulated as usual


@pytest.mark.slow
def test_micro_batch_gradients_sum_to_the_minibatch_gradient(checkpoints):
    trainer = PPOTrainer(config(checkpoints["gpt2-fp32"], batch_size=8, max_new_tokens=12))
    rollout = trainer.rollout(trainer.train_prompts[:8])
    rewards = trainer.token_rewards(rollout)
    advantages, returns = trainer.advantages(rollout, rewards)
    rows = torch.arange(8)

    def gradient(micro):
        replay = trainer.replay  # reads the micro-batch size from its own config
        replay.cfg = dataclasses.replace(replay.cfg, micro_batch_size=micro)
        stats = replay.gradients(rollout, rows, advantages, returns)
        stats = {name: float(value) for name, value in stats.items()}
        return stats, [p.grad.clone() for group in trainer.replay.groups for p in group]

    whole_stats, whole = gradient(None)
    for micro in (1, 3):  # 3 leaves a smaller last micro-batch
        stats, grads = gradient(micro)
        for a, b in zip(whole, grads, strict=True):
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-7)
        assert stats == pytest.approx(whole_stats, rel=1e-5, abs=1e-7)


@pytest.mark.slow
@pytest.mark.parametrize("several", [False, True], ids=["row-each", "several-rows"])
@pytest.mark.parametrize("arch", [*ARCHS, "gpt2-shared"])
def test_a_packed_minibatch_gives_the_padded_losses_and_gradients(checkpoints, arch, several):
    """pack_minibatches=true: the real tokens packed into short sequences, every family."""
    shared = arch.endswith("-shared")
    trainer = PPOTrainer(config(
        checkpoints[arch.removesuffix("-shared") + "-fp32"], batch_size=8, max_new_tokens=12,
        value_model="shared" if shared else "separate",
    ))
    rollout = trainer.rollout(trainer.train_prompts[:8])
    row_lengths = rollout.attention_mask.sum(1)  # prompt + response, no padding
    # sequences of up to twice the longest row hold several rows; of 1 token, one each
    trainer.model.pack_width = 2 * int(row_lengths.max()) if several else 1
    advantages, returns = trainer.advantages(rollout, trainer.token_rewards(rollout))
    rows = torch.arange(8)
    assert rollout.attention_mask.sum() < rollout.attention_mask.numel()  # padding to leave out

    def loss_and_gradients(pack: bool):
        replay = Replay(dataclasses.replace(trainer.cfg, pack_minibatches=pack), trainer.model,
                        device=trainer.device, dtype=trainer.dtype)
        stats = replay.gradients(rollout, rows, advantages, returns)
        grads = [p.grad.clone() for group in replay.groups for p in group]
        return {name: float(value) for name, value in stats.items()}, grads

    padded_stats, padded = loss_and_gradients(False)
    shapes = []  # what the policy was run on
    hook = trainer.model.policy.register_forward_pre_hook(
        lambda module, args, kwargs: shapes.append(tuple(kwargs["input_ids"].shape)),
        with_kwargs=True,
    )
    try:
        packed_stats, packed = loss_and_gradients(True)
    finally:
        hook.remove()
    [(sequences, width)] = shapes
    if several:  # fewer, fuller sequences, about the packing width, little filler
        assert sequences <= 5 and width <= 4 / 3 * trainer.model.pack_width
        assert sequences * width < 1.2 * int(row_lengths.sum())
    else:  # a row per sequence, as long as the longest row
        assert (sequences, width) == (8, int(row_lengths.max()))
    assert packed_stats == pytest.approx(padded_stats, rel=1e-4, abs=1e-6)
    for a, b in zip(padded, packed, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-5)


def test_balanced_bins_are_as_few_as_first_fit_needs_and_evenly_filled():
    bins = balanced_bins([5, 2, 9, 4, 3, 7], capacity=10)  # first fit: 9 | 7+3 | 5+4 | 2
    assert bins == [[2], [5], [0, 1], [3, 4]]  # 9 | 7 | 5+2 | 4+3: longest first, emptiest
    assert balanced_bins([12, 3], capacity=10) == [[0], [1]]  # too long: its own
    assert balanced_bins([3, 3, 3], capacity=10) == [[0, 1, 2]]


def test_packing_places_each_rows_real_tokens_together_and_restarts_positions():
    real = torch.tensor([[0, 1, 1, 1, 0], [1, 1, 0, 0, 0], [0, 0, 1, 1, 1]], dtype=torch.bool)
    layout = Packing.of(real, capacity=5)  # rows of 3, 2, 3: [3 + 2] and [3]
    assert (layout.bins, layout.width) == (2, 5)
    tokens = torch.arange(15).view(3, 5)
    assert layout.pack(tokens, fill=-1).tolist() == [[1, 2, 3, 5, 6], [12, 13, 14, -1, -1]]
    positions = (real.long().cumsum(1) - 1).clamp(min=0)
    assert layout.pack(positions).tolist() == [[0, 1, 2, 0, 1], [0, 1, 2, 0, 0]]


@pytest.mark.slow
def test_same_seed_same_metrics_with_micro_batches_and_rollout_chunks(checkpoints):
    def run(**chunks):
        recorder = Recorder()
        train(config(checkpoints["qwen2-fp32"], **chunks), [recorder])
        return {s: {k: v for k, v in m.items() if not k.startswith("perf/")}
                for s, m in recorder.metrics.items()}

    whole = run()
    chunked = run(micro_batch_size=1, rollout_micro_batch=3)
    assert whole.keys() == chunked.keys()
    for step in whole:
        # Clip fractions count tokens past a threshold: a token at the boundary may flip
        # with float rounding, so they agree to a few tokens in 128; the rest to 1e-4.
        counts = {k for k in whole[step] if k.endswith("clipfrac")}
        same = {k: v for k, v in whole[step].items() if k not in counts}
        assert {k: chunked[step][k] for k in same} == pytest.approx(same, rel=1e-4, abs=1e-6)
        for key in counts:
            assert chunked[step][key] == pytest.approx(whole[step][key], abs=0.02), key


# --- the memory estimator -------------------------------------------------------------------


def test_memory_estimate_counts_what_each_option_saves(checkpoints, capsys):
    from ppo_exp import memory

    def total(**model):
        cfg = config(checkpoints["qwen2-bf16"], **model)
        return dict(memory.estimate(cfg, compute_dtype="float32", prompt_tokens=16))

    full = total()
    assert full["reference"] == full["policy weights"]  # float32 copies on the CPU
    shared = total(value_model="shared")
    lora = total(value_model="shared", lora=LoraSettings(r=4), gradient_checkpointing=True)
    assert sum(full.values()) > sum(shared.values()) > sum(lora.values())
    assert lora["reference"] == 0 and lora["AdamW moments (float32)"] < 0.1 * sum(
        v for k, v in shared.items() if k.startswith("AdamW")
    )
    memory.main([f"model.path={checkpoints['qwen2-bf16']}", "lora=default"])
    assert "total" in capsys.readouterr().out


def test_the_reference_and_the_critic_are_copied_on_the_device_not_on_the_host(
    monkeypatch, base_model_path
):
    # Each model moves to its device as soon as it is loaded, so that on a GPU the host
    # never holds the policy, its reference copy and the critic's trunk at once. The meta
    # device stands in for the GPU: it holds shapes only.
    import copy

    from ppo_exp.ppo.loading import build_models
    from ppo_exp.task.base_model import load_tokenizer

    copied_from = []
    deepcopy = copy.deepcopy

    def recording_deepcopy(obj, *args, **kwargs):
        if isinstance(obj, torch.nn.Module):
            copied_from.append({p.device.type for p in obj.parameters()})
        return deepcopy(obj, *args, **kwargs)

    monkeypatch.setattr(copy, "deepcopy", recording_deepcopy)
    built = build_models(
        PPOConfig(model=ModelConfig(value_model="separate")), load_tokenizer(base_model_path),
        device=torch.device("meta"), dtype=torch.float32,
    )
    assert len(copied_from) >= 2  # the reference and the critic's trunk at least
    assert all(devices == {"meta"} for devices in copied_from)
    models = (built.actor_critic, built.reference.model)
    assert {p.device.type for model in models for p in model.parameters()} == {"meta"}
