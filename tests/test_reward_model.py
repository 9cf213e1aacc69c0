"""Reward models from preferences (ppo_exp.reward_model) and the gold/proxy pipeline.

Fast tests check the maths by hand; slow ones train for real: a known answer (the
longer text wins), a chat-formatted jsonl file through the real command, and the whole
offline pipeline (preferences -> reward model -> PPO against it with VADER as gold).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import torch
from conftest import TINY_RUN, run_cli
from mlflow.tracking import MlflowClient

from ppo_exp import analysis
from ppo_exp.config import ConfigError, GoldConfig, PPOConfig, RewardConfig
from ppo_exp.reward_model.config import PreferencesConfig, RewardModelConfig
from ppo_exp.reward_model.loss import (
    annotate,
    bradley_terry_loss,
    normalisation,
    preference_accuracy,
)
from ppo_exp.reward_model.preferences import as_text
from ppo_exp.reward_model.train import Pairs, train_reward_model

CONF = Path(__file__).parents[1] / "conf"

# -- the maths, by hand ------------------------------------------------------------------


def test_bradley_terry_loss_by_hand():
    chosen = torch.tensor([2.0, 0.0, 1.0], requires_grad=True)
    rejected = torch.tensor([0.0, 0.0, 3.0])
    loss = bradley_terry_loss(chosen, rejected)
    # -log sigmoid(2) = log(1 + e^-2) = 0.126928; -log sigmoid(0) = log 2 = 0.693147;
    # -log sigmoid(-2) = log(1 + e^2) = 2.126928. Mean: 2.947003 / 3 = 0.982334.
    assert loss.item() == pytest.approx(0.982334, abs=1e-6)
    loss.backward()
    # d/d chosen_i = -(1 - sigmoid(gap_i)) / 3: -(0.119203, 0.5, 0.880797) / 3
    torch.testing.assert_close(chosen.grad, -torch.tensor([0.119203, 0.5, 0.880797]) / 3)
    # a huge wrong margin stays finite (logsigmoid, not log(sigmoid))
    assert bradley_terry_loss(torch.tensor([-200.0]), torch.tensor([0.0])).item() == 200.0


def test_preference_accuracy_counts_ties_as_wrong():
    chosen, rejected = torch.tensor([1.0, 0.0, 2.0, 5.0]), torch.tensor([0.0, 0.0, 3.0, 1.0])
    assert preference_accuracy(chosen, rejected) == 0.5


def test_annotator_without_temperature_or_noise_follows_the_gold_score():
    gold_a, gold_b = torch.tensor([0.5, -0.2, 0.9]), torch.tensor([0.1, 0.3, 0.8])
    g = torch.Generator().manual_seed(0)
    prefers_a = annotate(gold_a, gold_b, temperature=0.0, label_noise=0.0, generator=g)
    assert prefers_a.tolist() == [True, False, True]


def test_annotator_rates_match_bradley_terry_and_the_label_noise():
    n = 40_000
    gap = 0.1 * math.log(3)  # sigmoid(gap / 0.1) = 3 / 4
    gold_a, gold_b = torch.full((n,), gap), torch.zeros(n)
    g = torch.Generator().manual_seed(0)
    rate = annotate(gold_a, gold_b, temperature=0.1, label_noise=0.0, generator=g).float().mean()
    assert rate.item() == pytest.approx(0.75, abs=0.01)
    # with label noise 0.2 on top: 0.75 * 0.8 + 0.25 * 0.2 = 0.65
    rate = annotate(gold_a, gold_b, temperature=0.1, label_noise=0.2, generator=g).float().mean()
    assert rate.item() == pytest.approx(0.65, abs=0.01)


def test_normalisation_by_hand():
    scores = torch.tensor([1.0, 2.0, 3.0, 4.0])  # mean 2.5, population std sqrt(1.25)
    gain, bias = normalisation(scores)
    assert gain == pytest.approx(1 / math.sqrt(1.25)) and bias == pytest.approx(
        -2.5 / math.sqrt(1.25)
    )
    normalised = gain * scores + bias
    assert normalised.mean().item() == pytest.approx(0, abs=1e-6)
    assert normalised.std(unbiased=False).item() == pytest.approx(1, abs=1e-6)
    assert normalisation(torch.tensor([3.0, 3.0])) == (1.0, -3.0)


def test_gao_rl_fit_recovers_alpha_and_beta_by_hand():
    # Gao et al.'s RL form, gain = d (0.4 - 0.2 log d): zero slope where
    # 0.4 - 0.2 log d - 0.2 = 0, i.e. log d* = 1, d* = e (KL e^2 = 7.39)
    d = [0.0, 0.5, 1.0, 2.0, 3.0]
    gain = [0.0, 0.5 * (0.4 + 0.2 * math.log(2)), 0.4, 2 * (0.4 - 0.2 * math.log(2)),
            3 * (0.4 - 0.2 * math.log(3))]  # fmt: skip
    assert analysis.fit_gao(d, gain) == (pytest.approx(0.4), pytest.approx(0.2))
    assert analysis.gao_peak(0.4, 0.2) == pytest.approx(math.e)
    assert analysis.gao_curve(d, 0.4, 0.2).tolist() == pytest.approx(gain)
    assert math.isnan(analysis.gao_peak(0.4, -0.1))  # beta <= 0: it never turns down
    assert all(math.isnan(v) for v in analysis.fit_gao([0.0, 1.0], [0.0, 0.3]))


def test_gao_best_of_n_fit_recovers_alpha_and_beta_by_hand():
    d = [0.0, 0.5, 1.0, 2.0, 3.0]
    gain = [x * (0.4 - 0.1 * x) for x in d]  # peak at d* = 0.4 / 0.2 = 2, KL 4
    assert analysis.fit_gao(d, gain, form="bon") == (pytest.approx(0.4), pytest.approx(0.1))
    assert analysis.gao_peak(0.4, 0.1, form="bon") == pytest.approx(2)
    alpha, beta = analysis.fit_gao(d, gain)  # the RL form cannot draw this parabola
    assert analysis.gao_curve(d, alpha, beta).tolist() != pytest.approx(gain, abs=1e-3)
    with pytest.raises(ValueError, match="form must be one of"):
        analysis.fit_gao(d, gain, form="ppo")


def test_gao_fits_and_summary_per_configuration_by_hand():
    import pandas as pd

    d = [0.0, 1.0, 2.0, 3.0]
    rl = analysis.gao_curve(d, 0.4, 0.2).tolist()  # peak at d* = e: KL e^2 = 7.39 < 9
    rows = [
        {"run_id": label, "label": label, "step": step, "kl": x * x, "d": x,
         "gold": 0.1 + gain, "gold_gain": gain, "proxy": 2 * x, "proxy_gain": 2 * x}
        for label, gains in (("rl", rl), ("rising", analysis.gao_curve(d, 0.3, -0.05).tolist()))
        for step, (x, gain) in enumerate(zip(d, gains, strict=True))
    ]  # fmt: skip
    fits = analysis.gao_fits(pd.DataFrame(rows)).set_index("label")
    assert fits.loc["rl", ["alpha", "beta"]].tolist() == pytest.approx([0.4, 0.2])
    assert fits.loc["rl", "kl_peak_fit"] == pytest.approx(math.e**2)
    assert fits.loc["rl", "fit_rmse"] == pytest.approx(0, abs=1e-12)
    assert fits.loc["rl", "gold_peak"] == pytest.approx(0.1 + rl[3])  # still rising at d = 3
    assert fits.loc["rising", "beta"] == pytest.approx(-0.05)
    assert math.isnan(fits.loc["rising", "kl_peak_fit"])  # beta < 0: no peak
    summary = analysis.overoptimisation_summary(
        fits.reset_index(), pd.DataFrame(columns=["target", "param", "rho", "p_value", "n"])
    )
    assert "peaked before the last eval in 0 of them" in summary
    assert "turns down in 1 of them, at a median KL of 7.39 nats; in 1 of them before" in summary


def test_chat_messages_become_one_text():
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello!"}]

    class NoTemplate:
        chat_template = None

    assert as_text(messages, NoTemplate()) == "user: hi\nassistant: hello!"
    assert as_text("plain", NoTemplate()) == "plain"
    with pytest.raises(TypeError, match="chat messages"):
        as_text(3, NoTemplate())


def test_bad_settings_name_the_key():
    with pytest.raises(ConfigError, match=r"preferences\.label_noise=0\.7; accepted"):
        RewardModelConfig(preferences=PreferencesConfig(label_noise=0.7))
    with pytest.raises(ConfigError, match=r"preferences\.path=None"):
        RewardModelConfig(preferences=PreferencesConfig(source="dataset"))
    with pytest.raises(ConfigError, match=r"reward\.gold\.path=None"):
        GoldConfig(kind="classifier")
    assert PPOConfig(reward=RewardConfig(gold=GoldConfig())).reward.gold.kind == "vader"


@pytest.mark.parametrize("option", ["embedded", "dataset"])
def test_every_preferences_preset_composes(option):
    from hydra import compose, initialize_config_dir

    from ppo_exp.reward_model.config import to_config

    overrides = [f"preferences={option}"] + (["preferences.path=p.jsonl"] * (option == "dataset"))
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = to_config(compose(config_name="reward_model", overrides=overrides))
    assert cfg.preferences.source == option and cfg == RewardModelConfig(
        preferences=cfg.preferences
    )


# -- training for real -------------------------------------------------------------------


@pytest.mark.slow
def test_learns_that_the_longer_text_wins(base_model_path):
    from ppo_exp.task.prompts import generate_reviews

    # each review against a shorter text: a prefix of another review, of half its length
    # (without punctuation, so that a cut sentence does not give the answer away)
    reviews = [r.replace(".", "").replace(",", "") for r in generate_reviews(600, seed=1)]
    longer, shorter = reviews[:300], []
    for text, other in zip(longer, reviews[300:], strict=True):
        shorter.append(" ".join(other.split()[: max(1, len(text.split()) // 2)]))
    train, test = Pairs(longer[:200], shorter[:200]), Pairs(longer[200:], shorter[200:])
    cfg = RewardModelConfig(epochs=2, batch_size=16, lr=1e-3)
    cfg.normalise.samples = 0
    logged = []
    _, _, metrics = train_reward_model(
        cfg, train, test, base=str(base_model_path), log_metrics=lambda m, s: logged.append(s)
    )
    assert logged == [1, 2]
    assert metrics["eval/accuracy"] >= 0.95, metrics


def test_a_gpt2_reward_model_trains_with_its_gelu_as_one_kernel(base_model_path):
    # The GPT-2 base model's `gelu_new` (five Python-level ops) trains as
    # `gelu_pytorch_tanh`, the same formula in one kernel, as the policy's does; the base
    # checkpoint is left as it was, and the config `save_pretrained` writes records it.
    from transformers import AutoConfig
    from transformers.activations import ACT2FN

    assert AutoConfig.from_pretrained(base_model_path).activation_function == "gelu_new"
    cfg = RewardModelConfig(epochs=1, batch_size=2)
    cfg.normalise.samples = 0
    pairs = Pairs(["a great film", "loved it"], ["dull", "a bad film"])
    model, _, _ = train_reward_model(
        cfg, pairs, pairs, base=str(base_model_path), log_metrics=lambda m, s: None
    )
    assert model.config.activation_function == "gelu_pytorch_tanh"
    one_kernel = type(ACT2FN["gelu_pytorch_tanh"])
    assert {type(block.mlp.act) for block in model.transformer.h} == {one_kernel}
    assert AutoConfig.from_pretrained(base_model_path).activation_function == "gelu_new"


@pytest.mark.slow
def test_the_critic_can_start_from_the_reward_model(tmp_path, mlflow_uri, base_model_path):
    from transformers import AutoModelForSequenceClassification

    from ppo_exp.config import ModelConfig
    from ppo_exp.ppo.loading import build_models
    from ppo_exp.task.base_model import load_tokenizer

    # a reward model, trained briefly on pairs that differ, saved as the app saves it
    train = Pairs(["a great stay, lovely staff"] * 8, ["awful, dirty room"] * 8)
    cfg = RewardModelConfig(epochs=1, batch_size=8, lr=1e-3)
    cfg.normalise.samples = 0
    model, tokenizer, _ = train_reward_model(
        cfg, train, train, base=str(base_model_path), log_metrics=lambda m, s: None
    )
    model.save_pretrained(tmp_path / "rm")
    tokenizer.save_pretrained(tmp_path / "rm")

    # model.value_model=<rm>: the critic's trunk holds the reward model's trunk, not the
    # policy's; the value head starts at zero (the reward model's score head is not reused)
    ppo_cfg = PPOConfig(model=ModelConfig(value_model=str(tmp_path / "rm")))
    built = build_models(
        ppo_cfg, load_tokenizer(base_model_path), device=torch.device("cpu"), dtype=torch.float32
    )
    critic = built.actor_critic.critic.state_dict()
    rm_trunk = AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm").base_model
    policy_trunk = built.actor_critic.policy.base_model.state_dict()
    assert critic.keys() == rm_trunk.state_dict().keys()
    assert all(torch.equal(critic[k], v) for k, v in rm_trunk.state_dict().items())
    assert not all(torch.equal(critic[k], policy_trunk[k]) for k in critic)
    assert not built.actor_critic.value_head.weight.any()

    # and through the real command: PPO on the reward model whose critic starts from it
    args = [*TINY_RUN, "reward=learned", "reward.path=rm", "model.value_model=rm"]
    result = run_cli(*args, "+reward@reward.gold=vader", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    mlflow.set_tracking_uri(mlflow_uri)
    (run,) = mlflow.search_runs(
        experiment_names=["ppo_exp"],
        filter_string="tags.`ppo_exp.kind` = 'run'",
        output_format="list",
    )
    metrics = run.data.metrics
    assert math.isfinite(metrics["loss/value"]) and "eval/gold_mean" in metrics


def _chat(text: str) -> list[dict]:
    return [{"role": "user", "content": "review the hotel"}, {"role": "assistant", "content": text}]


@pytest.mark.slow
def test_a_jsonl_file_of_chat_pairs_trains(tmp_path, mlflow_uri, base_model_path):
    good = ["the room was lovely and the staff were great", "a wonderful stay, truly superb"]
    bad = ["the room was dirty and the staff were rude", "an awful stay, truly terrible"]
    with open(tmp_path / "pairs.jsonl", "w") as f:
        for i in range(40):
            row = {"chosen": _chat(good[i % 2]), "rejected": _chat(bad[i % 2]), "id": i}
            f.write(json.dumps(row) + "\n")
    argv = ["preferences=dataset", "preferences.path=pairs.jsonl", "epochs=2", "batch_size=8"]
    argv += ["normalise.samples=8", "normalise.max_new_tokens=6", "out=rm"]
    result = subprocess.run(
        [sys.executable, "-m", "ppo_exp.reward_model", *argv],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    mlflow.set_tracking_uri(mlflow_uri)
    (run,) = mlflow.search_runs(experiment_names=["ppo_exp"], output_format="list")
    assert run.info.status == "FINISHED" and run.data.tags["ppo_exp.kind"] == "reward_model"
    assert run.data.params["preferences.path"] == "pairs.jsonl"
    assert run.data.metrics["data/train_pairs"] == 36  # 10% held out
    history = MlflowClient().get_metric_history(run.info.run_id, "eval/accuracy")
    assert [m.step for m in history] == [1, 2]
    from transformers import AutoConfig

    saved = AutoConfig.from_pretrained(tmp_path / "rm")
    assert saved.num_labels == 1 and saved.reward_normalisation["gain"] > 0
    first = json.loads(
        (tmp_path / "rm" / "preferences" / "train.jsonl").read_text().splitlines()[0]
    )
    assert first["chosen"][0] == {"role": "user", "content": "review the hotel"}


@pytest.mark.slow
def test_the_offline_pipeline_end_to_end(tmp_path, mlflow_uri, base_model_path):
    # 1-2. preferences built from the default model, labelled by VADER; the reward model
    rm = ["preferences.pairs=48", "preferences.max_new_tokens=8", "epochs=1", "out=rm"]
    rm += ["normalise.samples=16", "normalise.max_new_tokens=8"]
    result = subprocess.run(
        [sys.executable, "-m", "ppo_exp.reward_model", *rm],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    pairs = (tmp_path / "rm" / "preferences" / "train.jsonl").read_text().splitlines()
    row = json.loads(pairs[0])
    assert len(pairs) + 10 == 48 and row["gold_chosen"] != row["gold_rejected"]

    # 3. PPO against it, two kl_coef, with VADER as the gold measured at every eval
    ppo = ["-m", "kl_coef=0.01,0.2", *TINY_RUN, "eval_every=1", "reward=learned"]
    ppo += ["reward.path=rm", "+reward@reward.gold=vader"]
    result = run_cli(*ppo, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    mlflow.set_tracking_uri(mlflow_uri)
    client = MlflowClient()
    runs = mlflow.search_runs(
        experiment_names=["ppo_exp"],
        filter_string="tags.`ppo_exp.kind` = 'run'",
        output_format="list",
    )
    assert len(runs) == 2
    for run in runs:
        assert run.data.params["gold"] == "vader" and run.data.params["reward"] == "rm"
        for name in ("eval/reward_mean", "eval/gold_mean"):
            assert [m.step for m in client.get_metric_history(run.info.run_id, name)] == [0, 1, 2]
        gold = run.data.metrics["eval/gold_mean"]
        assert -1 <= gold <= 1 and gold != run.data.metrics["eval/reward_mean"]

    # 4. the over-optimisation notebook on that sweep
    notebook = analysis.execute_notebook(
        "overoptimisation", {"tracking_uri": mlflow_uri}, cwd=tmp_path
    )
    texts = [o.get("text", "") for c in notebook.cells for o in c.get("outputs", [])]
    kinds = [k for c in notebook.cells for o in c.get("outputs", []) for k in o.get("data", {})]
    assert "2 runs, 2 with a gold curve" in "".join(texts)
    assert kinds.count("image/png") == 1
    assert texts[-1].startswith("2 configurations; the gold reward peaked")


def test_a_missing_preferences_file_is_refused_in_one_line(tmp_path):
    argv = ["preferences=dataset", "preferences.path=nowhere.jsonl"]
    result = subprocess.run(
        [sys.executable, "-m", "ppo_exp.reward_model", *argv],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2
    assert "invalid config: preferences.path='nowhere.jsonl'" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "mlflow.db").exists()
