"""Default schedule rules in priority order: LUT kernels, then the dense ops left in the graph.

The first rule that returns a schedule wins (dlight's ``ApplyDefaultSchedule`` contract); the
dense-op list ends with a fallback that schedules any PrimFunc, so nothing is left unscheduled.
"""

from .dense_ops import DENSE_OP_RULES
from .exact_lut import ExactLutRule
from .int8_dense import Int8DenseRule
from .lut_encode import LutEncodeRule
from .lut_encode_rows import LutEncodeRowsRule
from .lut_encode_rows_int8 import LutEncodeRowsInt8Rule
from .lut_lookup import LutLookupRule
from .lut_lookup_shuffle import LutLookupShuffleRule
from .tmac import TmacRule

LUT_RULES = [LutEncodeRule(), LutEncodeRowsRule(), LutEncodeRowsInt8Rule(), LutLookupRule(), LutLookupShuffleRule(),
             ExactLutRule(), TmacRule(), Int8DenseRule()]


def default_rules() -> list:
    """Every default rule, LUT kernels first."""
    return [*LUT_RULES, *DENSE_OP_RULES]
