"""The CPU demo's assets: cached build, verl-format parquet, the reward, and the tokenizer contracts
verl's agent loop imposes on a ``qwen2`` model."""

from __future__ import annotations

import os

import pandas as pd
import pytest

from fspo_verl.demo import ensure_assets
from fspo_verl.demo.reward import DATA_SOURCE, PARTIAL_CREDIT, compute_score
from fspo_verl.demo.task import make_rows


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return ensure_assets(tmp_path_factory.mktemp("cache"))


def test_assets_are_built_once_and_cached(assets, tmp_path_factory):
    stamps = {k: os.stat(v).st_mtime_ns for k, v in assets.items() if k != "model_path"}
    model_stamp = os.stat(os.path.join(assets["model_path"], "config.json")).st_mtime_ns
    again = ensure_assets(os.path.dirname(os.path.dirname(assets["model_path"])))
    assert again == assets
    assert {k: os.stat(v).st_mtime_ns for k, v in again.items() if k != "model_path"} == stamps
    assert os.stat(os.path.join(again["model_path"], "config.json")).st_mtime_ns == model_stamp


def test_parquet_has_verl_schema_and_consistent_answers(assets):
    frame = pd.read_parquet(assets["train_files"])
    assert {"data_source", "prompt", "ability", "reward_model", "extra_info"} <= set(frame.columns)
    for row in frame.head(50).itertuples():
        digits = row.prompt[0]["content"].split()
        assert row.data_source == DATA_SOURCE and row.reward_model["style"] == "rule"
        assert row.reward_model["ground_truth"] == str((int(digits[-1]) + 1) % 10)
        assert all((int(b) - int(a)) % 10 == 1 for a, b in zip(digits, digits[1:]))


@pytest.mark.parametrize(
    ("response", "score"), [("7", 1.0), (" 7 ", 1.0), ("7 3", PARTIAL_CREDIT), ("73", PARTIAL_CREDIT), ("3", 0.0), ("", 0.0)]
)
def test_reward(response, score):
    assert compute_score(DATA_SOURCE, response, "7") == score


def test_reward_rejects_other_data_sources():
    with pytest.raises(ValueError, match="data_source"):
        compute_score("gsm8k", "7", "7")


def test_rows_are_deterministic():
    assert make_rows(5, "train", 0) == make_rows(5, "train", 0)


def test_verl_loads_the_reward_and_builds_the_qwen_token_builder(assets):
    from transformers import AutoConfig, AutoTokenizer
    from verl.utils.import_utils import load_extern_object
    from verl.utils.tokenizer.continuous_token_wiring import create_continuous_token_builder

    assert load_extern_object("pkg://fspo_verl.demo.reward", "compute_score") is compute_score
    tok = AutoTokenizer.from_pretrained(assets["model_path"])
    model_type = AutoConfig.from_pretrained(assets["model_path"]).model_type
    assert model_type == "qwen2"
    builder = create_continuous_token_builder(tok, hf_model_type=model_type)  # raises for a non-Qwen tokenizer
    assert type(builder).__name__ == "QwenContinuousTokenBuilder"
    prompt = tok.apply_chat_template([{"role": "user", "content": "3 4 5"}], add_generation_prompt=True, tokenize=True)
    ids = prompt["input_ids"] if isinstance(prompt, dict) or hasattr(prompt, "keys") else prompt
    assert tok.convert_ids_to_tokens(ids) == ["3", "4", "5"]
