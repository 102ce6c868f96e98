"""``python -m benchmarks.encode_speed``: see ``benchmarks.encode_speed.run``."""

import sys

from benchmarks.encode_speed.run import main

sys.exit(main())
