"""``python -m benchmarks.table_scale_accuracy``: see ``benchmarks.table_scale_accuracy.run``."""

from benchmarks.table_scale_accuracy.run import main

main()
