"""The corpus of bad inputs: one row each, with the key the rejection must name.

Rows 1-23 are the inputs of issue 12 (each passed `fspo-verl validate` and then failed in a Ray worker or
trained nothing); the rest are the class each stands for and the names the next user will mistype.
``{d}`` in an override is the folder of bad files made by :func:`make_bad_files`.
``mechanism`` says what catches it: a general mechanism (``sections``: verl's dataclasses built as the
workers build them; ``names``: registry look-up; ``data_files``; ``model_files``; ``checkpoints``;
``resolution``: the config resolved in place as verl's TaskRunner resolves it) or an
explicit rule for a nonsense value (``values``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

ACTOR = "actor_rollout_ref.actor"
ROLLOUT = "actor_rollout_ref.rollout"
GENERAL = ("sections", "names", "data_files", "model_files", "checkpoints", "resolution")


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
    return folder


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
