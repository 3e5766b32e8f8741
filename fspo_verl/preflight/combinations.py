"""Cross-setting checks: the combinations of verl settings our presets and losses rely on.

verl's own ``validate_config`` checks each section; these check combinations across sections.
"""

from __future__ import annotations

from omegaconf import DictConfig

from fspo_verl.common.config_lookup import config_value
from fspo_verl.common.critic import critic_used
from fspo_verl.preflight.registry import Findings, register_check

ACTOR = "actor_rollout_ref.actor"
ROLLOUT = "actor_rollout_ref.rollout"
SEQUENCE_LOSSES = ("fspo", "fspo_adaptive", "sspo")
#: loss_agg_mode under which every sequence counts once, as the FSPO/SSPO objectives are written
RECOMMENDED_AGG = "seq-mean-token-mean"


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
        if role == "critic" and not critic_used(config):
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
