"""Cross-setting checks run in the driver, before Ray starts any worker.

verl's own ``validate_config`` checks each section; these check the combinations our presets rely on.
Each problem is one complete sentence that names the key, its value and the fix, so ``fspo-verl validate``
can print all of them at once instead of failing on the first.

Registered checks (``CHECKS``) each take the composed config and return ``(errors, warnings)``. Another
module can add one with ``@register_check``.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

from omegaconf import DictConfig

from fspo_verl.common.config_lookup import config_value
from fspo_verl.downsampling.polling import POLL_INTERVAL_KEY, poll_interval_error
from fspo_verl.downsampling.settings import check_downsampling_config

ACTOR = "actor_rollout_ref.actor"
ROLLOUT = "actor_rollout_ref.rollout"
SEQUENCE_LOSSES = ("fspo", "fspo_adaptive", "sspo")
#: loss_agg_mode under which every sequence counts once, as the FSPO/SSPO objectives are written
RECOMMENDED_AGG = "seq-mean-token-mean"


@dataclass
class Findings:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def extend(self, other: "Findings") -> None:
        self.errors.extend(other.errors)
        self.warnings.extend(other.warnings)


Check = Callable[[DictConfig], Findings]
CHECKS: list[Check] = []


def register_check(fn: Check) -> Check:
    CHECKS.append(fn)
    return fn


@register_check
def check_exact_on_policy(config: DictConfig) -> Findings:
    """OPO's exact on-policy recipe (arXiv 2505.23585): one gradient step per rollout batch, so the
    importance ratio is 1 and clipping never binds; no KL loss and no entropy bonus."""
    found = Findings()
    if not config_value(config, "fspo_verl.exact_on_policy", False):
        return found
    batch = config_value(config, "data.train_batch_size")
    mini = config_value(config, f"{ACTOR}.ppo_mini_batch_size")
    if mini != batch:
        found.errors.append(
            f"{ACTOR}.ppo_mini_batch_size={mini} breaks exact on-policy training (fspo_verl.exact_on_policy=true): "
            f"it must equal data.train_batch_size={batch} so that each rollout batch is one gradient step; "
            f"set {ACTOR}.ppo_mini_batch_size={batch}."
        )
    for key, want in (("ppo_epochs", 1), ("use_kl_loss", False), ("entropy_coeff", 0)):
        value = config_value(config, f"{ACTOR}.{key}")
        if value != want:
            found.errors.append(
                f"{ACTOR}.{key}={value} breaks exact on-policy training (fspo_verl.exact_on_policy=true); "
                f"set {ACTOR}.{key}={str(want).lower()}."
            )
    if config_value(config, "algorithm.use_kl_in_reward", False):
        found.errors.append(
            "algorithm.use_kl_in_reward=True breaks exact on-policy OPO (no KL term); set algorithm.use_kl_in_reward=false."
        )
    return found


@register_check
def check_tensor_parallel_fits_a_node(config: DictConfig) -> Findings:
    found = Findings()
    tp = config_value(config, f"{ROLLOUT}.tensor_model_parallel_size", 1) or 1
    gpus = config_value(config, "trainer.n_gpus_per_node", 1)
    if config_value(config, "trainer.device", "cuda") != "cpu" and tp > gpus:
        found.errors.append(
            f"{ROLLOUT}.tensor_model_parallel_size={tp} is larger than trainer.n_gpus_per_node={gpus}: "
            f"a rollout replica cannot span nodes; set {ROLLOUT}.tensor_model_parallel_size to at most {gpus}."
        )
    return found


@register_check
def check_sequence_loss_settings(config: DictConfig) -> Findings:
    found = Findings()
    loss_mode = config_value(config, f"{ACTOR}.policy_loss.loss_mode")
    if loss_mode not in SEQUENCE_LOSSES:
        return found
    agg = config_value(config, f"{ACTOR}.loss_agg_mode")
    if agg != RECOMMENDED_AGG:
        found.warnings.append(
            f"{ACTOR}.loss_agg_mode={agg} with loss_mode={loss_mode}: {loss_mode} computes one loss per sequence, and "
            f"'{agg}' weights sequences unequally (token-mean by their length); the paper's objective is a mean over "
            f"sequences. Set {ACTOR}.loss_agg_mode={RECOMMENDED_AGG} unless you mean it."
        )
    target = config_value(config, f"{ACTOR}.policy_loss._target_")
    if target != "fspo_verl.config.FSPOPolicyLossConfig":
        found.warnings.append(
            f"{ACTOR}.policy_loss._target_={target} with loss_mode={loss_mode}: the FSPO/SSPO constants cannot be set "
            f"and their defaults apply; set {ACTOR}.policy_loss._target_=fspo_verl.config.FSPOPolicyLossConfig."
        )
    return found


@register_check
def check_micro_batch_divides_mini_batch(config: DictConfig) -> Findings:
    """Each FSDP rank splits its share of a mini-batch into micro-batches of ppo_micro_batch_size_per_gpu.

    verl validates only the deprecated global ``ppo_micro_batch_size``; a per-GPU micro-batch that does
    not divide the per-rank mini-batch (``ppo_mini_batch_size * rollout.n / dp``) passes its checks and then
    fails inside every worker ("data size must be divisible by ... micro_batch_size_per_gpu"). The
    down-sampling rule ppo_mini_batch_size = prompts_per_update * keep / n makes that mini-batch small, so
    this bites PODS runs first.
    """
    found = Findings()
    n = config_value(config, f"{ROLLOUT}.n", 1)
    per_node, nodes = config_value(config, "trainer.n_gpus_per_node", 1), config_value(config, "trainer.nnodes", 1)
    if not all(_count(v) for v in (n, per_node, nodes)):
        return found  # fspo_verl.preflight.values names the count that is not one
    gpus = per_node * nodes
    for role in (ACTOR, "critic"):
        if role == "critic" and not _critic_enabled(config):
            continue
        if config_value(config, f"{role}.strategy") not in ("fsdp", "fsdp2") or config_value(config, f"{role}.use_dynamic_bsz", False):
            continue
        micro = config_value(config, f"{role}.ppo_micro_batch_size_per_gpu")
        mini = config_value(config, f"{role}.ppo_mini_batch_size")
        if not _count(micro) or not _count(mini):
            continue
        dp = gpus // max(1, config_value(config, f"{role}.ulysses_sequence_parallel_size", 1) or 1)
        per_rank, remainder = divmod(mini * n, max(dp, 1))
        if remainder or per_rank == 0 or per_rank % micro:
            fix = max(d for d in range(1, micro + 1) if per_rank and per_rank % d == 0) if per_rank else None
            found.errors.append(
                f"{role}.ppo_micro_batch_size_per_gpu={micro} does not divide the per-GPU mini-batch "
                f"{role}.ppo_mini_batch_size={mini} x {ROLLOUT}.n={n} / {dp} data-parallel ranks = {mini * n / dp:g} "
                f"samples; verl's workers would fail with 'data size must be divisible by ... "
                f"micro_batch_size_per_gpu'. "
                + (f"Set {role}.ppo_micro_batch_size_per_gpu={fix}." if fix else
                   f"Raise {role}.ppo_mini_batch_size so that it times {ROLLOUT}.n is a multiple of {dp}.")
            )
    return found


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _critic_enabled(config: DictConfig) -> bool:
    from verl.trainer.ppo.utils import need_critic

    with warnings.catch_warnings():  # need_critic warns about the critic; verl's validate_config says it once
        warnings.simplefilter("ignore")
        try:
            return bool(need_critic(config))
        except Exception:  # noqa: BLE001 - a config without critic keys has no critic
            return False


#: exceptions that mean a check (or verl's validate_config) tripped over a value of the wrong kind, not a
#: finding of its own: reported only when no other check named a problem (it is then the only clue)
CRASHES = (TypeError, ZeroDivisionError, AttributeError, KeyError, IndexError)


def run_checks(config: DictConfig) -> Findings:
    """All registered checks (with ``fspo_verl.preflight``'s) plus verl's own ``validate_config``.

    Never raises for a bad setting. A check that crashes on a broken config, and verl's validate_config
    when it crashes (``ZeroDivisionError`` for ``trainer.nnodes=0``) or repeats a key already named (in its
    short names), add nothing when another check has named the problem: one line per problem, in our words.
    """
    import fspo_verl.preflight  # noqa: F401 - registers the pre-flight checks on first use

    found = Findings()
    crashed: list[str] = []
    for check in CHECKS:
        try:
            found.extend(check(config))
        except Exception as err:  # noqa: BLE001 - one broken key must not hide the other problems
            crashed.append(f"a setting read by {check.__name__} is not of the kind it needs ({type(err).__name__}: {err}); "
                           f"fix the keys it reads, or report this with the command line if they look right")
    verl_found, verl_crashed = _verl_validate(config)
    named = {_leaf(e) for e in found.errors} - {None}
    for error in verl_found.errors:
        if verl_crashed and found.errors:
            continue  # verl tripped over a value our checks name
        if any(re.search(rf"(?<!\w){re.escape(leaf)}(?!\w)", error) for leaf in named):
            continue  # verl's words for a key one of our lines names in full
        if not any(error.split(": ", 1)[-1] in mine for mine in found.errors):
            found.errors.append(error)
    if not found.errors:
        found.errors.extend(crashed)
    return found


def _leaf(message: str) -> str | None:
    """The last part of the key a ``key=value: ...`` message names."""
    match = re.match(r"^([\w.]+)=", message)
    return match[1].rsplit(".", 1)[-1] if match else None


def _verl_validate(config: DictConfig) -> tuple[Findings, bool]:
    """verl's validate_config; (its problem, whether it was a crash rather than one of its own checks)."""
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    found = Findings()
    try:
        validate_config(config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))
    except Exception as err:  # noqa: BLE001 - verl raises AssertionError, ValueError or Hydra's wrappers
        from fspo_verl.preflight.messages import error_text

        inner = err
        while inner.__cause__ is not None:
            inner = inner.__cause__
        found.errors.append(f"verl's validate_config rejected the config: {error_text(err)}")
        return found, isinstance(inner, CRASHES)
    return found, False


@register_check
def check_downsampling(config: DictConfig) -> Findings:
    """PODS/GFPO settings and the batch geometry after keeping m of n (``fspo_verl.downsampling.settings``)."""
    return Findings(errors=check_downsampling_config(config))


@register_check
def check_poll_interval(config: DictConfig) -> Findings:
    """``trainer.v1.sampler.poll_interval``: seconds between the replay buffer's checks (``fspo_verl.downsampling.polling``)."""
    value = config_value(config, POLL_INTERVAL_KEY)
    error = None if value is None else poll_interval_error(value)
    return Findings(errors=[error] if error else [])
