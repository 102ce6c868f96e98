"""``python -m benchmarks.tmac_speed``: see ``benchmarks.tmac_speed.run``."""

import sys

from .run import main

sys.exit(main())
