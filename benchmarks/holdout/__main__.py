"""``python -m benchmarks.holdout``: see ``benchmarks.holdout.run``."""

import sys

from benchmarks.holdout.run import main

sys.exit(main())
