"""lut_tvm.target_features: what a target's CPU can do, from LLVM, and the one answer every rule,
intrinsic and tuning space gets from it (not the host CPU: these tests pass on any machine)."""

from __future__ import annotations

import pytest

from lut_tvm.target_features import target_features
from lut_tvm.targets import resolve_target
from lut_tvm.tuning.space import target_variants
from schedules.intrin.lut_shuffle import (LUT16_SHUFFLE_AVX2, LUT16_SHUFFLE_AVX512, LUT16_SHUFFLE_NEON,
                                          shuffle_intrin_for_target)
from schedules.rules.dense_ops._loops import vector_lanes as dense_vector_lanes
from schedules.rules.lut_kind import vector_lanes as lut_vector_lanes


@pytest.mark.parametrize("spec,bits,shuffle,vbmi", [
    ("x86-avx2", 256, LUT16_SHUFFLE_AVX2, False),
    ("x86-avx512", 512, LUT16_SHUFFLE_AVX512, False),  # skylake-avx512: BW, no VBMI
    ({"kind": "llvm", "mcpu": "tigerlake"}, 512, LUT16_SHUFFLE_AVX512, True),  # missing from the old lists
    ({"kind": "llvm", "mcpu": "znver4"}, 512, LUT16_SHUFFLE_AVX512, True),
    ({"kind": "llvm", "mattr": ["+avx2"]}, 256, LUT16_SHUFFLE_AVX2, False),
    ({"kind": "llvm", "mcpu": "x86-64-v2"}, 256, None, False),  # SSE4.2: no shuffle the kernels use
    ("arm64", 128, LUT16_SHUFFLE_NEON, False),
])
def test_rules_intrinsics_and_spaces_get_one_answer(spec, bits, shuffle, vbmi):
    target = resolve_target(spec)
    features = target_features(target)
    assert features.vector_bits == bits
    assert features.byte_permute_128 is vbmi
    assert shuffle_intrin_for_target(target) == shuffle
    # the encode (lut_kind), the dense-op rules and the lookup agree on the vector width
    assert lut_vector_lanes(target, 32) == dense_vector_lanes(target, 32) == bits // 32
    assert len(target_variants(target)) == (2 if shuffle == LUT16_SHUFFLE_AVX512 else 1)
