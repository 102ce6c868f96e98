"""``python -m benchmarks.dense_rules_speed``: see ``benchmarks.dense_rules_speed.run``."""

import sys

from benchmarks.dense_rules_speed.run import main

sys.exit(main())
