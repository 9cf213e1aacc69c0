"""Prompt datasets (data=hf): local jsonl and parquet files, chat templates, the length filter,
and the model/data checks that run before any weights load."""

from __future__ import annotations

import json

import mlflow
import pandas as pd
import pytest
from conftest import TINY_RUN, run_cli
from mlflow.tracking import MlflowClient
from tiny_checkpoints import build_causal_lm, build_classifier

from ppo_exp import model_checks
from ppo_exp.config import ConfigError, DataConfig, LoraSettings, ModelConfig, PPOConfig
from ppo_exp.data import load_prompts
from ppo_exp.task.base_model import load_tokenizer

LONG = "the pasta was " * 20  # about 60 tokens: over any limit below
SHORT = [f"review number {i} of the shop" for i in range(40)]


@pytest.fixture(scope="module")
def qwen(tmp_path_factory, base_model_path):
    """A tiny Qwen2 with a ChatML template, pad == eos, saved in bf16."""
    import torch

    return build_causal_lm(
        "qwen2", torch.bfloat16, tmp_path_factory.mktemp("qwen") / "qwen", base_model_path
    )


@pytest.fixture
def jsonl(tmp_path):
    path = tmp_path / "prompts.jsonl"
    rows = [{"prompt": p, "id": i} for i, p in enumerate([*SHORT, LONG, LONG])]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


@pytest.fixture
def parquet(tmp_path):
    path = tmp_path / "chats.parquet"
    chats = [
        [{"role": "system", "content": "be kind"}, {"role": "user", "content": p},
         {"role": "assistant", "content": "an old answer, dropped"}]
        for p in [*SHORT, LONG]
    ]
    pd.DataFrame({"messages": chats}).to_parquet(path)
    return path


def data(**kwargs) -> DataConfig:
    return DataConfig(**{"name": None, "kind": "hf", **kwargs})


def test_jsonl_plain_prompts_are_split_filtered_and_counted(jsonl, base_model_path):
    tok = load_tokenizer(base_model_path)
    cfg = data(path=str(jsonl), max_prompt_tokens=20, eval_fraction=0.25)
    prompts = load_prompts(cfg, tok, seed=0, eval_prompts=50)  # cycles the held-out split
    assert prompts.dropped == 2 and not prompts.templated  # the tiny model has no template
    assert len(prompts.train) + len({p.text for p in prompts.eval}) == len(SHORT)
    assert {p.text for p in prompts.train}.isdisjoint(p.text for p in prompts.eval)
    assert prompts.longest <= 20
    # the train split's order follows the run's seed; the held-out split does not move
    other = load_prompts(cfg, tok, seed=1, eval_prompts=50)
    assert [p.text for p in other.train] != [p.text for p in prompts.train]
    assert sorted(p.text for p in other.train) == sorted(p.text for p in prompts.train)
    assert other.eval == prompts.eval


def test_chat_messages_get_the_template_with_the_generation_prompt(parquet, qwen):
    tok = load_tokenizer(qwen)
    cfg = data(path=str(parquet), messages_column="messages", max_prompt_tokens=60)
    prompts = load_prompts(cfg, tok, seed=0, eval_prompts=2)
    assert prompts.templated and prompts.dropped == 1
    text = prompts.train[0].text
    assert text.startswith("<|im_start|>system\nbe kind<|im_end|>\n<|im_start|>user\n")
    assert text.endswith("<|im_end|>\n<|im_start|>assistant\n")  # the generation prompt
    assert "old answer" not in text
    assert [m["role"] for m in prompts.train[0].chat] == ["system", "user"]


@pytest.mark.parametrize(
    "kwargs,key",
    [
        (dict(prompt_column="text"), "data.prompt_column"),
        (dict(train_split="validation"), "data.train_split"),
        (dict(eval_split="test"), "data.eval_split"),
        (dict(chat_template="true"), "data.chat_template"),
        (dict(messages_column="prompt"), "data.messages_column"),
        (dict(max_prompt_tokens=2), "data.max_prompt_tokens"),
    ],
)
def test_data_mistakes_name_the_key(jsonl, base_model_path, kwargs, key):
    with pytest.raises(ConfigError) as info:
        load_prompts(data(path=str(jsonl), **kwargs), load_tokenizer(base_model_path),
                     seed=0, eval_prompts=2)
    assert info.value.key == key


@pytest.mark.slow
def test_parquet_chat_run_with_a_chat_reward_model_through_the_command(
    tmp_path, mlflow_uri, parquet, qwen
):
    classifier = build_classifier(tmp_path / "classifier")
    result = run_cli(
        f"model.path={qwen}", "model.name=null", "data=hf", f"data.path={parquet}",
        "data.messages_column=messages", "data.max_prompt_tokens=60",
        "reward=classifier", f"reward.path={classifier}", "reward.text=full",
        *TINY_RUN, "sample_every=1", "hydra.run.dir=outputs/run", cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    mlflow.set_tracking_uri(mlflow_uri)
    (run,) = mlflow.search_runs(experiment_names=["ppo_exp"], output_format="list")
    assert run.data.metrics["data/prompts_dropped"] == 1
    assert run.data.params["data"] == str(parquet)
    samples = MlflowClient().download_artifacts(run.info.run_id, "samples/step_0001.json")
    table = json.loads(open(samples).read())
    prompt = table["data"][0][table["columns"].index("prompt")]
    assert prompt.endswith("<|im_start|>assistant\n")  # as the model saw it


def test_reward_full_text_uses_the_reward_models_chat_template(tmp_path):
    from ppo_exp.config import RewardConfig
    from ppo_exp.task.rewards import chat_tokenizer, full_texts

    classifier = build_classifier(tmp_path / "classifier")
    tok = chat_tokenizer(RewardConfig(kind="classifier", path=str(classifier), text="full"))
    chat = ({"role": "user", "content": "how was it?"},)
    (text,) = full_texts(["<policy template>how was it?"], [chat], ["great"], tok)
    assert text == "[user\nhow was it?]\n[assistant\ngreat]\n"
    assert full_texts(["p: "], [chat], ["great"], None) == ["p: great"]  # no template


# --- checks before any model loads ---------------------------------------------------------


def config(**model) -> PPOConfig:
    return PPOConfig(model=ModelConfig(name="x", **model))


def test_missing_paths_are_config_errors(tmp_path, qwen):
    with pytest.raises(ConfigError, match="model.path=.*does not exist"):
        model_checks.check(config(path=str(tmp_path / "nope")))
    with pytest.raises(ConfigError, match="model.value_model=.*does not exist"):
        model_checks.check(config(path=str(qwen), value_model="./no/critic"))
    cfg = PPOConfig(data=data(path=str(tmp_path / "missing.jsonl")))
    with pytest.raises(ConfigError, match="data.path="):
        model_checks.check(cfg)


def test_prompt_budget_beyond_the_models_positions(qwen):
    cfg = config(path=str(qwen))  # 128 positions
    cfg.data = data(path="x.jsonl", max_prompt_tokens=120)
    cfg.max_new_tokens = 24
    with pytest.raises(ConfigError) as info:
        model_checks.check(cfg)
    assert info.value.key == "max_new_tokens" and "at most 8" in str(info.value)
    assert "128 positions" in str(info.value)


def test_lora_target_modules_must_exist(qwen):
    cfg = config(path=str(qwen), lora=LoraSettings(target_modules=["q_proj", "qkv"]))
    with pytest.raises(ConfigError) as info:
        model_checks.check(cfg)
    assert info.value.key == "model.lora.target_modules" and "q_proj" in str(info.value)
    model_checks.check(config(path=str(qwen), lora=LoraSettings(target_modules=["q_proj"])))


def test_critic_checkpoint_must_share_the_policys_tokens(tmp_path, qwen):
    classifier = build_classifier(tmp_path / "classifier")  # another tokenizer
    with pytest.raises(ConfigError, match="model.value_model=.*policy's tokenizer"):
        model_checks.check(config(path=str(qwen), value_model=str(classifier)))


def test_a_reward_reading_tokens_must_have_the_policys_tokenizer(tmp_path, qwen):
    from transformers import AutoTokenizer

    from ppo_exp.config import RewardConfig

    classifier = build_classifier(tmp_path / "classifier")  # another tokenizer
    cfg = config(path=str(qwen))
    cfg.reward = RewardConfig(kind="classifier", path=str(classifier), input="tokens")
    with pytest.raises(ConfigError, match="reward.input='tokens'.*another vocabulary"):
        model_checks.check(cfg)
    cfg.reward.input = "text"  # re-tokenised text: any tokenizer
    model_checks.check(cfg)
    AutoTokenizer.from_pretrained(qwen).save_pretrained(classifier)  # now the policy's
    cfg.reward.input = "tokens"
    model_checks.check(cfg)


def test_unknown_model_and_data_keys_fail_in_one_line(tmp_path):
    result = run_cli("train=smoke", "+model.value_path=x", cwd=tmp_path)
    assert result.returncode == 2
    assert "invalid config: model.value_path='x'" in result.stderr
    assert "Traceback" not in result.stderr
