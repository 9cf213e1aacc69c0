"""Pluggable reward scorers: a list of texts in, one float32 score per text out (or,
for a classifier with ``reward.input=tokens``, the policy's token ids in).

`build_reward(cfg.reward)` turns a `RewardConfig` into a `Scorer`, selected by `reward.kind`:

- ``vader``: the VADER sentiment compound score, in [-1, 1] (no model download needed).
- ``function``: a user function ``"module:function"`` taking ``list[str]`` and returning one
  number per text. The current working directory is importable, so a ``my_rewards.py`` next
  to where the run is launched works as ``reward.function=my_rewards:length_bonus``.
- ``classifier``: a Hugging Face sequence-classification model (local dir or hub id in
  ``reward.path``); the score is the logit of class ``reward.label``. A reward model
  trained by ``python -m ppo_exp.reward_model`` stores a gain and bias in its config
  (``reward_normalisation``) and is scored as ``gain * logit + bias``: mean 0, std 1 on
  the policy's own samples (the ``learned`` preset: ``reward=learned reward.path=DIR``).

Which strings are scored (``reward.text``: the response alone, or prompt + response) is
decided by the caller, the trainer; a scorer just scores whatever texts it is given. With
``reward.input=tokens`` a classifier reads the policy's token ids instead of decoded text
(`TokenScorer`): no decoding and re-tokenising, and exactly the tokens the policy sampled.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import torch

from ppo_exp.checks import import_function
from ppo_exp.config import ConfigError, RewardConfig

Scorer = Callable[[list[str]], torch.Tensor]
# (B, L) token ids and (B, L) attention mask (any padding, left or right) -> (B,) scores
TokenScorer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# Texts per classifier forward pass: bounds peak memory for large rollout batches.
CLASSIFIER_BATCH_SIZE = 64


def build_reward(
    cfg: RewardConfig, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> Scorer | TokenScorer:
    """Build the scorer selected by `cfg.kind`; any model or function is loaded once, here.

    Args:
        cfg: the reward section of the run config.
        device: where a classifier runs (`model.device`).
        dtype: a classifier's weights' dtype (`model.dtype`, resolved).

    Returns:
        A callable mapping a list of N texts to a float32 CPU tensor of shape (N,); with
        `cfg.input == "tokens"`, (N, L) token ids and attention mask to the same.

    Raises:
        ConfigError: the function or classifier named cannot be used.
        TypeError: the `reward.function` target is not callable.
    """
    if cfg.kind == "vader":
        return _vader_scorer()
    if cfg.kind == "function":
        return _function_scorer(cfg.function)
    # `cfg` is validated: kind is classifier
    return _classifier_scorer(
        cfg.path, cfg.label, device=device, dtype=dtype, tokens=cfg.input == "tokens"
    )


# --- vader -------------------------------------------------------------------------------


def _vader_scorer() -> Scorer:
    """VADER compound sentiment per text, in [-1, 1]."""
    # Imported lazily so the other reward kinds work without vaderSentiment installed.
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    # Building the analyzer parses its lexicon files; do it once, not per batch.
    analyzer = SentimentIntensityAnalyzer()

    def score(texts: list[str]) -> torch.Tensor:
        compounds = [analyzer.polarity_scores(text)["compound"] for text in texts]
        return torch.tensor(compounds, dtype=torch.float32)

    return score


# --- user function -----------------------------------------------------------------------


def _function_scorer(spec: str | None) -> Scorer:
    """Wrap the user function named by `spec` so its output is checked on every call."""
    fn = import_function(spec)

    def score(texts: list[str]) -> torch.Tensor:
        return _check_scores(fn(texts), texts, spec)

    return score


def _check_scores(scores: object, texts: list[str], spec: str | None) -> torch.Tensor:
    """Convert a user function's output to a float32 (N,) tensor, or explain what is wrong.

    Args:
        scores: what the function returned (list, numpy array or tensor expected).
        texts: the texts it was given, to check the length and name a bad entry.
        spec: the `reward.function` setting, for the error messages.

    Returns:
        The scores as a float32 CPU tensor of shape (len(texts),).

    Raises:
        TypeError: the output is not a flat sequence of numbers.
        ValueError: the output has the wrong length or a non-finite score.
    """
    prefix = f"reward.function={spec!r}"
    expected = f"a sequence of {len(texts)} finite floats (list, numpy array or tensor)"
    try:
        if isinstance(scores, torch.Tensor):
            tensor = scores.detach().to(device="cpu", dtype=torch.float32)
        else:
            tensor = torch.as_tensor(scores, dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TypeError(
            f"{prefix} returned {type(scores).__name__}, which is not numeric; "
            f"accepted: {expected}"
        ) from exc
    if tensor.ndim != 1:
        raise TypeError(
            f"{prefix} returned shape {tuple(tensor.shape)}; accepted: {expected}"
        )
    if len(tensor) != len(texts):
        raise ValueError(
            f"{prefix} returned {len(tensor)} scores for {len(texts)} texts; "
            f"accepted: {expected}"
        )
    bad = (~torch.isfinite(tensor)).nonzero().flatten()
    if len(bad):
        index = int(bad[0])
        raise ValueError(
            f"{prefix} returned a non-finite score {tensor[index].item()} at index {index} "
            f"(text {texts[index][:40]!r}); {len(bad)} of {len(texts)} scores are "
            f"non-finite; accepted: {expected}"
        )
    return tensor


# --- classifier --------------------------------------------------------------------------


def _classifier_scorer(
    path: str, label: int, *, device: str | torch.device, dtype: torch.dtype, tokens: bool
) -> Scorer | TokenScorer:
    """Score texts by the logit of class `label` of the sequence classifier at `path`.

    Args:
        path: a local model dir or a Hugging Face hub id.
        label: index of the class whose logit is the score.
        device, dtype: where the classifier runs, and its weights' dtype.
        tokens: score the policy's token ids (`token_scorer`) rather than texts.

    Returns:
        The scorer; it runs the model in eval mode, without autograd, in batches.

    Raises:
        ConfigError: `label` is not a class index of the model.
    """
    # Imported lazily: transformers is slow to import and only this kind needs it.
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from ppo_exp.task.base_model import fused_kernels

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(
        path, dtype=dtype, **fused_kernels(path)  # GPT-2's GELU as one kernel, as the policy's
    ).to(device)
    num_labels = model.config.num_labels
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < num_labels:
        raise ConfigError(
            "reward.label", label,
            f"an integer in [0, {num_labels - 1}]: the classifier at reward.path={path!r} "
            f"has {num_labels} labels",
        )
    ensure_pad_token(tokenizer, model)
    if tokens:
        return token_scorer(model, label=label, max_length=max_length_of(tokenizer, model))
    return model_scorer(model, tokenizer, label=label)


def model_scorer(model, tokenizer, *, label: int, max_length: int | None = None) -> Scorer:
    """Score texts by the logit of class `label` of a loaded sequence classifier.

    Args:
        model: the classifier (put in eval mode here); its config's stored
            `reward_normalisation`, if any, is applied: gain * logit + bias.
        tokenizer: its tokenizer, with a pad token (`ensure_pad_token`).
        label: index of the class whose logit is the score.
        max_length: tokens per text; None = the longest the tokenizer and model accept.

    Returns:
        The scorer; it runs without autograd, in batches of `CLASSIFIER_BATCH_SIZE`.
    """
    model.eval()
    max_length = max_length or max_length_of(tokenizer, model)
    gain, bias = stored_normalisation(model.config)

    def score(texts: list[str]) -> torch.Tensor:
        batches = (
            tokenizer(
                list(texts[start:start + CLASSIFIER_BATCH_SIZE]),
                padding=True, truncation=True, max_length=max_length, return_tensors="pt",
            )
            for start in range(0, len(texts), CLASSIFIER_BATCH_SIZE)
        )
        return gain * label_logits(model, label, batches) + bias

    return score


def token_scorer(model, *, label: int, max_length: int | None) -> TokenScorer:
    """Score token ids by the logit of class `label` of a loaded sequence classifier.

    Each row's real tokens (attention mask 1) are moved to its start and the rest filled
    with the classifier's pad id: every row then has the positions it would have alone
    (as `model_scorer`'s right-padded texts do) and decoder classifiers pool its last real
    token. Rows are cut to `max_length` tokens, as texts are truncated.

    Args:
        model: the classifier, whose `config.pad_token_id` is set (`ensure_pad_token`);
            its stored `reward_normalisation`, if any, is applied.
        label: index of the class whose logit is the score.
        max_length: tokens per row; None = no limit.
    """
    model.eval()
    gain, bias = stored_normalisation(model.config)
    pad = model.config.pad_token_id

    def score(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if len(input_ids) == 0:
            return torch.zeros(0, dtype=torch.float32)
        real = attention_mask.bool()
        first_real = torch.argsort((~real).to(torch.uint8), dim=1, stable=True)
        ids, mask = input_ids.gather(1, first_real), real.gather(1, first_real)
        width = min(int(mask.sum(1).max()), max_length or ids.shape[1])
        ids, mask = ids[:, :width].masked_fill(~mask[:, :width], pad), mask[:, :width]
        size = CLASSIFIER_BATCH_SIZE
        batches = (
            {"input_ids": i, "attention_mask": m.long()}
            for i, m in zip(ids.split(size), mask.split(size), strict=True)
        )
        return gain * label_logits(model, label, batches) + bias

    return score


@torch.inference_mode()
def label_logits(model, label: int, batches: Iterable[Mapping]) -> torch.Tensor:
    """The logit of class `label` for every row of `batches` (the model's inputs, one
    mapping per forward pass, moved to its device), as one float32 CPU tensor."""
    chunks = [
        model(**{k: v.to(model.device) for k, v in batch.items()}).logits[:, label].float().cpu()
        for batch in batches
    ]
    return torch.cat(chunks) if chunks else torch.zeros(0, dtype=torch.float32)


def stored_normalisation(config) -> tuple[float, float]:
    """The (gain, bias) a reward-model checkpoint stores in its config; (1, 0) if none.

    `python -m ppo_exp.reward_model` saves them as `reward_normalisation` so that
    gain * logit + bias has mean 0 and std 1 on the policy's own samples
    (lm-human-preferences' reward normalisation).
    """
    stored = getattr(config, "reward_normalisation", None) or {}
    return float(stored.get("gain", 1.0)), float(stored.get("bias", 0.0))


def ensure_pad_token(tokenizer, model) -> None:
    """Give the tokenizer a pad token (on the right) and tell the model its id, for batches.

    Decoder-only classifiers (GPT-2 style) pool the last non-pad token, so the model must
    know the pad id; many such tokenizers ship without one. Reusing eos keeps the
    vocabulary unchanged; a new [PAD] token is added only when there is no eos either
    (its embedding is never read: padded positions are masked and not pooled).
    """
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        else:
            tokenizer.add_special_tokens({"pad_token": "[PAD]"})
            if len(tokenizer) > model.get_input_embeddings().num_embeddings:
                model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    # Right padding: every text keeps the positions it has alone. With left padding a
    # decoder numbers the pads too, so a score would depend on the longest text in its batch.
    tokenizer.padding_side = "right"


def max_length_of(tokenizer, model) -> int | None:
    """The longest input both the tokenizer and the model's position table accept."""
    limits = [tokenizer.model_max_length, getattr(model.config, "max_position_embeddings", None)]
    # Tokenizers without a configured limit report a huge sentinel (int(1e30)).
    limits = [n for n in limits if isinstance(n, int) and 0 < n < 1_000_000]
    return min(limits) if limits else None


# --- what is scored ----------------------------------------------------------------------


def chat_tokenizer(cfg: RewardConfig):
    """The classifier's tokenizer when it has a chat template and prompts are scored too.

    Returns:
        The tokenizer whose template `full_texts` applies, or None (plain concatenation).
    """
    if cfg.kind != "classifier" or cfg.text != "full":
        return None
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(cfg.path)
    return tokenizer if getattr(tokenizer, "chat_template", None) else None


def full_texts(
    prompts: list[str], chats: list[tuple[dict, ...]], responses: list[str], tokenizer=None
) -> list[str]:
    """Prompt + response as the reward model reads them (`reward.text=full`).

    Args:
        prompts: the prompts as the policy saw them.
        chats: the same prompts as conversations (for a reward model's chat template).
        responses: the sampled responses.
        tokenizer: the reward model's tokenizer with a chat template, or None.

    Returns:
        The conversation + assistant response in the reward model's own chat template,
        or, without one, the prompt text followed by the response.
    """
    if tokenizer is None:
        return [p + r for p, r in zip(prompts, responses, strict=True)]
    return [
        tokenizer.apply_chat_template(
            [*chat, {"role": "assistant", "content": r}], tokenize=False
        )
        for chat, r in zip(chats, responses, strict=True)
    ]
