"""``python -m benchmarks.lut_kernel_speed``: see ``benchmarks.lut_kernel_speed.run``."""

import sys

from benchmarks.lut_kernel_speed.run import main

sys.exit(main())
