"""benchmarks.tmac_arm64's static count: instructions per 16 look-ups of the innermost ``tbl`` loops."""

from benchmarks.tmac_arm64.run import innermost_tbl_loops, per_16_lookups

ASM = """kernel:
\tmov\tx8, xzr
.LBB0_1:
\tmov\tx9, xzr
.LBB0_2:
\tldr\tq0, [x0, x9]
\ttbl\tv1.16b, { v0.16b }, v2.16b
\ttbl\tv3.16b, { v5.16b }, v2.16b
\tzip1\tv6.16b, v1.16b, v3.16b
\tadd\tv4.8h, v4.8h, v6.8h
\tadd\tx9, x9, #16
\tb.ne\t.LBB0_2
\tadd\tx8, x8, #1
\tcbnz\tx8, .LBB0_1
.LBB0_3:
\tadd\tx0, x0, #1
\tb.ne\t.LBB0_3
\tret
other:
\tb\t.LBB0_2
"""


def test_only_the_innermost_tbl_loop_counts():
    """The outer loop holds the tbl loop, the last loop has no tbl, another function's branch to the
    label is no loop: one loop of 7 instructions with 2 tbl, 7 instructions per 16 look-ups."""
    assert innermost_tbl_loops(ASM) == [(7, 2)]
    assert per_16_lookups(ASM) == 7.0
    assert per_16_lookups("kernel:\n\tret\n") is None
