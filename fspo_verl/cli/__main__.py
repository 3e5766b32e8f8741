"""``python -m fspo_verl.cli``: the same as the ``fspo-verl`` console script."""

import sys

from fspo_verl.cli import main

sys.exit(main())
