"""Advantage estimators registered into verl's ``ADV_ESTIMATOR_REGISTRY`` on import: ``opo_vectorized``."""

from fspo_verl.advantages.opo import compute_opo_vectorized_outcome_advantage, group_ids

__all__ = ["compute_opo_vectorized_outcome_advantage", "group_ids"]
