"""The real verl path: Hydra composition of ppo_trainer.yaml, validate_config, workers' ppo_loss, DP metric
aggregation, and plugin discovery by a bare `import verl` in a fresh interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import FSPO_TARGET, actor_config, compose_verl
from tensordict import TensorDict
from verl.trainer.ppo.utils import need_critic, need_reference_policy
from verl.utils import tensordict_utils as tu
from verl.utils.config import validate_config
from verl.utils.metric import Metric
from verl.workers.utils.losses import ppo_loss

from fspo_verl.cli import doctor
from fspo_verl.losses.fspo import compute_policy_loss_fspo
from fspo_verl.losses.fspo_adaptive import compute_policy_loss_fspo_adaptive
from fspo_verl.losses.length_spread import reset_estimators
from fspo_verl.losses.sspo import compute_policy_loss_sspo

LOSSES = {"fspo": compute_policy_loss_fspo, "fspo_adaptive": compute_policy_loss_fspo_adaptive, "sspo": compute_policy_loss_sspo}


@pytest.mark.parametrize("loss_mode", ["fspo", "fspo_adaptive", "sspo"])
def test_composed_config_passes_validate_config(loss_mode, capsys):
    cfg = compose_verl([FSPO_TARGET, f"actor_rollout_ref.actor.policy_loss.loss_mode={loss_mode}"])
    validate_config(cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))
    assert "All configuration checks passed" in capsys.readouterr().out


def test_opo_vectorized_composes_and_validates(capsys):
    cfg = compose_verl(["algorithm.adv_estimator=opo_vectorized"])
    validate_config(cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))
    assert cfg.algorithm.adv_estimator == "opo_vectorized"


def _worker_micro_batch(prompt_lens, resp_lens, advantages, seed):
    """A micro-batch in the layout verl's engine hands to ppo_loss: left-padded prompts, right-padded
    responses, and the model's log-probs as one flat (total_tokens,) tensor over prompt+response."""
    gen = torch.Generator().manual_seed(seed)
    bs, p_width, r_width = len(prompt_lens), max(prompt_lens), max(resp_lens)
    attention = torch.zeros(bs, p_width + r_width, dtype=torch.long)
    for i, (p, r) in enumerate(zip(prompt_lens, resp_lens)):
        attention[i, p_width - p : p_width] = 1
        attention[i, p_width : p_width + r] = 1
    response_mask = attention[:, p_width:].clone()  # (bs, R)
    log_prob = -torch.rand(bs, r_width, generator=gen, dtype=torch.float64)  # (bs, R)
    old_log_prob = log_prob + 0.05 * torch.randn(bs, r_width, generator=gen, dtype=torch.float64)  # (bs, R)
    flat = []
    for i, (p, r) in enumerate(zip(prompt_lens, resp_lens)):
        row = torch.zeros(p + r, dtype=torch.float64)
        row[p - 1 : p - 1 + r] = log_prob[i, :r]  # the model predicts token t+1 at position t
        flat.append(row)
    adv = torch.tensor(advantages, dtype=torch.float64)[:, None].expand(bs, r_width).clone()
    data = TensorDict(
        {
            "prompts": torch.ones(bs, p_width, dtype=torch.long),
            "responses": torch.ones(bs, r_width, dtype=torch.long),
            "attention_mask": attention,
            "response_mask": response_mask,
            "old_log_probs": old_log_prob,
            "advantages": adv,
        },
        batch_size=[bs],
    )
    return data, torch.cat(flat), log_prob, old_log_prob, adv, response_mask.bool()


@pytest.mark.parametrize("loss_mode", ["fspo", "fspo_adaptive", "sspo"])
def test_verl_ppo_loss_calls_our_loss_with_global_batch_info(loss_mode):
    config = actor_config(
        [
            FSPO_TARGET,
            f"actor_rollout_ref.actor.policy_loss.loss_mode={loss_mode}",
            "actor_rollout_ref.actor.loss_agg_mode=seq-mean-token-mean",
            "actor_rollout_ref.actor.entropy_coeff=0",
        ]
    )
    data, flat, log_prob, old, adv, mask = _worker_micro_batch([3, 2, 4], [4, 2, 5], [1.0, -0.5, 0.25], seed=1)
    tu.assign_non_tensor_data(data, "dp_size", 2)
    tu.assign_non_tensor_data(data, "batch_num_tokens", 22)
    tu.assign_non_tensor_data(data, "global_batch_size", 6)
    flat.requires_grad_(True)
    reset_estimators()  # fspo_adaptive: both calls below start from the same (empty) statistics
    loss, metrics = ppo_loss(config, {"log_probs": flat}, data)

    # the same tensors straight into our loss, with the global info verl set (6 sequences over 2 ranks)
    reset_estimators()
    direct, direct_metrics = LOSSES[loss_mode](old, log_prob, adv, mask, "seq-mean-token-mean", config)
    assert config.global_batch_info == {"dp_size": 2, "batch_num_tokens": 22, "global_batch_size": 6, "loss_scale_factor": None}
    assert loss.item() == pytest.approx(direct.item(), rel=1e-12)
    loss.backward()
    assert torch.isfinite(flat.grad).all() and flat.grad.abs().sum() > 0
    for key, value in direct_metrics.items():
        assert isinstance(metrics[key], Metric)
        assert metrics[key].aggregate() == pytest.approx(value)
    assert f"actor/{loss_mode}/seqs_len_0_256" in metrics


def test_per_bin_counts_aggregate_across_dp_ranks_to_the_exact_rate():
    """Two ranks x two micro-batches with different bin occupancy: verl's Metric.aggregate_dp accepts the key
    sets, and mean(clipped)/mean(seqs) equals the rate over all sequences, which a mean of rates would not."""
    config = actor_config(
        [FSPO_TARGET, "actor_rollout_ref.actor.policy_loss.loss_mode=fspo",
         "+actor_rollout_ref.actor.policy_loss.fspo_c_low=0.01", "+actor_rollout_ref.actor.policy_loss.fspo_c_high=0.01",
         "+actor_rollout_ref.actor.policy_loss.length_bins=[4]"]
    )
    gen = torch.Generator().manual_seed(5)
    per_rank: list[dict[str, Metric]] = []
    all_clipped, all_short = [], []
    for rank in range(2):
        acc: dict[str, Metric] = {}
        for micro in range(2):
            n = 3 + rank + 2 * micro
            lens = torch.randint(1, 9, (n,), generator=gen)
            mask = torch.arange(8)[None, :] < lens[:, None]
            old = torch.zeros(n, 8, dtype=torch.float64)
            new = 0.05 * torch.randn(n, 8, generator=gen, dtype=torch.float64)
            adv = torch.ones(n, 8, dtype=torch.float64)
            _, m = compute_policy_loss_fspo(old, new, adv, mask, "seq-mean-token-mean", config)
            for k, v in Metric.from_dict(m, aggregation="mean").items():
                acc.setdefault(k, v.init_list()).append(v)
            s = (new * mask).sum(-1)
            bound = 0.01 * lens.double().sqrt()
            all_clipped.append((s.abs() > bound)[lens <= 4])
            all_short.append(lens <= 4)
        per_rank.append(acc)
    agg = {k: Metric.aggregate_dp([r[k] for r in per_rank]) for k in per_rank[0]}
    exact = torch.cat(all_clipped).float().sum() / torch.cat(all_short).float().sum()
    assert agg["actor/fspo/clipped_len_0_4"] / agg["actor/fspo/seqs_len_0_4"] == pytest.approx(exact.item())


def test_bare_import_verl_in_a_fresh_interpreter_finds_every_name():
    code = (
        "import json, verl\n"
        "from verl.trainer.ppo import core_algos as c\n"
        "print(json.dumps({'fspo': 'fspo' in c.POLICY_LOSS_REGISTRY, 'sspo': 'sspo' in c.POLICY_LOSS_REGISTRY,"
        " 'opo_vectorized': 'opo_vectorized' in c.ADV_ESTIMATOR_REGISTRY}))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("VERL_USE_EXTERNAL")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True, cwd="/")
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"fspo": True, "sspo": True, "opo_vectorized": True}


def test_doctor_passes_and_reports_each_name():
    report = doctor.probe()
    assert doctor.healthy(report), doctor.format_report(report)
    text = doctor.format_report(report)
    ok_lines = [line.split() for line in text.splitlines() if line.strip().startswith("[ok]")]
    for kind, name in (("policy_loss", "fspo"), ("policy_loss", "fspo_adaptive"), ("policy_loss", "sspo"),
                       ("adv_estimator", "opo_vectorized"), ("metric_hook", "length_fairness")):
        assert ["[ok]", kind, name] in ok_lines, text
    assert "verl version:        0.9.1" in text


def test_doctor_fails_loudly_when_plugins_are_disabled():
    """With VERL_USE_EXTERNAL_PLUGINS=none verl skips our entry point: the doctor must say MISSING and exit 1."""
    env = dict(os.environ, VERL_USE_EXTERNAL_PLUGINS="none")
    proc = subprocess.run([sys.executable, "-m", "fspo_verl.cli", "doctor"], capture_output=True, text=True, env=env)
    assert proc.returncode == 1
    assert "loaded by verl:      NO" in proc.stdout and "PROBLEMS FOUND" in proc.stdout
    assert "[MISSING] policy_loss    fspo" in proc.stdout


def test_doctor_shows_the_import_error_verl_hid(tmp_path):
    """A plugin that raises on import is dropped by verl at DEBUG level; the doctor must surface the error."""
    broken = tmp_path / "fspo_verl"
    broken.mkdir()
    (broken / "__init__.py").write_text("raise ImportError('simulated missing dependency: transfer_queue')\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    report = doctor.probe(env)
    assert report["entry_point_loaded"] is False
    assert "simulated missing dependency: transfer_queue" in report["import_error"]
    assert not doctor.healthy(report)
    assert "import error that verl hid" in doctor.format_report(report)
