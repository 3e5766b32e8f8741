"""Hypothesis properties of the fspo and sspo losses: finiteness, masking, micro-batch invariance, key sets."""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from conftest import FSPO_TARGET, actor_config
from hypothesis import given, settings
from hypothesis import strategies as st

from verl.trainer.ppo.core_algos import get_policy_loss_fn

KEY = "actor_rollout_ref.actor.policy_loss"
AGG_MODES = ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"]
VARIANTS = {
    "fspo-none": ("fspo", []),
    "fspo-kl": ("fspo", [f"+{KEY}.fspo_drift=kl"]),
    "sspo-sigmoid": ("sspo", [f"+{KEY}.sspo_gate=sigmoid"]),
    "sspo-arctan": ("sspo", [f"+{KEY}.sspo_gate=arctan"]),
    "sspo-identity": ("sspo", [f"+{KEY}.sspo_gate=identity"]),
}
# variants whose loss does not depend on how the batch is split (fspo's kl drift is a micro-batch mean)
SPLIT_INVARIANT = ["fspo-none", "sspo-sigmoid", "sspo-arctan", "sspo-identity"]


@lru_cache(maxsize=None)
def config_for(variant: str):
    mode, extra = VARIANTS[variant]
    return actor_config([FSPO_TARGET, f"{KEY}.loss_mode={mode}", *extra])


@st.composite
def batches(draw, max_bs=6, max_t=8, max_abs_log_ratio=50.0):
    bs = draw(st.integers(1, max_bs))
    t = draw(st.integers(1, max_t))
    floats = st.floats(-max_abs_log_ratio, max_abs_log_ratio, allow_nan=False, allow_infinity=False)
    d = torch.tensor(draw(st.lists(st.lists(floats, min_size=t, max_size=t), min_size=bs, max_size=bs)), dtype=torch.float64)
    lengths = torch.tensor(draw(st.lists(st.integers(0, t), min_size=bs, max_size=bs)))  # 0 = all-masked row
    adv = torch.tensor(draw(st.lists(st.floats(-5, 5, allow_nan=False), min_size=bs, max_size=bs)), dtype=torch.float64)
    mask = torch.arange(t)[None, :] < lengths[:, None]  # (bs, t) bool, as verl's ppo_loss passes it
    old = torch.full((bs, t), -2.0, dtype=torch.float64)
    return old, old + d, adv[:, None].expand(bs, t).clone(), mask


def _call(variant, old, new, adv, mask, agg, global_info=None):
    cfg = config_for(variant)
    cfg.global_batch_info.clear()
    cfg.global_batch_info.update(global_info or {})
    return get_policy_loss_fn(VARIANTS[variant][0])(
        old_log_prob=old, log_prob=new, advantages=adv, response_mask=mask, loss_agg_mode=agg, config=cfg,
        rollout_is_weights=None,
    )


@settings(max_examples=150, deadline=None)
@given(batch=batches(), variant=st.sampled_from(sorted(VARIANTS)), agg=st.sampled_from(AGG_MODES))
def test_finite_loss_gradients_and_metrics(batch, variant, agg):
    old, new, adv, mask = batch
    new = new.float().requires_grad_(True)  # float32, as on GPU, to stress exp overflow
    loss, metrics = _call(variant, old.float(), new, adv.float(), mask, agg)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(new.grad).all()
    assert new.grad[~mask].abs().sum() == 0  # padding gets no gradient
    assert all(math.isfinite(v) for v in metrics.values())
    assert not any("max" in k or "min" in k for k in metrics)


@settings(max_examples=80, deadline=None)
@given(
    batch=batches(max_bs=8, max_abs_log_ratio=1.0),
    variant=st.sampled_from(SPLIT_INVARIANT),
    agg=st.sampled_from(AGG_MODES),
    chunk=st.integers(1, 4),
)
def test_micro_batching_with_global_batch_info_gives_the_same_gradient(batch, variant, agg, chunk):
    """What verl does: each micro-batch's loss uses the global token/sequence counts; the summed
    micro-batch gradients must equal the whole batch's gradient."""
    old, new, adv, mask = batch
    info = {
        "dp_size": 1,
        "batch_num_tokens": int(mask.sum()),
        "global_batch_size": int((mask.sum(-1) > 0).sum()),
        "loss_scale_factor": None,
    }
    whole = new.clone().requires_grad_(True)
    _call(variant, old, whole, adv, mask, agg, info)[0].backward()

    split = new.clone().requires_grad_(True)
    total = 0.0
    for s in range(0, old.shape[0], chunk):
        part = slice(s, s + chunk)
        total = total + _call(variant, old[part], split[part], adv[part], mask[part], agg, info)[0]
    total.backward()
    torch.testing.assert_close(split.grad, whole.grad, rtol=1e-9, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(batch=batches(max_bs=8), variant=st.sampled_from(sorted(VARIANTS)), chunk=st.integers(1, 3))
def test_every_micro_batch_emits_the_same_metric_keys(batch, variant, chunk):
    old, new, adv, mask = batch
    key_sets = {
        frozenset(_call(variant, old[s : s + chunk], new[s : s + chunk], adv[s : s + chunk], mask[s : s + chunk], "token-mean")[1])
        for s in range(0, old.shape[0], chunk)
    }
    assert len(key_sets) == 1
