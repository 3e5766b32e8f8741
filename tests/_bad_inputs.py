"""The corpus of bad inputs: one row each, with the key the rejection must name.

Rows 1-23 are the inputs of issue 12 (each passed `fspo-verl validate` and then failed in a Ray worker or
trained nothing); the rest are the class each stands for and the names the next user will mistype.
``{d}`` in an override is the folder of bad files made by :func:`make_bad_files`.
``mechanism`` says what catches it: a general mechanism (``sections``: verl's dataclasses built as the
workers build them; ``names``: registry look-up; ``data_files``; ``model_files``; ``checkpoints``;
``resolution``: the config resolved in place as verl's TaskRunner resolves it; ``places``: folders probed,
loggers' packages and credentials) or a rule for a nonsense value (``values``: a row of its table of domains
or relations).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

ACTOR = "actor_rollout_ref.actor"
ROLLOUT = "actor_rollout_ref.rollout"
GENERAL = ("sections", "names", "data_files", "model_files", "checkpoints", "resolution", "places")


@dataclass(frozen=True)
class BadInput:
    name: str
    overrides: tuple[str, ...]
    key: str
    mechanism: str
    env: dict[str, str] = field(default_factory=dict)


def bad(name, overrides, key, mechanism, env=None) -> BadInput:
    return BadInput(name, tuple(overrides), key, mechanism, env or {})


CORPUS: tuple[BadInput, ...] = (
    # --- issue 12: failed inside a Ray worker or the TaskRunner
    bad("train_files missing", ["data.train_files={d}/missing.parquet"], "data.train_files", "data_files"),
    bad("train_files empty parquet", ["data.train_files={d}/empty.parquet"], "data.train_files", "data_files"),
    bad("train_files not parquet", ["data.train_files={d}/garbage.parquet"], "data.train_files", "data_files"),
    bad("train_files a CSV", ["data.train_files={d}/train.csv"], "data.train_files", "data_files"),
    bad("train_files without verl's columns", ["data.train_files={d}/no_columns.parquet"], "data.train_files", "data_files"),
    bad("val_files missing", ["data.val_files={d}/missing_val.parquet"], "data.val_files", "data_files"),
    bad("model path a missing directory", ["actor_rollout_ref.model.path={d}/no_such_model"], "actor_rollout_ref.model.path", "model_files"),
    bad("loss_mode typo", [f"{ACTOR}.policy_loss.loss_mode=fspoo"], f"{ACTOR}.policy_loss.loss_mode", "names"),
    bad("adv_estimator typo", ["algorithm.adv_estimator=grpoo"], "algorithm.adv_estimator", "names"),
    bad("negative learning rate", [f"{ACTOR}.optim.lr=-1"], f"{ACTOR}.optim.lr", "values"),
    bad("resume_mode unknown", ["trainer.resume_mode=sometimes"], "trainer.resume_mode", "names"),
    bad("total_training_steps not a number", ["trainer.total_training_steps=abc"], "trainer.total_training_steps", "values"),
    bad("rollout.n negative", [f"{ROLLOUT}.n=-4"], f"{ROLLOUT}.n", "values"),
    bad("rollout.n zero", [f"{ROLLOUT}.n=0"], f"{ROLLOUT}.n", "values"),
    bad("logger typo", ["trainer.logger=[console,wandbb]"], "trainer.logger", "names"),
    bad("ppo_epochs zero", [f"{ACTOR}.ppo_epochs=0"], f"{ACTOR}.ppo_epochs", "values"),
    bad("plugin disabled", [], f"{ACTOR}.policy_loss.loss_mode", "names", {"VERL_USE_EXTERNAL_PLUGINS": "none"}),
    # --- issue 12: accepted silently
    bad("total_training_steps zero", ["trainer.total_training_steps=0"], "trainer.total_training_steps", "values"),
    bad("total_training_steps negative", ["trainer.total_training_steps=-1"], "trainer.total_training_steps", "values"),
    bad("max_response_length zero", ["data.max_response_length=0"], "data.max_response_length", "values"),
    bad("negative temperature", [f"{ROLLOUT}.temperature=-1"], f"{ROLLOUT}.temperature", "values"),
    bad("grpo with one sample", ["algorithm=grpo", f"{ROLLOUT}.n=1"], f"{ROLLOUT}.n", "values"),
    bad("opo with one sample", ["algorithm=opo", f"{ROLLOUT}.n=1"], f"{ROLLOUT}.n", "values"),
    # --- names the next user will mistype
    bad("loss_mode capitalised", [f"{ACTOR}.policy_loss.loss_mode=FSPO"], f"{ACTOR}.policy_loss.loss_mode", "names"),
    bad("loss_mode sspo typo", [f"{ACTOR}.policy_loss.loss_mode=sspoo"], f"{ACTOR}.policy_loss.loss_mode", "names"),
    bad("estimator British spelling", ["algorithm.adv_estimator=opo_vectorised"], "algorithm.adv_estimator", "names"),
    bad("estimator capitalised", ["algorithm.adv_estimator=GRPO"], "algorithm.adv_estimator", "names"),
    bad("rollout name typo", [f"{ROLLOUT}.name=hff"], f"{ROLLOUT}.name", "names"),
    bad("logger misspelt", ["trainer.logger=[console,tensorbord]"], "trainer.logger", "names"),
    bad("resume_mode shortened", ["trainer.resume_mode=resume"], "trainer.resume_mode", "names"),
    bad("reward manager typo", ["reward.reward_manager.name=naiv"], "reward.reward_manager.name", "names"),
    bad("plugin not listed", [], f"{ACTOR}.policy_loss.loss_mode", "names", {"VERL_USE_EXTERNAL_PLUGINS": "some_other_plugin"}),
    bad("loss_agg_mode typo", [f"{ACTOR}.loss_agg_mode=seq-mean-token-means"], f"{ACTOR}.loss_agg_mode", "sections"),
    bad("policy_loss _target_ typo", [f"{ACTOR}.policy_loss._target_=fspo_verl.config.FSPOPolicyLosConfig"], f"{ACTOR}.policy_loss._target_", "sections"),
    bad("fspo_drift typo", [f"{ACTOR}.policy_loss.fspo_drift=kll"], f"{ACTOR}.policy_loss.fspo_drift", "sections"),
    bad("clip_ratio not a number", [f"{ACTOR}.clip_ratio=abc"], f"{ACTOR}.clip_ratio", "sections"),
    bad("unknown actor field", [f"+{ACTOR}.ppo_epoch=2"], f"{ACTOR}.ppo_epoch", "sections"),
    # --- the class of each nonsense value
    bad("max_prompt_length zero", ["data.max_prompt_length=0"], "data.max_prompt_length", "values"),
    bad("train_batch_size zero", ["data.train_batch_size=0"], "data.train_batch_size", "values"),
    bad("mini-batch negative", [f"{ACTOR}.ppo_mini_batch_size=-16"], f"{ACTOR}.ppo_mini_batch_size", "values"),
    bad("learning rate zero", [f"{ACTOR}.optim.lr=0"], f"{ACTOR}.optim.lr", "values"),
    bad("negative validation temperature", [f"{ROLLOUT}.val_kwargs.temperature=-0.5"], f"{ROLLOUT}.val_kwargs.temperature", "values"),
    bad("rloo with one sample", ["algorithm.adv_estimator=rloo", f"{ROLLOUT}.n=1"], f"{ROLLOUT}.n", "values"),
    bad("total_epochs zero", ["trainer.total_epochs=0"], "trainer.total_epochs", "values"),
    bad("micro-batch zero", [f"{ACTOR}.ppo_micro_batch_size_per_gpu=0"], f"{ACTOR}.ppo_micro_batch_size_per_gpu", "values"),
    # --- the class of each bad file
    bad("train_files a directory", ["data.train_files={d}"], "data.train_files", "data_files"),
    bad("reward_model without ground_truth", ["data.train_files={d}/no_ground_truth.parquet"], "data.train_files", "data_files"),
    bad("val_files a CSV", ["data.val_files={d}/train.csv"], "data.val_files", "data_files"),
    bad("fewer rows than one batch", ["data.train_batch_size=65536", f"{ACTOR}.ppo_mini_batch_size=16"], "data.train_batch_size", "data_files"),
    bad("model without tokenizer", ["actor_rollout_ref.model.path={d}/model_no_tokenizer"], "actor_rollout_ref.model.path", "model_files"),
    bad("model with a broken config.json", ["actor_rollout_ref.model.path={d}/model_bad_config"], "actor_rollout_ref.model.path", "model_files"),
    bad("resume_from_path missing", ["trainer.resume_mode=resume_path", "trainer.resume_from_path={d}/ckpt/global_step_99"], "trainer.resume_from_path", "checkpoints"),
    bad("latest checkpoint half-written", ["trainer.default_local_dir={d}/ckpt"], "trainer.resume_mode", "checkpoints"),
    # a preset line that validate printed and the TaskRunner's in-place OmegaConf.resolve refused (found on a
    # real 2-node Ray job with data=synthetic_cpu, whose data preset has no fspo_verl.task.length_bins)
    bad("resolver with a list default", ["++fspo_verl.probe=${{oc.select:fspo_verl.nothing,[1,2]}}"], "fspo_verl.probe", "resolution"),
    # --- issue 21, data file contents: the first row group read as verl reads it (data_files)
    *(bad(name, [f"{key}={{d}}/{file}"], key, mechanism) for name, key, file, mechanism in (
        ("prompt all null", "data.train_files", "prompt_null.parquet", "data_files"),
        ("prompt plain strings", "data.train_files", "prompt_strings.parquet", "data_files"),
        ("prompt ints", "data.train_files", "prompt_ints.parquet", "data_files"),
        ("half the prompts null", "data.train_files", "prompt_half_null.parquet", "data_files"),
        ("ground_truth null", "data.train_files", "ground_truth_null.parquet", "data_files"),
        ("messages with text, not content", "data.train_files", "messages_text.parquet", "data_files"),
        ("prompt an empty list", "data.train_files", "prompt_empty_list.parquet", "data_files"),
        ("data_source null", "data.train_files", "data_source_null.parquet", "data_files"),
        ("reward_model null", "data.train_files", "reward_model_null.parquet", "data_files"),
        ("val_files with string prompts", "data.val_files", "prompt_strings.parquet", "data_files"),
        ("jsonl with a string prompt", "data.train_files", "prompt_strings.jsonl", "data_files"),
        # --- model files: the weights the model names (model_files)
        ("weights truncated", "actor_rollout_ref.model.path", "model_truncated", "model_files"),
        ("weights deleted", "actor_rollout_ref.model.path", "model_no_weights", "model_files"),
        ("weights 0 bytes", "actor_rollout_ref.model.path", "model_empty_weights", "model_files"),
        ("index names a missing shard", "actor_rollout_ref.model.path", "model_missing_shard", "model_files"),
    )),
    # --- values: one table of domains, one of relations (values)
    *(bad(name, overrides, key, "values") for name, overrides, key in (
        ("clip_ratio_low negative", ["algorithm=grpo", f"{ACTOR}.clip_ratio_low=-0.2"], f"{ACTOR}.clip_ratio_low"),
        ("clip_ratio_low above 1", ["algorithm=grpo", f"{ACTOR}.clip_ratio_low=1.5", f"{ACTOR}.clip_ratio_high=0.1"], f"{ACTOR}.clip_ratio_low"),
        ("clip_ratio_high zero", [f"{ACTOR}.clip_ratio_high=0"], f"{ACTOR}.clip_ratio_high"),
        ("clip_ratio_c below 1", [f"{ACTOR}.clip_ratio_c=0.5"], f"{ACTOR}.clip_ratio_c"),
        ("batch not a multiple of the mini-batch", ["data.train_batch_size=12", f"{ACTOR}.ppo_mini_batch_size=8"], "data.train_batch_size"),
        ("mini-batch larger than the batch", [f"{ACTOR}.ppo_mini_batch_size=32"], f"{ACTOR}.ppo_mini_batch_size"),
        ("save_freq zero", ["trainer.save_freq=0"], "trainer.save_freq"),
        ("test_freq zero", ["trainer.test_freq=0"], "trainer.test_freq"),
        ("top_p above 1", [f"{ROLLOUT}.top_p=1.5"], f"{ROLLOUT}.top_p"),
        ("top_p zero", [f"{ROLLOUT}.top_p=0"], f"{ROLLOUT}.top_p"),
        ("validation top_p zero", [f"{ROLLOUT}.val_kwargs.top_p=0"], f"{ROLLOUT}.val_kwargs.top_p"),
        ("kl_loss_coef negative", [f"{ACTOR}.use_kl_loss=true", f"{ACTOR}.kl_loss_coef=-0.1"], f"{ACTOR}.kl_loss_coef"),
        ("entropy_coeff negative", [f"{ACTOR}.entropy_coeff=-0.01"], f"{ACTOR}.entropy_coeff"),
        ("kl_ctrl coefficient negative", ["algorithm.kl_ctrl.kl_coef=-1"], "algorithm.kl_ctrl.kl_coef"),
        ("gamma above 1", ["algorithm.gamma=1.5"], "algorithm.gamma"),
        ("weight decay negative", [f"{ACTOR}.optim.weight_decay=-0.1"], f"{ACTOR}.optim.weight_decay"),
        ("response longer than the model's positions", ["data.max_response_length=400"], "data.max_response_length"),
        ("group_size zero", ["fspo_verl.task.group_size=0"], "fspo_verl.task.group_size"),
        ("nnodes zero", ["trainer.nnodes=0"], "trainer.nnodes"),
        ("n_gpus_per_node zero", ["trainer.n_gpus_per_node=0"], "trainer.n_gpus_per_node"),
        ("mini-batch a word", [f"{ACTOR}.ppo_mini_batch_size=eight"], f"{ACTOR}.ppo_mini_batch_size"),
    )),
    # --- places and services (places)
    bad("checkpoint dir unwritable", ["trainer.default_local_dir=/proc/fspo_verl_ckpt"], "trainer.default_local_dir", "places"),
    bad("checkpoint dir a file", ["trainer.default_local_dir={d}/train.csv/ckpt"], "trainer.default_local_dir", "places"),
    bad("rollout_data_dir unwritable", ["trainer.rollout_data_dir=/proc/fspo_verl_rollouts"], "trainer.rollout_data_dir", "places"),
    bad("validation_data_dir unwritable", ["trainer.validation_data_dir=/proc/fspo_verl_val"], "trainer.validation_data_dir", "places"),
    bad("wandb without credentials", ["trainer.logger=[console,wandb]"], "trainer.logger", "places",
        {"WANDB_API_KEY": "", "WANDB_MODE": "", "NETRC": "{d}/no_netrc"}),
    bad("swanlab not installed", ["trainer.logger=[console,swanlab]"], "trainer.logger", "places"),
)


def _rows(n: int, with_ground_truth: bool = True) -> pd.DataFrame:
    reward = {"style": "rule", "ground_truth": "1"} if with_ground_truth else {"style": "rule"}
    return pd.DataFrame({
        "data_source": ["t"] * n,
        "prompt": [[{"role": "user", "content": "1 2 3"}]] * n,
        "reward_model": [reward] * n,
    })


def make_bad_files(folder: Path) -> Path:
    """The bad files the corpus points at (and one damaged checkpoint tree)."""
    folder.mkdir(parents=True, exist_ok=True)
    _rows(0).to_parquet(folder / "empty.parquet")
    (folder / "garbage.parquet").write_bytes(b"this is not parquet\n" * 10)
    _rows(4).drop(columns=["prompt", "reward_model"]).to_csv(folder / "train.csv", index=False)
    pd.DataFrame({"question": ["1 2"] * 4, "answer": ["3"] * 4}).to_parquet(folder / "no_columns.parquet")
    _rows(4, with_ground_truth=False).to_parquet(folder / "no_ground_truth.parquet")
    no_tok = folder / "model_no_tokenizer"
    no_tok.mkdir(exist_ok=True)
    (no_tok / "config.json").write_text(json.dumps({"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"]}))
    bad_config = folder / "model_bad_config"
    bad_config.mkdir(exist_ok=True)
    (bad_config / "config.json").write_text("{not json")
    (bad_config / "tokenizer.json").write_text("{}")
    make_checkpoints(folder / "ckpt", steps=(4, 8), truncate_latest=True)
    make_bad_contents(folder)
    make_bad_models(folder)
    return folder


def _with(frame: pd.DataFrame, **columns) -> pd.DataFrame:
    frame = frame.copy()
    for name, values in columns.items():
        frame[name] = values
    return frame


#: rows of each bad-contents file
ROWS = 16


def make_bad_contents(folder: Path) -> None:
    """Parquet files with verl's columns whose rows verl cannot use (16 rows: one batch of the default preset,
    so that the contents are the only problem)."""
    rows = _rows(ROWS)
    message = [{"role": "user", "content": "1 2 3"}]
    _with(rows, prompt=[None] * ROWS).to_parquet(folder / "prompt_null.parquet")
    _with(rows, prompt=["1 2 3"] * ROWS).to_parquet(folder / "prompt_strings.parquet")
    _with(rows, prompt=[7] * ROWS).to_parquet(folder / "prompt_ints.parquet")
    _with(rows, prompt=[message, None] * (ROWS // 2)).to_parquet(folder / "prompt_half_null.parquet")
    _with(rows, reward_model=[{"style": "rule", "ground_truth": None}] * ROWS).to_parquet(folder / "ground_truth_null.parquet")
    _with(rows, prompt=[[{"role": "user", "text": "1 2 3"}]] * ROWS).to_parquet(folder / "messages_text.parquet")
    _with(rows, prompt=[[]] + [message] * (ROWS - 1)).to_parquet(folder / "prompt_empty_list.parquet")
    _with(rows, data_source=[None] * ROWS).to_parquet(folder / "data_source_null.parquet")
    _with(rows, reward_model=[None] + [{"style": "rule", "ground_truth": "1"}] * (ROWS - 1)).to_parquet(folder / "reward_model_null.parquet")
    record = {"data_source": "t", "prompt": "1 2 3", "reward_model": {"style": "rule", "ground_truth": "1"}}
    (folder / "prompt_strings.jsonl").write_text("\n".join(json.dumps(record) for _ in range(ROWS)) + "\n")
    (folder / "no_netrc").write_text("")


def make_bad_models(folder: Path) -> None:
    """Copies of the demo model (config and tokenizer intact) whose weights are not all there."""
    import shutil

    from fspo_verl.demo import ensure_assets

    good = Path(ensure_assets()["model_path"])
    for name in ("model_truncated", "model_no_weights", "model_empty_weights", "model_missing_shard"):
        shutil.copytree(good, folder / name, dirs_exist_ok=True)
    weights = (good / "model.safetensors").read_bytes()
    (folder / "model_truncated" / "model.safetensors").write_bytes(weights[:1000])
    (folder / "model_no_weights" / "model.safetensors").unlink()
    (folder / "model_empty_weights" / "model.safetensors").write_bytes(b"")
    sharded = folder / "model_missing_shard"
    (sharded / "model.safetensors").rename(sharded / "model-00001-of-00002.safetensors")
    header = json.loads(weights[8:8 + int.from_bytes(weights[:8], "little")])
    names = sorted(n for n in header if n != "__metadata__")
    weight_map = {n: f"model-0000{1 + i % 2}-of-00002.safetensors" for i, n in enumerate(names)}
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def unknown_dtype(weights: Path) -> None:
    """Rewrite a safetensors file's header in place with a dtype the library does not know: same length and
    offsets (the driver's header check passes), and loading fails in the workers (SafetensorError)."""
    data = weights.read_bytes()
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + length])
    for name, info in header.items():
        if name != "__metadata__":
            info["dtype"] = "X9"
    text = json.dumps(header, separators=(",", ":")).encode()
    assert len(text) <= length, "the new header must fit the old one's length"
    weights.write_bytes(data[:8] + text.ljust(length) + data[8 + length:])


def make_checkpoints(root: Path, steps=(4, 8), truncate_latest=False, world=2) -> Path:
    """verl's checkpoint layout: global_step_<N>/actor/{model,optim,extra_state}_world_size_W_rank_r.pt,
    data.pt, and the tracker; the newest model shard of rank 1 truncated to 0 bytes on request."""
    import torch

    for step in steps:
        actor = root / f"global_step_{step}" / "actor"
        actor.mkdir(parents=True, exist_ok=True)
        for kind in ("model", "optim", "extra_state"):
            for rank in range(world):
                torch.save({"step": step, "rank": rank}, actor / f"{kind}_world_size_{world}_rank_{rank}.pt")
        torch.save({"dataloader": step}, root / f"global_step_{step}" / "data.pt")
    (root / "latest_checkpointed_iteration.txt").write_text(str(max(steps)))
    if truncate_latest:
        (root / f"global_step_{max(steps)}" / "actor" / f"model_world_size_{world}_rank_1.pt").write_bytes(b"")
    return root
