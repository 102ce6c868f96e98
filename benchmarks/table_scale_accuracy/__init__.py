"""Accuracy of INT8 table scales per layer vs per output column, on the same LUT models.

Run: ``python -m benchmarks.table_scale_accuracy`` from the repository root (see ``run.py``)."""
