"""Tests for ppo_exp.task.rewards: the vader, user-function and classifier scorers."""

from __future__ import annotations

import sys
import textwrap

import pytest
import torch

from ppo_exp.config import ConfigError, RewardConfig
from ppo_exp.task import rewards
from ppo_exp.task.rewards import build_reward

# --- vader -------------------------------------------------------------------------------


def test_vader_scores_sentiment_as_float32_vector():
    score = build_reward(RewardConfig(kind="vader"))
    texts = [
        "This movie was wonderful, I loved it and the acting was great!",
        "Terrible film. Awful, boring and a complete waste of time.",
        "The film is ninety minutes long.",
    ]
    scores = score(texts)
    assert scores.shape == (3,) and scores.dtype == torch.float32
    assert scores[0] > 0.5
    assert scores[1] < -0.5
    assert -1 <= scores[2] <= 1


def test_vader_empty_batch():
    scores = build_reward(RewardConfig(kind="vader"))([])
    assert scores.shape == (0,) and scores.dtype == torch.float32


# --- user function -----------------------------------------------------------------------

USER_MODULE = '''
import math

import numpy as np
import torch

NOT_CALLABLE = 3


def length_bonus(texts):
    return [len(t) / 10 for t in texts]


def as_numpy(texts):
    return np.array([float(len(t)) for t in texts], dtype=np.float64)


def as_tensor(texts):
    return torch.tensor([float(len(t)) for t in texts], dtype=torch.float64)


def too_few(texts):
    return [1.0] * (len(texts) - 1)


def with_nan(texts):
    return [1.0, math.nan, math.inf][: len(texts)]


def not_numbers(texts):
    return ["good" for _ in texts]


def two_dimensional(texts):
    return [[1.0, 2.0] for _ in texts]


class Scorers:
    @staticmethod
    def constant(texts):
        return [0.5] * len(texts)
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """Write USER_MODULE as `user_rewards.py` on sys.path; forget it after the test."""
    (tmp_path / "user_rewards.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "user_rewards"
    sys.modules.pop("user_rewards", None)


def _function(spec: str):
    return build_reward(RewardConfig(kind="function", function=spec))


@pytest.mark.parametrize("fn", ["length_bonus", "as_numpy", "as_tensor"])
def test_function_scores_any_sequence_type(user_module, fn):
    texts = ["abcd", "", "a" * 25]
    scores = _function(f"{user_module}:{fn}")(texts)
    lengths = torch.tensor([4.0, 0.0, 25.0])
    expected = lengths / 10 if fn == "length_bonus" else lengths
    assert scores.dtype == torch.float32 and scores.shape == (3,)
    torch.testing.assert_close(scores, expected)


def test_function_dotted_attribute(user_module):
    scores = _function(f"{user_module}:Scorers.constant")(["a", "b"])
    torch.testing.assert_close(scores, torch.tensor([0.5, 0.5]))


def test_function_module_in_working_directory_is_importable(tmp_path, monkeypatch):
    (tmp_path / "cwd_rewards.py").write_text("def one(texts):\n    return [1.0] * len(texts)\n")
    # Drop '' (which would already mean "the cwd") so the scorer has to add the dir itself.
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != ""])
    monkeypatch.chdir(tmp_path)
    try:
        scores = _function("cwd_rewards:one")(["x", "y"])
    finally:
        sys.modules.pop("cwd_rewards", None)
    torch.testing.assert_close(scores, torch.tensor([1.0, 1.0]))


def _assert_names_setting(message: str, spec: str) -> None:
    assert "reward.function" in message
    assert repr(spec) in message


@pytest.mark.parametrize("spec", [None, "no_colon", "a:b:c", ":fn", "mod:"])
def test_function_malformed_spec(spec):
    with pytest.raises(ValueError) as excinfo:
        _function(spec)
    assert "reward.function" in str(excinfo.value) and "module:function" in str(excinfo.value)


def test_function_module_not_found():
    spec = "no_such_reward_module_xyz:fn"
    with pytest.raises(ValueError, match="was not found") as excinfo:
        _function(spec)
    _assert_names_setting(str(excinfo.value), spec)


def test_function_missing_dependency_inside_module_is_not_hidden(tmp_path, monkeypatch):
    (tmp_path / "broken_rewards.py").write_text("import no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="no_such_dependency_xyz"):
        _function("broken_rewards:fn")


def test_function_attribute_not_found(user_module):
    spec = f"{user_module}:no_such_function"
    with pytest.raises(ValueError, match="has no attribute 'no_such_function'") as excinfo:
        _function(spec)
    _assert_names_setting(str(excinfo.value), spec)


def test_function_not_callable(user_module):
    spec = f"{user_module}:NOT_CALLABLE"
    with pytest.raises(ConfigError, match="not callable") as excinfo:
        _function(spec)
    _assert_names_setting(str(excinfo.value), spec)


def test_function_wrong_number_of_scores(user_module):
    spec = f"{user_module}:too_few"
    score = _function(spec)
    with pytest.raises(ValueError, match="returned 2 scores for 3 texts") as excinfo:
        score(["a", "b", "c"])
    _assert_names_setting(str(excinfo.value), spec)


def test_function_non_finite_score_names_index_and_text(user_module):
    spec = f"{user_module}:with_nan"
    score = _function(spec)
    with pytest.raises(ValueError, match="non-finite") as excinfo:
        score(["fine text", "the offending text", "also bad"])
    message = str(excinfo.value)
    _assert_names_setting(message, spec)
    assert "index 1" in message and "the offending text" in message
    assert "2 of 3" in message


@pytest.mark.parametrize("fn", ["not_numbers", "two_dimensional"])
def test_function_output_not_a_flat_sequence_of_numbers(user_module, fn):
    spec = f"{user_module}:{fn}"
    score = _function(spec)
    with pytest.raises(TypeError) as excinfo:
        score(["a", "b"])
    _assert_names_setting(str(excinfo.value), spec)


# --- classifier --------------------------------------------------------------------------

CORPUS = [
    "the movie was great and i loved it",
    "the movie was awful and i hated it",
    "a fine film with a good story",
    "boring plot bad acting",
]
MAX_POSITIONS = 16


def _save_tiny_classifier(directory, special_tokens: str) -> None:
    """Save a tiny word-level tokenizer and a random 2-class GPT-2 classifier to `directory`.

    Args:
        directory: where both are saved (a `from_pretrained` dir).
        special_tokens: "pad" (has [PAD] and [EOS]), "eos" (only [EOS], so eos must be the
            pad) or "none" (neither, so the scorer must add a pad token).
    """
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import GPT2Config, GPT2ForSequenceClassification, PreTrainedTokenizerFast

    words = sorted({word for sentence in CORPUS for word in sentence.split()})
    specials = {"pad": ["[UNK]", "[PAD]", "[EOS]"], "eos": ["[UNK]", "[EOS]"], "none": ["[UNK]"]}
    vocab = {token: i for i, token in enumerate(specials[special_tokens] + words)}
    backend = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = Whitespace()
    names = {"pad_token": "[PAD]", "eos_token": "[EOS]"}
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        model_max_length=MAX_POSITIONS,
        **{k: v for k, v in names.items() if v in vocab},
    )
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(vocab), n_positions=MAX_POSITIONS, n_embd=16, n_layer=2, n_head=2,
        num_labels=2, pad_token_id=vocab.get("[PAD]"),
    )
    GPT2ForSequenceClassification(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)


# Texts of every padding length in one batch, and one longer than the model (truncated).
SCORED = [
    "great movie",
    "the movie was awful and i hated it",
    "boring",
    "a fine film with a good story unknownword",
    " ".join(["good"] * (MAX_POSITIONS + 10)),
]


def _reference_logits(directory, texts: list[str], label: int) -> torch.Tensor:
    """The saved model's own logit for `label`, one unpadded text at a time."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForSequenceClassification.from_pretrained(directory).eval()
    logits = []
    with torch.no_grad():
        for text in texts:
            ids = tokenizer(text, return_tensors="pt").input_ids[:, :MAX_POSITIONS]
            logits.append(model(input_ids=ids).logits[0, label])
    return torch.stack(logits)


@pytest.mark.parametrize("special_tokens", ["pad", "eos", "none"])
def test_classifier_scores_are_the_label_logit(tmp_path, monkeypatch, special_tokens):
    directory = tmp_path / "tiny-classifier"
    _save_tiny_classifier(directory, special_tokens)
    # Small batches so one call spans several, with different padding in each.
    monkeypatch.setattr(rewards, "CLASSIFIER_BATCH_SIZE", 2)
    texts = SCORED
    score = build_reward(RewardConfig(kind="classifier", path=str(directory), label=1))
    scores = score(texts)
    assert scores.shape == (len(texts),) and scores.dtype == torch.float32
    torch.testing.assert_close(scores, _reference_logits(directory, texts, label=1))
    assert score([]).shape == (0,)


@pytest.mark.parametrize("reward_input", ["text", "tokens"])
def test_a_gpt2_classifier_scores_with_its_gelu_as_one_kernel(tmp_path, monkeypatch, reward_input):
    # GPT-2's `gelu_new` (five Python-level ops) runs as `gelu_pytorch_tanh`, as the
    # policy's does; the scores stay the checkpoint's own logits (the test above and the
    # next compare them at float32 tolerance).
    from transformers import AutoConfig

    directory = tmp_path / "tiny-classifier"
    _save_tiny_classifier(directory, "pad")
    assert AutoConfig.from_pretrained(directory).activation_function == "gelu_new"
    scored_by, label_logits = [], rewards.label_logits

    def recording(model, label, batches):
        scored_by.append(model.config.activation_function)
        return label_logits(model, label, batches)

    monkeypatch.setattr(rewards, "label_logits", recording)
    config = RewardConfig(kind="classifier", path=str(directory), label=1, input=reward_input)
    score = build_reward(config)
    if reward_input == "text":
        score(SCORED)
    else:
        score(torch.tensor([[3, 4, 5]]), torch.ones(1, 3, dtype=torch.long))
    assert scored_by == ["gelu_pytorch_tanh"]


@pytest.mark.parametrize("special_tokens", ["pad", "eos", "none"])
def test_classifier_reading_tokens_scores_each_row_as_if_alone(
    tmp_path, monkeypatch, special_tokens
):
    # reward.input=tokens: (ids, mask) with padding on either side and junk ids under the
    # mask give each row's own logit, as `_reference_logits` computes it one text at a time.
    from transformers import AutoTokenizer

    directory = tmp_path / "tiny-classifier"
    _save_tiny_classifier(directory, special_tokens)
    monkeypatch.setattr(rewards, "CLASSIFIER_BATCH_SIZE", 2)
    texts = SCORED
    rows = [AutoTokenizer.from_pretrained(directory)(t).input_ids for t in texts]
    width = max(map(len, rows)) + 3
    ids = torch.full((len(rows), width), 1)  # a real token id: the mask alone says padding
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):
        start = width - len(row) if i % 2 == 0 else 1  # left-padded, or padded both sides
        ids[i, start:start + len(row)], mask[i, start:start + len(row)] = torch.tensor(row), 1
    config = RewardConfig(kind="classifier", path=str(directory), label=1, input="tokens")
    score = build_reward(config)
    scores = score(ids, mask)
    assert scores.shape == (len(texts),) and scores.dtype == torch.float32
    torch.testing.assert_close(scores, _reference_logits(directory, texts, label=1))
    assert score(ids[:0], mask[:0]).shape == (0,)


def test_what_a_scorer_reading_tokens_is_handed():
    # prompt + response columns for text=full, the response's columns alone otherwise;
    # texts (through `scored_texts`) for input=text
    from ppo_exp.data import Prompt
    from ppo_exp.ppo.rollout import reward_inputs

    ids = torch.arange(10).reshape(2, 5)
    mask = torch.tensor([[0, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
    prompts = [Prompt(text="p1 ", chat=()), Prompt(text="p2 ", chat=())]
    kwargs = dict(prompts=prompts, texts=["a", "b"], input_ids=ids, attention_mask=mask,
                  response_columns=3, chat=None)
    full = RewardConfig(kind="classifier", path="clf", text="full", input="tokens")
    got_ids, got_mask = reward_inputs(**kwargs, reward=full)
    assert torch.equal(got_ids, ids) and torch.equal(got_mask, mask)
    response = RewardConfig(kind="classifier", path="clf", input="tokens")
    got_ids, got_mask = reward_inputs(**kwargs, reward=response)
    assert torch.equal(got_ids, ids[:, 2:]) and torch.equal(got_mask, mask[:, 2:])
    text = RewardConfig(kind="classifier", path="clf", text="full")
    assert reward_inputs(**kwargs, reward=text) == (["p1 a", "p2 b"],)


@pytest.mark.parametrize("label", [2, -1])
def test_classifier_label_out_of_range(tmp_path, label):
    directory = tmp_path / "tiny-classifier"
    _save_tiny_classifier(directory, "pad")
    with pytest.raises(ValueError, match=r"reward\.label") as excinfo:
        build_reward(RewardConfig(kind="classifier", path=str(directory), label=label))
    assert "2 labels" in str(excinfo.value) and "[0, 1]" in str(excinfo.value)


def test_classifier_needs_path():
    with pytest.raises(ValueError, match=r"reward\.path"):
        build_reward(RewardConfig(kind="classifier"))


@pytest.mark.parametrize("kind,value", [("vader", "tokens"), ("classifier", "ids")])
def test_only_a_classifier_reads_tokens(kind, value):
    with pytest.raises(ConfigError, match=rf"reward\.input='{value}'.*'text', or 'tokens'"):
        RewardConfig(kind=kind, path="clf", input=value)


def test_unknown_kind():
    with pytest.raises(ValueError, match=r"reward\.kind"):
        build_reward(RewardConfig(kind="llm-judge"))


def test_classifier_applies_the_stored_normalisation(tmp_path):
    directory = tmp_path / "tiny-classifier"
    _save_tiny_classifier(directory, "pad")
    texts = ["great movie", "boring plot bad acting"]
    config = RewardConfig(kind="classifier", path=str(directory), label=0)
    raw = build_reward(config)(texts)
    from transformers import AutoConfig

    stored = AutoConfig.from_pretrained(directory)
    stored.reward_normalisation = {"gain": 2.0, "bias": -0.5}
    stored.save_pretrained(directory)
    torch.testing.assert_close(build_reward(config)(texts), 2.0 * raw - 0.5)
