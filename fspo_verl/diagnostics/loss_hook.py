"""Per-length-bin clip counts for verl's built-in policy losses, without replacing them.

verl's workers compute the policy loss in ``verl/workers/utils/losses.py::ppo_loss``, which looks the loss
up on every micro-batch with ``get_policy_loss_fn(loss_mode)`` (a name that module imported from
``core_algos``) and calls it with keyword arguments ``old_log_prob, log_prob, advantages, response_mask``
(all (bs, T)), ``loss_agg_mode``, ``config`` (the actor config) and ``rollout_is_weights``.

The hook replaces that one module-level name in ``verl.workers.utils.losses`` with a lookup that returns
verl's own function wrapped: the wrapper calls verl's loss unchanged (same arguments, same loss, same
metrics) and then adds, for every length bin of ``config.policy_loss.length_bins``::

    actor/<loss_mode>/seqs_len_<lo>_<hi>      sequences of the micro-batch with lo < L_i <= hi   (a count)
    actor/<loss_mode>/clipped_len_<lo>_<hi>   of those, "clipped" as ``fspo_verl.diagnostics.clip_rates``
                                              defines it for that loss                           (a count)

``POLICY_LOSS_REGISTRY`` is never touched: ``get_policy_loss_fn("gspo")`` still returns verl's
``compute_policy_loss_gspo`` everywhere, and the loss that trains is verl's. The counts follow the rules of
``fspo_verl.losses.length_bins`` (every bin on every micro-batch, counts not rates, no NaN, no
"max"/"min" in a key), so ``mean(clipped_len_X) / mean(seqs_len_X)`` is the exact clip rate of bin X.

When: only for the losses in ``BINNED_BUILTINS`` and only when ``config.policy_loss`` is an
``FSPOPolicyLossConfig`` with ``length_bin_metrics=true`` (its default). Our presets ``algorithm=gspo``,
``gmpo``, ``sapo``, ``cispo`` and ``grpo`` select that config class; a plain verl config sees verl's loss
alone. ``fspo`` and ``sspo`` emit the same keys themselves and pass through untouched.

Installed in every verl process by the plugin (``fspo_verl._registration``) as a post-import hook: the
patch happens when ``verl.workers.utils.losses`` is first imported (or at once if it already is), so
loading the plugin does not import verl's worker stack.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

from fspo_verl.common.verl_internals import is_patched, patch_once
from fspo_verl.diagnostics.clip_rates import sequence_clipped
from fspo_verl.losses.config import FSPOPolicyLossConfig
from fspo_verl.losses.length_bins import bin_metrics

#: the module whose ``get_policy_loss_fn`` name the hook replaces (``ppo_loss`` reads it at call time)
TARGET_MODULE = "verl.workers.utils.losses"

#: verl's built-in losses that get per-bin counts; each has an indicator in ``clip_rates.CLIP_INDICATORS``
BINNED_BUILTINS = ("vanilla", "gspo", "geo_mean", "sapo", "cispo")

_MARK = "_fspo_verl_length_bins"
_wrapped: dict[tuple[str, Callable], Callable] = {}


def enabled(config: Any) -> bool:
    """True when the actor config asks for per-bin counts (an ``FSPOPolicyLossConfig`` with the flag on)."""
    policy_loss = getattr(config, "policy_loss", None)
    return isinstance(policy_loss, FSPOPolicyLossConfig) and policy_loss.length_bin_metrics


def with_length_bins(loss_fn: Callable, loss_mode: str) -> Callable:
    """``loss_fn`` itself for losses we do not bin; otherwise a wrapper that adds the per-bin counts."""
    if loss_mode not in BINNED_BUILTINS:
        return loss_fn
    key = (loss_mode, loss_fn)
    if key not in _wrapped:

        @functools.wraps(loss_fn)
        def binned(**kwargs: Any) -> tuple[Any, dict[str, Any]]:
            loss, metrics = loss_fn(**kwargs)
            config = kwargs.get("config")
            if enabled(config):
                lengths_mask = kwargs["response_mask"].bool()  # (bs, T)
                clipped = sequence_clipped(
                    loss_mode,
                    kwargs["old_log_prob"].detach(),
                    kwargs["log_prob"].detach(),
                    kwargs["advantages"].detach(),
                    lengths_mask,
                    config,
                )  # (bs,) bool
                lengths = lengths_mask.sum(dim=-1).float()  # (bs,) L_i
                metrics = {
                    **metrics,
                    **bin_metrics(f"actor/{loss_mode}", lengths, lengths > 0, clipped, config.policy_loss.length_bins),
                }
            return loss, metrics

        setattr(binned, _MARK, loss_mode)
        _wrapped[key] = binned
    return _wrapped[key]


def _patch(module: ModuleType) -> None:
    """Replace ``module.get_policy_loss_fn`` by a lookup through ``with_length_bins`` (idempotent)."""
    original = getattr(module, "get_policy_loss_fn", None)
    if original is None:
        raise RuntimeError(
            f"{module.__name__} has no get_policy_loss_fn: this verl's ppo_loss looks its loss up differently, "
            "so fspo_verl cannot add per-length-bin clip metrics to verl's built-in losses (pin verl==0.9.1)"
        )
    if is_patched(original):
        return

    @functools.wraps(original)
    def get_policy_loss_fn(name: str) -> Callable:
        return with_length_bins(original(name), name)

    patch_once(module, "get_policy_loss_fn", lambda _verls: get_policy_loss_fn)


def installed() -> bool:
    """Whether ``verl.workers.utils.losses`` is imported and its loss lookup goes through the hook."""
    module = sys.modules.get(TARGET_MODULE)
    return module is not None and is_patched(getattr(module, "get_policy_loss_fn", None))


def register() -> None:
    """Patch ``verl.workers.utils.losses`` when it is imported (now, if it already is)."""
    from fspo_verl.common.import_hooks import when_imported

    when_imported(TARGET_MODULE, _patch)
