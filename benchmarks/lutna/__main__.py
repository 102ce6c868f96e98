"""``python -m benchmarks.lutna``: see ``benchmarks.lutna.run``."""

import sys

from .run import main

sys.exit(main())
