"""``python -m benchmarks.speed``: see ``benchmarks.speed.run``."""

import sys

from benchmarks.speed.run import main

sys.exit(main())
