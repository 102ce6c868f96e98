"""Settings that keep the optimizer tests quick (few V, few timing runs, few k-means rows)."""

FAST = dict(sub_lens=(4, 16), timing_number=5, timing_repeat=3, max_rows=1024)
