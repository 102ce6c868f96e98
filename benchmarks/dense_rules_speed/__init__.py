"""Time models through the Relax CPU pipeline under the default dense-op schedule rules.

Run: ``python -m benchmarks.dense_rules_speed`` from the repository root (see ``run.py``)."""
