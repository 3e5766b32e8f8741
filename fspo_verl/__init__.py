"""fspo_verl: FSPO/SSPO policy losses, OPO baselines and PODS/GFPO down-sampling for verl 0.9.x.

This is the module verl's ``verl.plugins`` entry point loads on every ``import verl``, in every process.
verl swallows a plugin that raises on import (it logs at DEBUG), which would silently remove every
registration, so this module stays light: it imports only torch and modules every verl 0.9.x install
has. Run ``fspo-verl doctor`` to see what a bare ``import verl`` registers.
"""

from fspo_verl._registration import LOAD_ERRORS, register_all

__version__ = "0.1.0"

register_all()

__all__ = ["LOAD_ERRORS", "__version__"]
