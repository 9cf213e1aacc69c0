"""The default model: cache mechanics (on a seconds-long recipe) and the real model's quality."""

from __future__ import annotations

import dataclasses
import logging
import statistics

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from ppo_exp.task import base_model
from ppo_exp.task.base_model import load_causal_lm, tiny_model_path
from ppo_exp.task.prompts import generate_reviews, make_prompts

QUICK = dict(vocab_size=300, n_layer=1, n_embd=32, n_head=2, corpus_size=200, steps=3)


@pytest.fixture
def quick_recipe(monkeypatch):
    """Swap in a recipe that builds in about a second, so cache tests exercise the real build."""
    recipe = dataclasses.replace(base_model.RECIPE, **QUICK)
    monkeypatch.setattr(base_model, "RECIPE", recipe)
    return recipe


def test_build_saves_a_loadable_model_and_tokenizer(tmp_path, quick_recipe, caplog):
    with caplog.at_level(logging.INFO, logger="ppo_exp"):
        path = tiny_model_path(tmp_path)
    assert path.parent == tmp_path and path.name.startswith("tiny-reviews-")
    assert list(tmp_path.iterdir()) == [path]  # no temporary build directory left behind
    assert str(path) in caplog.text
    model, tokenizer = load_causal_lm(path)
    assert model.config.n_layer == 1 and not model.training
    assert tokenizer.padding_side == "left"
    assert tokenizer.eos_token == "<|eos|>" and tokenizer.pad_token == "<|pad|>"
    assert tokenizer.pad_token_id != tokenizer.eos_token_id


def test_a_build_leaves_the_callers_random_state_as_it_was(tmp_path, quick_recipe):
    # a run that builds the model must sample as one that finds it cached
    torch.manual_seed(1234)
    expected = torch.rand(3)
    torch.manual_seed(1234)
    tiny_model_path(tmp_path)  # builds: seeds the generator and draws from it
    assert torch.equal(torch.rand(3), expected)


def test_cache_is_reused(tmp_path, quick_recipe, monkeypatch):
    first = tiny_model_path(tmp_path)

    def fail(*args):
        raise AssertionError("rebuilt a cached model")

    monkeypatch.setattr(base_model, "_build_and_save", fail)
    assert tiny_model_path(tmp_path) == first


def test_changing_the_recipe_changes_the_cache_directory(tmp_path, quick_recipe, monkeypatch):
    first = tiny_model_path(tmp_path)
    monkeypatch.setattr(base_model, "RECIPE", dataclasses.replace(quick_recipe, steps=4))
    second = tiny_model_path(tmp_path)
    assert first != second and first.is_dir() and second.is_dir()


def test_interrupted_build_leaves_no_cache(tmp_path, quick_recipe, monkeypatch):
    def interrupted(out_dir, recipe):
        (out_dir / "config.json").write_text("{")  # half-written
        raise KeyboardInterrupt

    monkeypatch.setattr(base_model, "_build_and_save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        tiny_model_path(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_concurrent_build_keeps_the_first_finished(tmp_path, quick_recipe, monkeypatch):
    real_build_and_save = base_model._build_and_save

    def build_while_another_process_finishes(out_dir, recipe):
        real_build_and_save(out_dir, recipe)
        target = tmp_path / f"tiny-reviews-{base_model._recipe_hash(recipe)}"
        target.mkdir()
        (target / "winner").write_text("the other worker")

    monkeypatch.setattr(base_model, "_build_and_save", build_while_another_process_finishes)
    path = tiny_model_path(tmp_path)
    assert (path / "winner").exists()
    assert list(tmp_path.iterdir()) == [path]


def test_load_causal_lm_uses_eos_as_pad_when_the_tokenizer_has_none(tmp_path, caplog):
    tokenizer = base_model._train_tokenizer(generate_reviews(50, seed=0), vocab_size=300)
    no_pad = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer.backend_tokenizer, eos_token="<|eos|>"
    )
    assert no_pad.pad_token is None
    config = GPT2Config(vocab_size=len(no_pad), n_positions=32, n_embd=16, n_layer=1, n_head=2)
    GPT2LMHeadModel(config).save_pretrained(tmp_path)
    no_pad.save_pretrained(tmp_path)
    with caplog.at_level(logging.WARNING, logger="ppo_exp"):
        model, loaded = load_causal_lm(tmp_path)
    assert loaded.pad_token == loaded.eos_token == "<|eos|>"
    assert loaded.padding_side == "left"
    assert not model.training
    assert "no pad token" in caplog.text


@pytest.fixture(scope="module")
def default_model(base_model_path):
    return load_causal_lm(base_model_path)


@pytest.fixture(scope="module")
def eval_samples(default_model):
    """Continuations of the eval prompts, sampled as the PPO rollouts will sample them."""
    model, tokenizer = default_model
    torch.manual_seed(0)
    prompts = tokenizer(make_prompts(128, split="eval"), return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(
            **prompts, do_sample=True, temperature=0.7, top_k=0, top_p=1.0, max_new_tokens=24
        )
    return out[:, prompts["input_ids"].shape[1] :]


@pytest.mark.slow
def test_default_model_size_and_settings(default_model):
    model, tokenizer = default_model
    assert 500_000 <= model.num_parameters() <= 1_500_000
    config = model.config
    assert (config.n_layer, config.n_embd, config.n_head, config.n_positions) == (4, 128, 4, 64)
    assert config.resid_pdrop == config.embd_pdrop == config.attn_pdrop == 0.0
    assert 512 <= len(tokenizer) <= 1024
    assert config.eos_token_id == tokenizer.eos_token_id != tokenizer.pad_token_id


@pytest.mark.slow
def test_tokenizer_round_trips_reviews(default_model):
    _, tokenizer = default_model
    for review in generate_reviews(20, seed=7):
        ids = tokenizer(review + tokenizer.eos_token)["input_ids"]
        assert ids[-1] == tokenizer.eos_token_id
        assert tokenizer.decode(ids, skip_special_tokens=True) == review


@pytest.mark.slow
def test_samples_are_readable_and_mostly_end_with_eos(default_model, eval_samples):
    _, tokenizer = default_model
    ends = (eval_samples == tokenizer.eos_token_id).any(dim=1).float().mean().item()
    assert ends >= 0.8
    texts = tokenizer.batch_decode(eval_samples, skip_special_tokens=True)
    assert all("Ġ" not in text and "<|" not in text for text in texts)
    assert sum(text.strip().endswith(".") for text in texts) >= 0.8 * len(texts)


@pytest.mark.slow
def test_samples_are_neutral_on_average(default_model, eval_samples):
    _, tokenizer = default_model
    analyzer = SentimentIntensityAnalyzer()
    texts = tokenizer.batch_decode(eval_samples, skip_special_tokens=True)
    scores = [analyzer.polarity_scores(text)["compound"] for text in texts]
    assert abs(statistics.mean(scores)) <= 0.15
    assert min(scores) < -0.5 and max(scores) > 0.5  # both signs, so PPO has a signal
