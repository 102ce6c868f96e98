"""``python -m benchmarks.accuracy``: see ``benchmarks.accuracy.run``."""

import sys

from benchmarks.accuracy.run import main

sys.exit(main())
