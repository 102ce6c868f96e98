"""Exact (LUT-NA) kernel cases: one layer quantized at 2, 4 and 8 weight bits, compiled in each look-up form.

The form is chosen by the target (``relay_passes.rewrite_dense_to_exact_lut``: ``auto`` look-up;
``schedules.intrin.exact_shuffle``): a target with AVX-512BW gets the int16 word permute
(``vpermw``, 32 look-ups per instruction), one with AVX2 but not AVX-512BW the byte shuffle
(``vpshufb`` ymm, 32 look-ups per two shuffles), one where no shuffle rule matches the gather
form. On this machine the three are ``x86-avx512``, ``x86-avx2`` and an AVX-512F target without
``avx512bw`` in its features (the same vector width as the host, no shuffle known to the rules).
The byte shuffle on zmm registers (AVX-512BW ``vpshufb``) is not reachable through
``lut_tvm.compile``: with AVX-512BW the word form is always taken.

Weights are the shape's seeded ``nn.Linear`` / ``nn.Conv2d`` (dense: no zero groups to skip),
inputs and calibration seeded standard normal; ``lut_tvm.exact.quantize_model`` calibrates the
int8 input scale and quantizes the weight per channel. Each variant stores the output of
``QuantizedTorchModel`` (the integer reference computed exactly, what ``benchmarks.lutna``
proves against) in ``expected_<variant>.npy``; the timing worker compares the compiled output with
it bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .prepare import prepare_case, variant_slug
from .shapes import KernelCase, minilm_cases, resnet18_cases

BITS = (2, 4, 8)
CALIBRATION_ROWS = 256  # dense rows / conv images x positions: enough for a max-abs scale
# No 16-entry byte shuffle the rules use (SSE4.2: no AVX2): the exact rules fall back to the gather form.
# (AVX-512F without BW is no such target: LLVM enables AVX2, and with it vpshufb ymm, under AVX-512F.)
NO_SHUFFLE_TARGET = {"kind": "llvm", "mcpu": "x86-64-v2"}


@dataclass(frozen=True)
class ExactForm:
    """One look-up form and the target that selects it."""

    key: str  # tmac / word / shuffle / gather
    title: str
    target: object  # a friendly target name or a TVM target dict

    def describe_target(self) -> str:
        if isinstance(self.target, str):
            return self.target
        parts = [f"mcpu={self.target['mcpu']}"] if self.target.get("mcpu") else []
        parts += [",".join(self.target["mattr"])] if self.target.get("mattr") else []
        return " ".join(["llvm", *parts])


def exact_forms(flags: set[str]) -> list[ExactForm]:
    """The look-up forms this CPU runs, fastest first (``flags``: /proc/cpuinfo's)."""
    forms = []
    if "avx2" in flags:
        forms.append(ExactForm("tmac", "T-MAC (per-call tables; vpermw on AVX-512BW, vpshufb on AVX2)",
                               "x86-avx512" if "avx512bw" in flags else "x86-avx2"))
    if "avx512bw" in flags:
        forms.append(ExactForm("word", "AVX-512BW word permute (vpermw)", "x86-avx512"))
    if "avx2" in flags:
        forms.append(ExactForm("shuffle", "AVX2 byte shuffle (vpshufb ymm)", "x86-avx2"))
    elif "asimd" in flags:
        forms.append(ExactForm("tmac", "T-MAC (per-call tables; NEON tbl)", "arm64"))
        forms.append(ExactForm("shuffle", "NEON byte shuffle (tbl)", "arm64"))
    gather_target = NO_SHUFFLE_TARGET if "sse4_2" in flags else {"kind": "llvm"}
    forms.append(ExactForm("gather", "gather (no shuffle)", gather_target))
    return forms


# The exact rewrite's look-up form (``ExactPlan.lookup``) of each benchmarked form.
FORM_LOOKUP = {"tmac": "tmac", "word": "shuffle", "shuffle": "shuffle", "gather": "gather"}


def chosen_intrinsic(target, key: str = "shuffle") -> str:
    """The look-up intrinsic the exact rules pick for ``target`` and form ``key`` (``gather`` when none)."""
    from lut_tvm.targets import resolve_target  # pylint: disable=import-outside-toplevel
    from schedules.intrin.exact_shuffle import (  # pylint: disable=import-outside-toplevel
        exact_shuffle_intrin_for_target, exact_word_intrin_for_target)

    from schedules.intrin.tmac import tmac_form_for_target  # pylint: disable=import-outside-toplevel

    tvm_target = resolve_target(target)
    if key == "tmac":
        form = tmac_form_for_target(tvm_target)
        if form is None:
            return "gather"
        return "tmac vpermw" if form[1] else "tmac tbl" if form[0] == 16 else "tmac vpshufb"
    return exact_word_intrin_for_target(tvm_target) or exact_shuffle_intrin_for_target(tvm_target) or "gather"


@dataclass
class ExactVariant:
    """What one exact library is built from: the plan, the form, and the reference output."""

    plan: object  # lut_tvm.exact.ExactPlan
    form: ExactForm
    expected: np.ndarray
    plan_note: str = ""


def build_exact_variant(folder: Path, label: str, variant: ExactVariant, source, example) -> dict:
    """``plan_<slug>.npz``, ``expected_<slug>.npy`` and ``lut_<slug>.so`` for ``prepare_case``."""
    from benchmarks.common.peers import compile_tvm  # pylint: disable=import-outside-toplevel

    slug = variant_slug(label)
    variant.plan.save(folder / f"plan_{slug}.npz")
    np.save(folder / f"expected_{slug}.npy", variant.expected)
    intrinsic = chosen_intrinsic(variant.form.target, variant.form.key)
    variant.plan.lookup = FORM_LOOKUP[variant.form.key]
    if (intrinsic == "gather") != (variant.form.key == "gather"):
        raise RuntimeError(f"{folder.name} {label}: target {variant.form.describe_target()} selects "
                           f"{intrinsic}, not the {variant.form.key} form")
    built = compile_tvm(source, variant.plan, example, folder / f"lut_{slug}.so", target=variant.form.target)
    bits = variant.plan.bits_per_layer()
    return {"library": f"lut_{slug}.so", "schedule": built["schedule"], "expected": f"expected_{slug}.npy",
            "form": variant.form.key, "form_title": variant.form.title,
            "target": variant.form.describe_target(), "intrinsic": intrinsic,
            "bits": bits, "mean_bits": float(np.mean(list(bits.values()))), "plan_note": variant.plan_note,
            "lut_layers": built["lut_layers"]}


def reference_output(model, plan, example: np.ndarray) -> np.ndarray:
    """The integer reference's output (``QuantizedTorchModel``, exact) of ``model`` under ``plan``."""
    from lut_tvm.exact import QuantizedTorchModel  # pylint: disable=import-outside-toplevel
    from lut_tvm.exact.quantize import predict  # pylint: disable=import-outside-toplevel

    return predict(QuantizedTorchModel(model, plan), example)


def exact_kernel_cases() -> list[KernelCase]:
    """MiniLM's 384x384 linear (M = 128) and ResNet-18's layer2 3x3 conv (128->128 @16x16)."""
    linear = next(c for c in minilm_cases() if (c.in_ch, c.out_ch) == (384, 384))
    conv = next(c for c in resnet18_cases() if c.name == "layer2 3x3")
    return [linear, conv]


def prepare_exact_kernel(case: KernelCase, folder: Path, bits=BITS, forms=None) -> dict:
    """Every peer and one exact library per (form, bits) of ``case`` in ``folder``."""
    from lut_tvm.exact import quantize_model  # pylint: disable=import-outside-toplevel
    from lut_tvm.targets import host_cpu_flags  # pylint: disable=import-outside-toplevel

    forms = exact_forms(host_cpu_flags()) if forms is None else forms
    rng = np.random.default_rng(0)
    model = case.build()
    example = rng.standard_normal(case.input_shape).astype(np.float32)
    samples = max(1, -(-CALIBRATION_ROWS // (case.rows // case.batch)))
    calibration = rng.standard_normal((samples, *case.input_shape[1:])).astype(np.float32)
    variants = {}
    for b in bits:
        plan = quantize_model(model, calibration, b)
        expected = reference_output(model, plan, example)
        for form in forms:
            variants[f"{form.key} b={b}"] = ExactVariant(plan, form, expected)
    meta = {"exact_kind": "kernel", "name": case.name, "case": case.to_dict(), "flops": case.flops,
            "torch": {"builder": "kernel", "weights": "state_dict"},
            "forms": [{"key": f.key, "title": f.title, "target": f.describe_target()} for f in forms],
            "weights": "seeded random (dense: no zero groups)", "profile": False,
            "data": f"random normal input; calibration {samples} random normal sample(s)"}
    return prepare_case(folder, model, example, variants, meta, build_variant=build_exact_variant,
                        calibration=calibration)
