"""Profile the bundled demo (digits CNN, batch 72): per-kernel and whole-model medians of the

Run: ``python -m benchmarks.demo_profile`` from the repository root (see ``run.py``)."""
