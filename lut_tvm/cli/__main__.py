"""``python -m lut_tvm.cli``."""

import sys

from . import main

sys.exit(main())
