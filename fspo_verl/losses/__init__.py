"""Policy losses registered into verl's ``POLICY_LOSS_REGISTRY`` on import: ``fspo``, ``fspo_adaptive`` and ``sspo``.

- ``fspo``, ``fspo_adaptive``, ``sspo``: one loss each; ``_sequence``: the per-sequence pieces they share
- ``config``: ``FSPOPolicyLossConfig``, the constants of every loss (configs name it ``fspo_verl.config.FSPOPolicyLossConfig``)
- ``length_bins``: the response-length bins of the per-bin clip counts every loss emits
- ``length_spread``, ``normal``: how the summed log-ratio spreads with length, and the normal tail behind
  ``fspo_adaptive``'s band
"""

from fspo_verl.losses.fspo import compute_policy_loss_fspo
from fspo_verl.losses.fspo_adaptive import compute_policy_loss_fspo_adaptive
from fspo_verl.losses.sspo import compute_policy_loss_sspo

__all__ = ["compute_policy_loss_fspo", "compute_policy_loss_fspo_adaptive", "compute_policy_loss_sspo"]
