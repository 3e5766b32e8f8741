"""A tiny Qwen2-style causal LM and its word-level tokenizer, built locally (nothing is downloaded).

The vocabulary is the demo tasks' words (the digits of ``next_digit``; the numbers 0..MAX_COUNT of
``countdown``, written in letters, see :mod:`fspo_verl.demo.countdown`) plus ``<pad>``, Qwen's end-of-turn ``<|im_end|>`` (the EOS)
and a newline token: verl's agent loop picks its Qwen token builder from ``model_type == "qwen2"``, which
requires both. The chat template just concatenates message contents, so a prompt's last token is its
last word. The model is randomly
initialised from a fixed seed (the demo then warm-starts it, :mod:`fspo_verl.demo.warm_start`). Sizes are our
choice: small enough (about 86K parameters) that a step takes seconds on 2 CPU cores, with a context of 256
positions: the longest countdown prompt and answer (1 + 150 words and EOS) with room to spare.
"""

from __future__ import annotations

from pathlib import Path

from fspo_verl.demo.countdown import LETTERS
from fspo_verl.demo.countdown import WORDS as COUNTDOWN_WORDS

SPECIAL_TOKENS = ["<pad>", "<|im_end|>"]
NEWLINE = "\n"
#: byte-level BPE's mark of a leading space
SPACE = "\u0120"
DIGITS = [str(d) for d in range(10)]
#: each message's content follows a space, so every countdown word is one space-led token
CHAT_TEMPLATE = "{% for message in messages %} {{ message['content'] }}{% endfor %}"

#: Qwen2 sizes of the demo model (our choice, see the module docstring)
MODEL_SIZES = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
)


def _vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A byte-level BPE vocabulary: the specials, the newline, the digits (next_digit), and each countdown word
    w as the token SPACE+w, built from single letters by merges SPACE+w[:i] + w[i] (every prefix a token)."""
    tokens = [*SPECIAL_TOKENS, NEWLINE, SPACE, *DIGITS, *LETTERS]
    merges: list[tuple[str, str]] = []
    for size in range(1, max(len(w) for w in COUNTDOWN_WORDS) + 1):  # shorter merges rank first
        for word in COUNTDOWN_WORDS:
            if len(word) >= size and SPACE + word[:size] not in tokens:
                tokens.append(SPACE + word[:size])
                merges.append((SPACE + word[: size - 1], word[size - 1]))
    return {token: i for i, token in enumerate(tokens)}, merges


def build_tokenizer():
    """The demo's tokenizer, byte-level BPE like Qwen2's, so that it encodes and decodes the same after
    ``AutoTokenizer`` reloads it as a ``Qwen2Tokenizer`` (transformers >= 5 does, from ``model_type``: it
    keeps the vocabulary and merges but installs Qwen2's pre-tokenizer, which splits digit runs into single
    digits, and its byte-level decoder). Hence countdown words are letters, one token each with its leading
    space, and decode with the spaces between them."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab, merges = _vocab_and_merges()
    core = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    core.add_tokens([AddedToken(NEWLINE, special=False, normalized=False)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<|im_end|>")
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_model(tokenizer, seed: int = 0):
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=len(tokenizer),
        tie_word_embeddings=True,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **MODEL_SIZES,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.eos_token_id
    )
    return model


def save_model(model, tokenizer, out_dir: Path) -> str:
    """Save ``tokenizer`` and ``model`` as the Hugging Face model directory ``out_dir`` (written whole, then renamed)."""
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    tokenizer.save_pretrained(tmp)
    model.save_pretrained(tmp)
    tmp.replace(out_dir) if not out_dir.exists() else None
    return str(out_dir)
