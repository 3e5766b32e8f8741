"""Per-length-bin clip counts for verl's built-in losses (fspo_verl.diagnostics.loss_hook): verl's own loss
still runs and stays registered; the counts match hand-computed numbers and verl's own pg_clipfrac wherever
the two definitions coincide; the presets switch them on."""

from __future__ import annotations

import math

import pytest
import torch
import verl.workers.utils.losses as verl_losses
from conftest import FSPO_TARGET, actor_config
from test_verl_integration import _worker_micro_batch
from verl.trainer.ppo import core_algos
from verl.utils import tensordict_utils as tu
from verl.utils.config import omega_conf_to_dataclass

from fspo_verl.cli.validate import compose
from fspo_verl.diagnostics import loss_hook

VERL_FUNCTIONS = {
    "vanilla": core_algos.compute_policy_loss_vanilla,
    "gspo": core_algos.compute_policy_loss_gspo,
    "geo_mean": core_algos.compute_policy_loss_geo_mean,
    "sapo": core_algos.compute_policy_loss_sapo,
    "cispo": core_algos.compute_policy_loss_cispo,
}
PRESETS = {"grpo": "vanilla", "gspo": "gspo", "gmpo": "geo_mean", "sapo": "sapo", "cispo": "cispo"}


def _config(loss_mode: str, bins: str = "[2]", low: float = 0.1, high: float = 0.1, target: bool = True, extra=()):
    return actor_config(
        [
            *([FSPO_TARGET, f"+actor_rollout_ref.actor.policy_loss.length_bins={bins}"] if target else []),
            f"actor_rollout_ref.actor.policy_loss.loss_mode={loss_mode}",
            f"actor_rollout_ref.actor.clip_ratio_low={low}",
            f"actor_rollout_ref.actor.clip_ratio_high={high}",
            *extra,
        ]
    )


def _call(loss_mode, config, d, mask, adv):
    """The loss as verl's ppo_loss finds it, on padded (bs, T) tensors; old_log_prob = -1 everywhere."""
    old = torch.full_like(d, -1.0)
    return verl_losses.get_policy_loss_fn(loss_mode)(
        old_log_prob=old, log_prob=old + d, advantages=adv, response_mask=mask,
        loss_agg_mode=config.loss_agg_mode, config=config, rollout_is_weights=None,
    )  # fmt: skip


def _padded(rows: list[list[float]], advantages: list[float]):
    """(d, mask, adv), each (bs, T), from per-sequence token log-ratios and sequence advantages."""
    width = max(len(r) for r in rows)
    d = torch.tensor([r + [0.0] * (width - len(r)) for r in rows], dtype=torch.float64)
    mask = torch.tensor([[t < len(r) for t in range(width)] for r in rows])
    adv = torch.tensor(advantages, dtype=torch.float64)[:, None].expand(len(rows), width).clone()
    return d, mask, adv


def test_verl_keeps_its_own_functions_and_ppo_loss_finds_them_wrapped():
    assert loss_hook.installed()
    for name, fn in VERL_FUNCTIONS.items():
        assert core_algos.POLICY_LOSS_REGISTRY[name] is fn
        assert core_algos.get_policy_loss_fn(name) is fn
        wrapped = verl_losses.get_policy_loss_fn(name)
        assert wrapped is not fn and wrapped.__wrapped__ is fn
    for name in ("fspo", "sspo", "dppo_tv"):  # ours emit the counts themselves; unknown ones pass through
        assert verl_losses.get_policy_loss_fn(name) is core_algos.POLICY_LOSS_REGISTRY[name]


# Hand-computed: bins [2] give len_0_2 (L <= 2) and len_2_inf. clip ratios 0.1: band [0.9, 1.1] on the ratio,
# [-0.1, 0.1] on d for geo_mean.
ROWS = [[0.2], [0.0, 0.05], [-0.3, 0.1], [0.01, 0.02, 0.03]]
ADV = [1.0, -1.0, 1.0, -1.0]
EXPECTED = {
    # seq0: d=0.2 -> r=1.22 out | seq1: r in [1, 1.05] in | seq2: r=0.74 out (token 1) | seq3: all in
    "vanilla": (2, 0),
    "cispo": (2, 0),
    # seq0: mean 0.2 out | seq1: mean 0.025 in | seq2: mean -0.1 -> 0.905 in | seq3: mean 0.02 in
    "gspo": (1, 0),
    # d outside [-0.1, 0.1]: seq0 (0.2), seq2 (-0.3)
    "geo_mean": (2, 0),
    # gate gradient scale 4 s(1-s), s = sigmoid(tau (r-1)), < 0.99 when |r-1| > ~0.2 (tau ~1): seq0 (r-1 = 0.22),
    # seq2 (r-1 = -0.26); seq3's r-1 <= 0.03
    "sapo": (2, 0),
}


@pytest.mark.parametrize("loss_mode", sorted(EXPECTED))
def test_counts_match_hand_computed_numbers(loss_mode):
    config = _config(loss_mode, extra=["actor_rollout_ref.actor.tau_pos=1.0", "actor_rollout_ref.actor.tau_neg=1.05"])
    _, metrics = _call(loss_mode, config, *_padded(ROWS, ADV))
    short, long = EXPECTED[loss_mode]
    assert metrics[f"actor/{loss_mode}/seqs_len_0_2"] == 3.0
    assert metrics[f"actor/{loss_mode}/clipped_len_0_2"] == short
    assert metrics[f"actor/{loss_mode}/seqs_len_2_inf"] == 1.0
    assert metrics[f"actor/{loss_mode}/clipped_len_2_inf"] == long


@pytest.mark.parametrize("loss_mode", sorted(VERL_FUNCTIONS))
def test_verl_loss_and_metrics_are_unchanged(loss_mode):
    config = _config(loss_mode)
    d, mask, adv = _padded(ROWS, ADV)
    old = torch.full_like(d, -1.0)
    kwargs = dict(old_log_prob=old, log_prob=old + d, advantages=adv, response_mask=mask,
                  loss_agg_mode=config.loss_agg_mode, config=config, rollout_is_weights=None)  # fmt: skip
    ours, ours_metrics = verl_losses.get_policy_loss_fn(loss_mode)(**kwargs)
    theirs, theirs_metrics = VERL_FUNCTIONS[loss_mode](**kwargs)
    assert torch.equal(ours, theirs)
    assert {k: ours_metrics[k] for k in theirs_metrics} == theirs_metrics
    added = set(ours_metrics) - set(theirs_metrics)
    assert added == {f"actor/{loss_mode}/{kind}_len_{b}" for kind in ("seqs", "clipped") for b in ("0_2", "2_inf")}
    assert not any("max" in k or "min" in k for k in added)  # verl would reduce those with max/min


def _signed_batch(gen, n: int, length: int, spread: float):
    """Sequences of one length whose advantage has the sign of their summed log-ratio (so that a trust region
    violated on either side actually binds, the case where 'outside the band' and verl's 'clipped' agree)."""
    d = spread * torch.randn(n, length, generator=gen, dtype=torch.float64)
    mask = torch.ones(n, length, dtype=torch.bool)
    sign = torch.where(d.sum(-1) >= 0, 1.0, -1.0).to(torch.float64)
    adv = (sign * (0.5 + torch.rand(n, generator=gen, dtype=torch.float64)))[:, None].expand(n, length).clone()
    return d, mask, adv


# Where verl's pg_clipfrac and our per-sequence "clipped" coincide:
#   cispo      one-token sequences: verl counts tokens outside the band whatever the sign of A
#   vanilla    one-token sequences, sign(A) = sign(d): every token outside the band binds
#   geo_mean   one-token sequences: verl splits the out-of-band tokens into pg_clipfrac (A>0) + _lower (A<0)
#   gspo       equal lengths, sign(A) = sign(S): one ratio per sequence, so token- and sequence-means agree
COINCIDE = {"cispo": 1, "vanilla": 1, "geo_mean": 1, "gspo": 5}


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("loss_mode", sorted(COINCIDE))
def test_counts_equal_verls_pg_clipfrac_where_the_definitions_coincide(loss_mode, seed):
    gen = torch.Generator().manual_seed(seed)
    config = _config(loss_mode, bins="[256]", low=0.05, high=0.05)
    d, mask, adv = _signed_batch(gen, 40, COINCIDE[loss_mode], spread=0.05 if loss_mode != "gspo" else 0.12)
    _, metrics = _call(loss_mode, config, d, mask, adv)
    ours = metrics[f"actor/{loss_mode}/clipped_len_0_256"] / metrics[f"actor/{loss_mode}/seqs_len_0_256"]
    verl = metrics["actor/pg_clipfrac"] + (metrics["actor/pg_clipfrac_lower"] if loss_mode == "geo_mean" else 0.0)
    assert 0.1 < ours < 0.9  # both clipped and unclipped sequences are present
    assert ours == pytest.approx(verl, abs=1e-6)  # verl reduces in float32


def test_through_verls_ppo_loss_on_a_worker_micro_batch():
    config = _config("gspo", bins="[3]", low=0.01, high=0.01, extra=["actor_rollout_ref.actor.entropy_coeff=0"])
    data, flat, log_prob, old, adv, mask = _worker_micro_batch([3, 2, 4, 1], [4, 2, 5, 1], [1.0, -0.5, 0.25, 2.0], seed=3)
    for key, value in (("dp_size", 1), ("batch_num_tokens", 12), ("global_batch_size", 4)):
        tu.assign_non_tensor_data(data, key, value)
    _, metrics = verl_losses.ppo_loss(config, {"log_probs": flat}, data)
    mean_log_ratio = ((log_prob - old) * mask).sum(-1) / mask.sum(-1)  # (bs,) GSPO's log s_i
    clipped = mean_log_ratio.abs() > math.log(1.01) - 1e-3  # all |log s_i| here are far from the band edge
    assert (mean_log_ratio.abs() - math.log(1.01)).abs().min() > 1e-3
    short = mask.sum(-1) <= 3
    assert metrics["actor/gspo/seqs_len_0_3"].aggregate() == int(short.sum()) == 2
    assert metrics["actor/gspo/clipped_len_0_3"].aggregate() == int((clipped & short).sum())
    assert metrics["actor/gspo/seqs_len_3_inf"].aggregate() == 2
    assert metrics["actor/gspo/clipped_len_3_inf"].aggregate() == int((clipped & ~short).sum())


def test_all_padding_micro_batch_emits_zeros_for_every_bin():
    config = _config("vanilla", bins="[2, 8]")
    d, mask, adv = _padded(ROWS, ADV)
    _, metrics = _call("vanilla", config, d, torch.zeros_like(mask), adv)
    bins = {k: v for k, v in metrics.items() if "_len_" in k}
    assert len(bins) == 6 and all(v == 0.0 for v in bins.values())


def test_off_without_our_config_class_or_with_the_flag_false():
    d, mask, adv = _padded(ROWS, ADV)
    plain = _config("gspo", target=False)
    off = _config("gspo", extra=["+actor_rollout_ref.actor.policy_loss.length_bin_metrics=false"])
    for config in (plain, off):
        _, metrics = _call("gspo", config, d, mask, adv)
        assert not any("_len_" in k for k in metrics), metrics


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_turn_the_counts_on(preset):
    actor = omega_conf_to_dataclass(compose([f"algorithm={preset}"]).actor_rollout_ref.actor)
    assert actor.policy_loss.loss_mode == PRESETS[preset]
    assert loss_hook.enabled(actor)


def test_a_non_boolean_flag_is_rejected():
    with pytest.raises(Exception, match="length_bin_metrics='yes' is invalid"):
        _config("gspo", extra=["+actor_rollout_ref.actor.policy_loss.length_bin_metrics=yes"])
