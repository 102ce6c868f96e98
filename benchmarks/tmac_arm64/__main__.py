"""``python -m benchmarks.tmac_arm64``: see ``benchmarks.tmac_arm64.run``."""

import sys

from .run import main

sys.exit(main())
