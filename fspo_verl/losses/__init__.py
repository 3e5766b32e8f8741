"""Policy losses registered into verl's ``POLICY_LOSS_REGISTRY`` on import: ``fspo``, ``fspo_adaptive`` and ``sspo``."""

from fspo_verl.losses.fspo import compute_policy_loss_fspo
from fspo_verl.losses.fspo_adaptive import compute_policy_loss_fspo_adaptive
from fspo_verl.losses.sspo import compute_policy_loss_sspo

__all__ = ["compute_policy_loss_fspo", "compute_policy_loss_fspo_adaptive", "compute_policy_loss_sspo"]
