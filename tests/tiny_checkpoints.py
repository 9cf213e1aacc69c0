"""Tiny random-init checkpoints of real architectures, saved with save_pretrained.

They load through exactly the code path a hub id takes, with no network: 2 layers, hidden
32, the embedded review tokenizer (about 1k tokens) dressed up as each family's tokenizer
is (GPT-2 without a pad token, Qwen2 with a chat template and pad == eos...).
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    GPT2ForSequenceClassification,
    GPTNeoXConfig,
    LlamaConfig,
    MistralConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

SIZES = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
ARCHS = ("llama", "qwen2", "gpt_neox", "gpt2", "mistral")


def _config(arch: str, vocab: int, tok) -> object:
    ids = dict(vocab_size=vocab, bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
    if arch == "llama":
        return LlamaConfig(**SIZES, num_key_value_heads=2, max_position_embeddings=128, **ids)
    if arch == "qwen2":
        return Qwen2Config(
            **SIZES, num_key_value_heads=2, max_position_embeddings=128,
            tie_word_embeddings=True, **ids,
        )
    if arch == "mistral":
        return MistralConfig(
            **SIZES, num_key_value_heads=2, max_position_embeddings=128, sliding_window=None,
            **ids,
        )
    if arch == "gpt_neox":
        return GPTNeoXConfig(**SIZES, max_position_embeddings=128, rotary_pct=0.5, **ids)
    if arch == "gpt2":
        return GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=128, **ids)
    raise ValueError(arch)


def build_causal_lm(arch: str, dtype: torch.dtype, out: Path, base_tokenizer: Path) -> Path:
    """A random-init `arch` checkpoint in `dtype` with a family-like tokenizer, in `out`."""
    tok = AutoTokenizer.from_pretrained(base_tokenizer)
    if arch in ("gpt2", "llama"):
        tok.pad_token = None  # they ship without one
    if arch == "gpt_neox":
        tok.pad_token = tok.eos_token
    if arch == "qwen2":
        tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
        tok.pad_token = tok.eos_token  # pad == eos, as Qwen2.5's <|endoftext|>
        tok.chat_template = CHATML
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(_config(arch, len(tok), tok)).to(dtype)
    if arch == "qwen2":
        # as Qwen2.5-Instruct ships: the chat turn's end also stops, and sampling extras
        gen = model.generation_config
        gen.eos_token_id = [tok.convert_tokens_to_ids("<|im_end|>"), tok.eos_token_id]
        gen.do_sample, gen.repetition_penalty, gen.min_new_tokens, gen.top_k = True, 1.3, 6, 20
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def build_classifier(out: Path) -> Path:
    """A random-init GPT-2 sequence classifier (2 labels) with its own, different tokenizer."""
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    raw.train_from_iterator(
        ["a reward model reads the whole answer", "good great bad awful"],
        trainers.BpeTrainer(
            vocab_size=300, special_tokens=["</s>"], show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="</s>")
    tok.chat_template = CHATML.replace("<|im_start|>", "[").replace("<|im_end|>", "]")
    config = GPT2Config(
        n_embd=32, n_layer=2, n_head=4, n_positions=256, vocab_size=len(tok), num_labels=2,
        bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.eos_token_id,
    )
    torch.manual_seed(1)
    GPT2ForSequenceClassification(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out
