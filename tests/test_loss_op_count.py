"""Launch cost of our losses, counted on CPU: fewer aten ops per forward + backward than verl's ``vanilla`` and
at most one host sync per call; and the per-sequence aggregation that saves them equals verl's ``agg_loss``.

Counts are deterministic (a dispatch hook, ``fspo_verl.diagnostics.op_count``), so they can be asserted; times
belong in ``benchmarks/bench_losses.py``.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from verl.trainer.ppo.core_algos import agg_loss, get_policy_loss_fn
from verl.workers.config.actor import FSDPActorConfig

from fspo_verl.diagnostics.op_count import OpCounter, count_loss_ops
from fspo_verl.losses._sequence import SequenceBatch, aggregate
from fspo_verl.losses.config import FSPOPolicyLossConfig

AGG_MODES = ["token-mean", "token-sum", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"]
VARIANTS = {
    "fspo-none": ("fspo", {}),
    "fspo-kl": ("fspo", {"fspo_drift": "kl"}),
    "sspo-sigmoid": ("sspo", {"sspo_gate": "sigmoid"}),
    "sspo-arctan": ("sspo", {"sspo_gate": "arctan"}),
    "sspo-identity": ("sspo", {"sspo_gate": "identity"}),
}


def _config(mode: str, agg: str, **extra) -> FSDPActorConfig:
    return FSDPActorConfig(
        rollout_n=1,
        ppo_micro_batch_size_per_gpu=1,
        clip_ratio_low=0.2,
        clip_ratio_high=0.28,
        loss_agg_mode=agg,
        policy_loss=FSPOPolicyLossConfig(loss_mode=mode, **extra),
    )


def _inputs(bs: int = 6, width: int = 16, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, width + 1, (bs,), generator=g)  # (bs,) some rows may be empty
    mask = torch.arange(width).unsqueeze(0) < lengths.unsqueeze(1)  # (bs, T) bool, as verl passes it
    old = -2.0 * torch.rand(bs, width, generator=g)  # (bs, T)
    return {
        "old_log_prob": old,
        "log_prob": (old + 0.3 * torch.randn(bs, width, generator=g)).requires_grad_(True),  # (bs, T)
        "advantages": torch.randn(bs, 1, generator=g).expand(bs, width).contiguous(),  # (bs, T)
        "response_mask": mask,
    }


def test_the_counter_counts_ops_and_every_kind_of_host_sync():
    """Hand-counted: add, sum, item (a _local_scalar_dense), bool(any) (any + _local_scalar_dense), tolist."""
    a, b = torch.ones(3), torch.ones(3)
    original_tolist = torch.Tensor.tolist
    with OpCounter() as counter:
        total = (a + b).sum()  # 2 ops
        total.item()  # 1 op, 1 sync
        bool((a > 0).any())  # 3 ops, 1 sync
        a.tolist()  # no op on CPU, 1 sync (wrapped)
    assert (counter.ops, counter.syncs) == (6, 3)
    assert torch.Tensor.tolist is original_tolist  # the wrapper is gone after the block
    assert counter.by_op["aten._local_scalar_dense.default"] == 2


@pytest.mark.parametrize("agg", AGG_MODES)
@pytest.mark.parametrize("weights", [False, True], ids=["no-is-weights", "is-weights"])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_fewer_ops_than_vanilla_and_at_most_one_host_sync(variant, agg, weights):
    mode, extra = VARIANTS[variant]
    inputs = _inputs()
    is_weights = torch.rand(inputs["log_prob"].shape, generator=torch.Generator().manual_seed(1)) if weights else None
    kwargs = {"loss_agg_mode": agg, "rollout_is_weights": is_weights}
    ref_ops, ref_syncs = count_loss_ops(get_policy_loss_fn("vanilla"), inputs, config=_config("vanilla", agg), **kwargs)
    config = _config(mode, agg, **extra)
    first = count_loss_ops(get_policy_loss_fn(mode), inputs, config=config, **kwargs)  # may build cached constants
    ops, syncs = count_loss_ops(get_policy_loss_fn(mode), inputs, config=config, **kwargs)
    assert max(first[0] - ops, 0) <= 4 and first[1] == syncs  # a first call adds at most the constants' ops
    assert ref_syncs == 3  # verl's three .item() calls: the reference is what we think it is
    assert syncs <= 1, f"{variant}: {syncs} host syncs"
    assert ops < ref_ops, f"{variant} {agg}: {ops} aten ops, vanilla {ref_ops}"


def _agg_reference(seq_loss, mask, agg, is_weights, info):
    loss_mat = seq_loss.unsqueeze(-1).expand(mask.shape)  # (bs, T)
    if is_weights is not None:
        loss_mat = loss_mat * is_weights
    return agg_loss(loss_mat=loss_mat, loss_mask=mask, loss_agg_mode=agg, **info)


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 9), min_size=1, max_size=6),
    agg=st.sampled_from(AGG_MODES),
    global_info=st.booleans(),
    weights=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_per_sequence_aggregation_equals_verls_agg_loss(lengths, agg, global_info, weights, seed):
    """Value and gradient of ``aggregate`` against ``agg_loss`` on the broadcast (bs, T) matrix (float64)."""
    g = torch.Generator().manual_seed(seed)
    width = max(lengths)
    mask = torch.arange(width).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)  # (bs, T)
    zeros = torch.zeros(mask.shape, dtype=torch.float64)
    batch = SequenceBatch.from_tokens(zeros, zeros, zeros, mask)
    info = (
        {"dp_size": 2, "batch_num_tokens": 3 * int(mask.sum()), "global_batch_size": 3 * len(lengths), "loss_scale_factor": 7}
        if global_info
        else {}
    )
    is_weights = torch.rand(mask.shape, generator=g, dtype=torch.float64) if weights else None
    seq_loss = torch.randn(len(lengths), generator=g, dtype=torch.float64).requires_grad_(True)  # (bs,)

    ours = aggregate(seq_loss, batch, agg, FSDPActorConfig(rollout_n=1, ppo_micro_batch_size_per_gpu=1,
                                                            global_batch_info=info), is_weights)  # fmt: skip
    (ours_grad,) = torch.autograd.grad(ours, seq_loss)
    ref = _agg_reference(seq_loss, mask, agg, is_weights, info)
    (ref_grad,) = torch.autograd.grad(ref, seq_loss)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(ours_grad, ref_grad, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("agg", AGG_MODES)
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_an_all_padding_micro_batch_gives_zero_loss_and_gradient_with_one_sync(variant, agg):
    """Without global batch info the local denominators are 0 here: the loss must still be an exact 0 (no
    0/0 NaN) that backpropagates zeros, found without a host sync of its own."""
    mode, extra = VARIANTS[variant]
    inputs = _inputs(bs=3, width=4)
    inputs["response_mask"] = torch.zeros(3, 4, dtype=torch.bool)  # (bs, T) no response token
    fn = get_policy_loss_fn(mode)
    with OpCounter() as counter:
        loss, metrics = fn(**inputs, loss_agg_mode=agg, config=_config(mode, agg, **extra), rollout_is_weights=None)
    assert counter.syncs == 1  # the metrics' one tolist
    assert loss.item() == 0.0
    loss.backward()
    assert inputs["log_prob"].grad.abs().sum() == 0
    assert metrics["actor/pg_clipfrac"] == metrics["actor/ppo_kl"] == 0.0
