"""``python -m benchmarks.int8_dense_speed``: see ``benchmarks.int8_dense_speed.run``."""

import sys

from benchmarks.int8_dense_speed.run import main

sys.exit(main())
