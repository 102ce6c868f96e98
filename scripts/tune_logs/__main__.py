"""``python -m scripts.tune_logs``: see the package's docstring."""

import sys

from .cli import main

sys.exit(main())
