"""The CPU demo's assets: cached build, verl-format parquet of both tasks, the rewards (hand-computed), the
warm start, and the tokenizer contracts verl's agent loop imposes on a ``qwen2`` model."""

from __future__ import annotations

import os
from importlib.resources import files

import pandas as pd
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from fspo_verl.demo import ASSETS_VERSION, countdown, ensure_assets
from fspo_verl.demo.overrides import DATA_ASSETS, task_policy_loss
from fspo_verl.demo.reward import (
    COUNTDOWN_SOURCE,
    DATA_SOURCE,
    PARTIAL_CREDIT,
    compute_score,
)
from fspo_verl.demo.task import make_rows
from fspo_verl.losses.length_bins import bin_index, bin_names

EDGES = task_policy_loss("countdown_cpu")["length_bins"]  # the preset's length_bins


def _bin_counts(lengths: list[int]) -> torch.Tensor:
    """(K+1,) number of lengths in each bin of EDGES."""
    return torch.bincount(bin_index(torch.tensor(lengths), EDGES), minlength=len(EDGES) + 1)


@pytest.fixture(scope="module")
def assets(demo_cache):
    return ensure_assets(demo_cache)  # the session's cache (tests/conftest.py): built here if no test needed it yet


def test_assets_are_built_once_and_cached(assets, tmp_path_factory):
    models = {"model_path", "next_digit_model_path"}
    keys = models | {"train_files", "val_files", "countdown_train_files", "countdown_val_files"}
    assert set(assets) == keys | {"checksum_model_path", "checksum_train_files", "checksum_val_files"}
    assert assets["model_path"] != assets["next_digit_model_path"]  # one model per task

    def stamps(paths) -> dict[str, int]:
        return {k: os.stat(os.path.join(paths[k], "config.json") if k in models else paths[k]).st_mtime_ns for k in keys}

    before = stamps(assets)
    again = ensure_assets(os.path.dirname(os.path.dirname(assets["model_path"])))
    assert {k: again[k] for k in keys} == {k: assets[k] for k in keys}
    assert stamps(again) == before


def test_a_tasks_assets_are_built_on_first_use_of_its_own_keys(tmp_path):
    """Reading countdown's files builds them and nothing else (no model, no other task); listing the keys and
    asking whether one is known build nothing."""
    assets = ensure_assets(tmp_path)
    base = tmp_path / f"cpu_demo_{ASSETS_VERSION}"
    assert "checksum_model_path" in assets and "bogus" not in assets and len(assets) == 9
    assert sorted(p.name for p in base.iterdir() if not p.name.startswith(".")) == []
    assert os.path.exists(assets["countdown_train_files"])
    assert sorted(p.name for p in base.iterdir() if not p.name.startswith(".")) == ["countdown"]
    with pytest.raises(KeyError):
        assets["bogus"]


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


@pytest.mark.parametrize(
    ("response", "answer", "score"),
    [
        ("2 1 0", "2 1 0", 1.0),
        (" 2  1 0 ", "2 1 0", 1.0),  # whitespace is not a word
        ("2 1", "2 1 0", 2 / 3),  # stopped one word early
        ("2 1 0 0", "2 1 0", 3 / 4),  # one word too many
        ("2 0", "2 1 0", 1 / 3),  # skipped 1: only the 2 before the slip counts
        ("1 0", "2 1 0", 0.0),  # wrong from the first word
        ("9 8 7 6 5 4 3 2 1 0", "2 1 0", 0.0),
        ("", "2 1 0", 0.0),
        ("4 3 9 1 0", "4 3 2 1 0", 2 / 5),  # "1 0" after the slip match their positions but do not count
        ("4 3 3 1 0", "4 3 2 1 0", 2 / 5),  # a repeat that realigns earns nothing either
        ("4 3 2 1 0 0 0", "4 3 2 1 0", 5 / 7),  # all five right, two words too many
    ],
)
def test_countdown_reward(response, answer, score):
    assert compute_score(COUNTDOWN_SOURCE, response, answer) == pytest.approx(score)


_words = st.lists(st.sampled_from(countdown.WORDS[:12]), max_size=12)


@given(answer=st.integers(1, 12), response=_words, data=st.data())
def test_countdown_reward_ignores_what_follows_the_first_mistake(answer, response, data):
    """Properties of the prefix score: exactly the answer scores 1, any response at most 1; words after the first
    mistake can be changed at will without changing the score, once the length is the same."""
    truth = countdown.answer_for(answer)
    assert compute_score(COUNTDOWN_SOURCE, truth, truth) == 1.0
    score = compute_score(COUNTDOWN_SOURCE, " ".join(response), truth)
    assert 0.0 <= score <= 1.0
    assert (score == 1.0) == (response == truth.split())
    first_mistake = next((i for i, (r, a) in enumerate(zip(response, truth.split())) if r != a), None)
    if first_mistake is not None:
        changed = response[: first_mistake + 1] + data.draw(
            st.lists(st.sampled_from(countdown.WORDS[:12]), min_size=len(response) - first_mistake - 1,
                     max_size=len(response) - first_mistake - 1))
        assert compute_score(COUNTDOWN_SOURCE, " ".join(changed), truth) == score


def test_reward_rejects_other_data_sources():
    with pytest.raises(ValueError, match="data_source"):
        compute_score("gsm8k", "7", "7")


def test_rows_are_deterministic():
    assert make_rows(5, "train", 0) == make_rows(5, "train", 0)
    assert countdown.make_rows(5, "train", 0) == countdown.make_rows(5, "train", 0)
    assert countdown.make_rows(5, "train", 0) != countdown.make_rows(5, "train", 1)


def test_countdown_parquet_answers_and_lengths(assets):
    frame = pd.read_parquet(assets["countdown_train_files"])
    assert {"data_source", "prompt", "ability", "reward_model", "extra_info"} <= set(frame.columns)
    lengths = []
    for row in frame.itertuples():
        n = countdown.WORDS.index(row.prompt[0]["content"])
        words = row.reward_model["ground_truth"].split()
        assert row.data_source == COUNTDOWN_SOURCE and row.extra_info["answer_length"] == n == len(words)
        assert [countdown.WORDS.index(w) for w in words] == list(range(n - 1, -1, -1))
        lengths.append(n)
    assert min(lengths) == countdown.MIN_COUNT and max(lengths) == countdown.MAX_COUNT
    # log-uniform: each doubling bin of the preset's length_bins holds a sizeable share, 128+ included
    shares = dict(zip(bin_names(EDGES), (_bin_counts(lengths) / len(lengths)).tolist()))
    assert all(share > 0.02 for share in shares.values()), shares
    assert all(0.1 < shares[name] < 0.25 for name in bin_names(EDGES)[1:-1]), shares


def test_warm_start_leaves_room_for_rl(assets):
    """RL starts from a mean reward neither ~0 nor ~1, with answers of every length bin (temperature 1), from
    a model whose greedy answers are right (it knows the rule; RL has to sharpen it)."""
    import random

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fspo_verl.demo.warm_start import sampled_reward

    model = AutoModelForCausalLM.from_pretrained(assets["model_path"])
    tokenizer = AutoTokenizer.from_pretrained(assets["model_path"])
    rng = random.Random(5)
    counts = [countdown.draw_count(rng) for _ in range(64)]
    reward, lengths = sampled_reward(model, tokenizer, counts)
    assert 0.2 < reward < 0.8, reward
    assert int((_bin_counts(lengths) > 0).sum()) >= 4, lengths
    greedy, greedy_lengths = sampled_reward(model, tokenizer, counts, temperature=0.0)
    assert greedy > 0.95, greedy
    assert greedy_lengths == [n + 1 for n in counts]  # N words and the EOS


def _next_digit_reward(model_dir: str, temperature: float) -> float:
    """Mean next_digit reward of ``model_dir`` over 512 prompts of the task, one sample each (4 tokens at most,
    as data=synthetic_cpu), prompts tokenised as verl's agent loop does (the reloaded Qwen2Tokenizer)."""
    import random

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fspo_verl.demo.reward import score_response
    from fspo_verl.demo.task import make_example
    from fspo_verl.rollout_hf.generation import SamplingSpec, generate_batch

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rng = random.Random(99)
    examples = [make_example(rng) for _ in range(512)]
    prompts = [
        tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False)
        for p, _ in examples
    ]
    ids = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in prompts]
    out = generate_batch(
        model, ids, [4] * len(ids), SamplingSpec(temperature=temperature), {tokenizer.eos_token_id},
        tokenizer.pad_token_id, torch.Generator().manual_seed(0),
    )  # fmt: skip
    texts = [tokenizer.decode(tokens, skip_special_tokens=True) for tokens, _ in out]
    return sum(score_response(text, answer) for text, (_, answer) in zip(texts, examples)) / len(examples)


def test_next_digit_has_its_own_warm_model_with_room_for_rl(assets):
    """data=synthetic_cpu's model samples a mean reward near 0.35 (a group of 8 almost always has a spread, which
    GRPO and PODS need) and answers right greedily; the countdown model, which has never seen a digit, scores
    ~0 there (the negative control: the reason next_digit has a model of its own)."""
    sampled = _next_digit_reward(assets["next_digit_model_path"], temperature=1.0)
    assert 0.25 < sampled < 0.5, sampled
    assert _next_digit_reward(assets["next_digit_model_path"], temperature=0.0) == 1.0
    assert _next_digit_reward(assets["model_path"], temperature=1.0) < 0.05


@pytest.mark.parametrize("data", sorted(DATA_ASSETS))
def test_every_prompt_fits_the_presets_prompt_length(assets, data):
    """verl's agent loop left-truncates a prompt longer than rollout.prompt_length (= data.max_prompt_length),
    silently changing the task and writing one warning per sample. Tokenised as the agent loop does."""
    import yaml
    from transformers import AutoTokenizer

    limit = yaml.safe_load((files("fspo_verl") / "configs" / "data" / f"{data}.yaml").read_text())["max_prompt_length"]
    tokenizer = AutoTokenizer.from_pretrained(assets["model_path"])
    lengths = []
    for files_key in DATA_ASSETS[data]:  # train and val
        for messages in pd.read_parquet(assets[files_key])["prompt"]:
            ids = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
            lengths.append(len(tokenizer(ids, add_special_tokens=False)["input_ids"]))
    assert max(lengths) <= limit, (data, max(lengths), limit)
    assert len(lengths) > 64 and min(lengths) >= 1  # the prompts were read


@pytest.mark.parametrize("data", sorted(DATA_ASSETS))
def test_the_shared_agent_loop_builds_each_prompt_once_with_verls_tokens(assets, data):
    """Limiting case against verl: the single-turn agent loop our worker shares (built by
    ``BatchedAgentLoopWorker._agent_loop``, with its PromptTokenCache) gives every sample of every prompt of the
    task the tokens verl's own ``ct_build_initial_tokens`` builds, with one build per distinct prompt."""
    import asyncio

    from conftest import compose_verl
    from transformers import AutoTokenizer
    from verl.experimental.agent_loop.single_turn_agent_loop import SingleTurnAgentLoop
    from verl.utils.dataset.rl_dataset import RLHFDataset

    from fspo_verl.agent_loop.manager import BatchedAgentLoopWorker
    from fspo_verl.agent_loop.prompt_tokens import PromptTokenCache

    limit = yaml_value(data, "max_prompt_length")
    config = compose_verl([f"actor_rollout_ref.model.path={assets['model_path']}",
                           f"actor_rollout_ref.rollout.prompt_length={limit}"])
    worker = object.__new__(BatchedAgentLoopWorker.__ray_actor_class__)
    worker.config, worker.llm_client, worker.processor, worker.tools = config, None, None, []
    worker.tokenizer = AutoTokenizer.from_pretrained(assets["model_path"])
    worker.hf_model_type, worker.dataset_cls, worker._shared_agent_loops = "qwen2", RLHFDataset, {}
    prompts = [list(m) for key in DATA_ASSETS[data] for m in pd.read_parquet(assets[key])["prompt"]]
    n = 4  # samples per prompt, all in flight together as in a step

    async def both():
        shared = worker._agent_loop("single_turn_agent")  # built in the loop, as in the actor
        assert worker._agent_loop("single_turn_agent") is shared
        assert isinstance(shared.ct_build_initial_tokens, PromptTokenCache)
        ours = await asyncio.gather(*(shared.ct_build_initial_tokens(m) for m in prompts for _ in range(n)))
        theirs = [await SingleTurnAgentLoop.ct_build_initial_tokens(shared, m) for m in prompts]  # verl's method
        return shared.ct_build_initial_tokens.builds, ours, theirs

    builds, ours, theirs = asyncio.run(both())
    assert ours == [tokens for tokens in theirs for _ in range(n)]
    assert builds == len({repr(m) for m in prompts}) < len(ours)
    assert len(prompts) > 64 and all(1 <= len(t) <= limit for t in theirs)


def yaml_value(data: str, key: str):
    import yaml

    return yaml.safe_load((files("fspo_verl") / "configs" / "data" / f"{data}.yaml").read_text())[key]


def test_verl_loads_the_reward_and_builds_the_qwen_token_builder(assets):
    from transformers import AutoConfig, AutoTokenizer
    from verl.utils.import_utils import load_extern_object
    from verl.utils.tokenizer.continuous_token_wiring import (
        create_continuous_token_builder,
    )

    assert load_extern_object("pkg://fspo_verl.demo.reward", "compute_score") is compute_score
    tok = AutoTokenizer.from_pretrained(assets["model_path"])
    model_type = AutoConfig.from_pretrained(assets["model_path"]).model_type
    assert model_type == "qwen2"
    builder = create_continuous_token_builder(tok, hf_model_type=model_type)  # raises for a non-Qwen tokenizer
    assert type(builder).__name__ == "QwenContinuousTokenBuilder"
    prompt = tok.apply_chat_template([{"role": "user", "content": "3 4 5"}], add_generation_prompt=True, tokenize=True)
    ids = prompt["input_ids"] if isinstance(prompt, dict) or hasattr(prompt, "keys") else prompt
    assert tok.convert_ids_to_tokens(ids) == ["\u0120", "3", "\u0120", "4", "\u0120", "5"]  # next_digit: the last token is the last digit
    # countdown: a number is one token as verl's agent loop encodes it (through transformers' reloaded
    # Qwen2Tokenizer), and responses decode to space-separated words, which the reward compares
    assert countdown.number_word(137) == "bdh"
    prompt = tok.apply_chat_template([{"role": "user", "content": "bdh"}], add_generation_prompt=True, tokenize=True)
    ids = prompt["input_ids"] if isinstance(prompt, dict) or hasattr(prompt, "keys") else prompt
    assert tok.convert_ids_to_tokens(ids) == ["\u0120bdh"]
    response = tok(" bc bb ba", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert len(response) == 4
    assert tok.decode(response, skip_special_tokens=True).split() == ["bc", "bb", "ba"]
