"""recipes/data/prepare_{gsm8k,math}.py write parquet that verl 0.9.1 reads and scores as intended.

The scripts run for real (``--from-local`` on a jsonl sample written here; no network). Their output is
read with the dataset class verl's V1 trainer uses (``verl.trainer.ppo.utils.create_rl_dataset`` on the
composed ``data=`` preset), and every row's ground truth is scored with verl's own
``default_compute_score``: a response in the format the prompt asks for scores 1.0, a wrong one does not.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from fspo_verl.cli.validate import compose

REPO = Path(__file__).resolve().parents[1]
DATA_SCRIPTS = REPO / "recipes" / "data"
GPU_CONTEXT = ["model=qwen3_8b_base", "cluster=8gpu"]

GSM8K_SAMPLE = [
    {"split": "train", "question": "Tom has 3 apples and buys 1,200 more. How many apples?", "answer": "3 + 1200 = 1203\n#### 1,203"},
    {"split": "train", "question": "A bus has 40 seats and 12 are empty. How many are taken?", "answer": "40 - 12 = 28\n#### 28"},
    {"split": "train", "question": "No marker here.", "answer": "the reference forgot its final line"},
    {"split": "test", "question": "What is 2 + 2?", "answer": "#### 4"},
]
MATH_SAMPLE = [
    {"split": "train", "problem": "Compute 1/2 + 1/4.", "solution": "We add: $\\frac{2}{4}+\\frac{1}{4}=\\boxed{\\frac{3}{4}}$."},
    {"split": "train", "problem": "Solve x^2 = 4 for x > 0.", "solution": "First $\\boxed{x=\\pm 2}$ then, as x > 0, $\\boxed{2}$."},
    {"split": "math500", "problem": "What is $6 \\cdot 7$?", "solution": "It is $\\boxed{42}$."},
    {"split": "math500", "problem": "Write $\\{1,2\\}$ sorted.", "solution": "The set is $\\boxed{\\{1,2\\}}$."},
    {"split": "aime24", "problem": "Find the remainder of 1073 divided by 1000.", "answer": "073"},
    {"split": "aime25", "problem": "Find 17 * 12.", "answer": 204},
]
# output file -> (data_source, expected ground truths in order)
EXPECTED = {
    ("gsm8k", "train"): ("openai/gsm8k", ["1203", "28"]),
    ("gsm8k", "test"): ("openai/gsm8k", ["4"]),
    ("math", "train"): ("lighteval/MATH", ["\\frac{3}{4}", "2"]),
    ("math", "math500"): ("HuggingFaceH4/MATH-500", ["42", "\\{1,2\\}"]),
    ("math", "aime24"): ("aime24", ["73"]),
    ("math", "aime25"): ("aime25", ["204"]),
}


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(DATA_SCRIPTS / script), *args], capture_output=True, text=True, timeout=120)


def _load(script: str):
    spec = importlib.util.spec_from_file_location(script.removesuffix(".py"), DATA_SCRIPTS / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("data")
    outs = {"gsm8k": root / "gsm8k", "math": root / "math"}
    for name, sample in (("gsm8k", GSM8K_SAMPLE), ("math", MATH_SAMPLE)):
        proc = _run(f"prepare_{name}.py", "--from-local", str(_write_jsonl(root / f"{name}.jsonl", sample)), "--out", str(outs[name]))
        assert proc.returncode == 0, proc.stderr
    return outs


@pytest.fixture(scope="module")
def tokenizer():
    """A real Hugging Face fast tokenizer with a chat template, built locally (no download)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {"[PAD]": 0, "[UNK]": 1, "[EOS]": 2, "user": 3, "assistant": 4}
    backend = Tokenizer(models.WordLevel(vocab=words, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", eos_token="[EOS]")
    tok.chat_template = (
        "{% for m in messages %}{{ m['role'] }} {{ m['content'] }} [EOS] {% endfor %}"
        "{% if add_generation_prompt %}assistant {% endif %}"
    )
    return tok


def test_outputs_are_the_files_the_presets_and_recipes_read(prepared):
    assert sorted(p.name for p in prepared["gsm8k"].iterdir()) == ["test.parquet", "train.parquet"]
    assert sorted(p.name for p in prepared["math"].iterdir()) == ["aime24.parquet", "aime25.parquet", "math500.parquet", "train.parquet"]
    # the default --out of each script is the folder its data= preset points at
    for name, files in (("gsm8k", ("train", "test")), ("math", ("train", "math500"))):
        data = compose([f"data={name}", *GPU_CONTEXT]).data
        assert Path(data.train_files) == Path(f"~/data/fspo_verl/{name}/{files[0]}.parquet")
        assert Path(data.val_files) == Path(f"~/data/fspo_verl/{name}/{files[1]}.parquet")


@pytest.mark.parametrize("dataset, output", sorted(EXPECTED))
def test_columns_match_verl_rl_format(prepared, dataset, output):
    rows = pq.read_table(prepared[dataset] / f"{output}.parquet").to_pylist()
    source, truths = EXPECTED[(dataset, output)]
    assert [r["reward_model"] for r in rows] == [{"style": "rule", "ground_truth": t} for t in truths]
    for index, row in enumerate(rows):
        assert set(row) == {"data_source", "prompt", "ability", "reward_model", "extra_info"}
        assert row["data_source"] == source and row["ability"] == "math"
        assert [m["role"] for m in row["prompt"]] == ["user"] and row["prompt"][0]["content"].strip()
        assert row["extra_info"]["split"] == output and row["extra_info"]["index"] == index


def test_a_reference_without_an_answer_is_reported_not_silently_dropped(prepared, tmp_path):
    proc = _run("prepare_gsm8k.py", "--from-local", str(_write_jsonl(tmp_path / "s.jsonl", GSM8K_SAMPLE)), "--out", str(tmp_path / "o"))
    assert proc.returncode == 0 and "gsm8k train: skipped 1 record(s)" in proc.stderr


def _response(data_source: str, answer: str) -> str:
    """A response in the answer format the prompt of ``data_source`` asks for."""
    if data_source == "openai/gsm8k":
        return f"Adding up the numbers step by step.\n#### {answer}"
    if data_source.startswith("aime"):
        return f"Working through the cases carefully.\nAnswer: {answer}"
    return f"Simplifying gives the result $\\boxed{{{answer}}}$."


def _wrong(truth: str) -> str:
    return "999" if truth != "999" else "998"


@pytest.mark.parametrize("dataset, output", sorted(EXPECTED))
def test_verl_rl_dataset_reads_rows_and_default_compute_score_grades_them(prepared, tokenizer, dataset, output):
    from omegaconf import open_dict
    from verl.trainer.ppo.utils import create_rl_dataset
    from verl.utils.reward_score import default_compute_score

    data_config = compose([f"data={dataset}", *GPU_CONTEXT]).data
    with open_dict(data_config):
        data_config.filter_overlong_prompts = True  # exercise the chat-template length filter too
    path = str(prepared[dataset] / f"{output}.parquet")
    rl_dataset = create_rl_dataset([path], data_config, tokenizer, None, is_train=output == "train")
    from verl.utils.dataset.rl_dataset import RLHFDataset

    assert type(rl_dataset) is RLHFDataset  # the class V1's create_rl_dataset picks for these presets
    source, truths = EXPECTED[(dataset, output)]
    assert len(rl_dataset) == len(truths)
    for index in range(len(rl_dataset)):
        item = rl_dataset[index]
        assert item["data_source"] == source and item["index"] == index
        assert item["raw_prompt"][0]["role"] == "user"
        truth = item["reward_model"]["ground_truth"]
        right = default_compute_score(item["data_source"], _response(source, truth), truth, item["extra_info"])
        wrong = default_compute_score(item["data_source"], _response(source, _wrong(truth)), truth, item["extra_info"])
        if source.startswith("aime"):  # verl's DAPO scorer: +1 / -1 with a separate 0/1 accuracy
            assert (right["score"], right["acc"]) == (1.0, True), right
            assert (wrong["score"], wrong["acc"]) == (-1.0, False), wrong
        else:
            assert (right, wrong) == (1.0, 0.0), (truth, right, wrong)


def test_aime_also_scores_a_boxed_final_answer(prepared):
    """A model trained on MATH's \\boxed{} format still gets AIME credit (DAPO's boxed fallback)."""
    from verl.utils.reward_score import default_compute_score

    truth = pq.read_table(prepared["math"] / "aime24.parquet").to_pylist()[0]["reward_model"]["ground_truth"]
    assert default_compute_score("aime24", f"so the answer is $\\boxed{{{truth}}}$", truth)["acc"] is True


@pytest.mark.parametrize("text", [
    "so $\\boxed{\\frac{3}{4}}$",
    "first \\boxed{1} then \\boxed{\\{a,b\\}}",
    "nested \\boxed{\\sqrt{\\frac{1}{2}}} end",
    "spaced \\boxed 5$ done",
    "framed \\fbox{7}",
    "none here",
    "unbalanced \\boxed{3",
])
def test_last_boxed_agrees_with_verl_math_scorer(text):
    from verl.utils.reward_score.math_reward import last_boxed_only_string, remove_boxed

    ours = _load("prepare_math.py").last_boxed(text)
    try:
        theirs = remove_boxed(last_boxed_only_string(text))
    except (AssertionError, TypeError):  # nothing verl can unbox: its scorer gives 0 to such a response
        theirs = None
    assert ours == theirs


def test_hub_mode_passes_dataset_flags_to_datasets_load_dataset(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    calls = []

    def fake_load_dataset(dataset_id, config, split):
        calls.append((dataset_id, config, split))
        return [{"q": "What is 1 + 1?", "a": "#### 2"}]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    module = _load("prepare_gsm8k.py")
    assert module.main(["--out", str(tmp_path), "--dataset-id", "me/gsm8k-mirror", "--test-split", "dev",
                        "--question-column", "q", "--answer-column", "a"]) == 0
    assert calls == [("me/gsm8k-mirror", "main", "train"), ("me/gsm8k-mirror", "main", "dev")]
    assert pq.read_table(tmp_path / "test.parquet").to_pylist()[0]["data_source"] == "openai/gsm8k"

    calls.clear()
    monkeypatch.setattr(datasets, "load_dataset", lambda d, c, split: calls.append((d, c, split)) or [{"problem": "p", "answer": "5"}])
    assert _load("prepare_math.py").main(["--out", str(tmp_path), "--only", "aime25", "--aime25-dataset", "x/aime", "--aime25-split", "all"]) == 0
    assert calls == [("x/aime", None, "all")]


@pytest.mark.parametrize("args, message", [
    (["--only", "aime26"], "--only aime26: unknown output(s) ['aime26']"),
    (["--problem-column", "question"], "column(s) ['question'] not found"),
    (["--only", "train", "--local-split-column", "part"], "has no 'part' field"),
])
def test_bad_input_is_a_clear_error(tmp_path, args, message):
    sample = _write_jsonl(tmp_path / "m.jsonl", MATH_SAMPLE)
    proc = _run("prepare_math.py", "--from-local", str(sample), "--out", str(tmp_path / "o"), *args)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def test_a_missing_local_split_names_the_fix(tmp_path):
    sample = _write_jsonl(tmp_path / "m.jsonl", [r for r in MATH_SAMPLE if r["split"] != "aime25"])
    proc = _run("prepare_math.py", "--from-local", str(sample), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and "no rows with split 'aime25'" in proc.stderr and "--only" in proc.stderr
