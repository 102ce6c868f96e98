"""``python -m benchmarks.demo_profile``: see ``benchmarks.demo_profile.run``."""

import sys

from benchmarks.demo_profile.run import main

sys.exit(main())
