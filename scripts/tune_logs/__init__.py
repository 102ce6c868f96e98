"""Tune the shipped MetaSchedule logs (run from the repository root) for every case of the speed benchmark and the demo CNN.

    python -m scripts.tune_logs [--target x86-avx512] [--trials N] [--only kernels|models|demo]
                                         [--cases SUBSTR ...] [--log-dir DIR] [--work DIR]
                                         [--max-minutes M] [--prune] [--dry-run]

Cases, each tuned as its LUT plan model and as its dense model (``lut_tvm.tuning.tune_model``):
the speed benchmark's kernel cases (``shapes.kernel_cases``), its whole digits CNN (every plan)
and all-MiniLM-L6-v2, then the demo CNN of ``make demo`` (``lut_tvm.demo``: seeded digits CNN,
batch 72, k-means plan, as ``tuning_logs/README.md`` describes). Models, plans and inputs are
the benchmark's own: its case folders (``kernels.prepare_kernel``, ``models.prepare_digits`` /
``prepare_minilm``) are built in ``--work`` (complete ones are reused) and read back.

A task (PrimFunc) that several cases share is tuned once, by the first case that has it; the
others list it as shared. The one-layer kernel cases are tuned side by side (one ``tune_model``
session for the LUT ones, one for the dense ones), the other cases one session each. What was tuned is remembered by structural hash in
``<log dir>/<device>/TUNED.json``: a second run tunes only what is still missing. ``TUNED.md``
beside it is the table per case (tasks, trials, default vs tuned latency, wall time). Ctrl-C
stops after the batch in flight; every record is kept and both files are written.
"""

from .cli import DEFAULT_TRIALS, main
from .state import REPORT_FILE, STATE_FILE, prune_in_place

__all__ = ["DEFAULT_TRIALS", "REPORT_FILE", "STATE_FILE", "main", "prune_in_place"]
