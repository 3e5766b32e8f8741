"""A tiny Qwen2-style causal LM and its word-level tokenizer, built locally (nothing is downloaded).

The vocabulary is the demo task's words (digits) plus ``<pad>``, Qwen's end-of-turn ``<|im_end|>`` (the EOS)
and a newline token: verl's agent loop picks its Qwen token builder from ``model_type == "qwen2"``, which
requires both. The chat template just concatenates message contents, so a prompt's last token is its
last digit. The model is randomly
initialised from a fixed seed. Sizes are our choice: large enough for RL to learn the task within minutes on
2 CPU cores, small enough (about 70K parameters) that a step takes seconds.
"""

from __future__ import annotations

from pathlib import Path

SPECIAL_TOKENS = ["<pad>", "<|im_end|>"]
NEWLINE = "\n"
WORDS = [str(d) for d in range(10)]
CHAT_TEMPLATE = "{% for message in messages %}{{ message['content'] }}{% if not loop.last %} {% endif %}{% endfor %}"

#: Qwen2 sizes of the demo model (our choice, see the module docstring)
MODEL_SIZES = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
)


def build_tokenizer():
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + [NEWLINE] + WORDS)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with single spaces
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


def write_model(out_dir: Path, seed: int = 0) -> str:
    """Save the tokenizer and the model under ``out_dir`` (a Hugging Face model directory)."""
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    tokenizer = build_tokenizer()
    model = build_model(tokenizer, seed)
    tokenizer.save_pretrained(tmp)
    model.save_pretrained(tmp)
    tmp.replace(out_dir) if not out_dir.exists() else None
    return str(out_dir)
