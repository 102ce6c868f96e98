"""The compile pipeline, as named stages read top to bottom: import, bind plan, LUT rewrite,
legalize + fuse, apply tuning log, schedule, build. ``dump_ir`` writes the module after each
stage. ``compile``, ``tune`` (``lowered_module``), the optimizer and the tests' code tap
(``compile_imported``) all run these same stages."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import tvm
from tvm import relax

from relay_passes.conv2d_weight_hwio import Conv2dWeightHWIO
from relay_passes.conv2d_weight_packed import Conv2dWeightPacked
from relay_passes.fast_math import FastMath
from relay_passes.fold_batch_norm import FoldBatchNorm
from relay_passes.fuse_exact_bias import FuseExactBias
from relay_passes.fuse_lut_epilogue import FuseLUTEpilogue
from relay_passes.layer_sites import LayerSite, unique_layer_sites
from relay_passes.rewrite_conv2d_to_exact_lut import RewriteConv2dToExactLUT
from relay_passes.rewrite_conv2d_to_lut import RewriteConv2dToLUT
from relay_passes.rewrite_dense_to_exact_lut import RewriteDenseToExactLUT
from relay_passes.rewrite_dense_to_int8 import RewriteDenseToInt8
from relay_passes.rewrite_dense_to_lut import RewriteDenseToLUT
from relay_passes.rewrite_grouped_conv2d_to_lut import RewriteGroupedConv2dToLUT
from schedules.rules import default_rules

from . import _tvm_compat
from .errors import LutTvmError, PlanError
from .exact.plan import ExactPlan
from .frontends import ImportedModel, import_model
from .plan import Plan, PlanKind, plan_file_format
from .runtime import ArtifactInfo, CompiledModel
from .targets import resolve_target
from .tuning.logs import apply_tuning_log, resolve_log_dir

LOG = logging.getLogger("lut_tvm")


def layer_sites(imported: ImportedModel) -> list[LayerSite]:
    """The replaceable layers of an imported model, in graph order, one per distinct weight."""
    return [site for _, site in unique_layer_sites(imported.mod["main"])]


def bind_plan(plan: PlanKind, imported: ImportedModel) -> list[str]:
    """Check every plan layer binds to a weight of the model; returns the bound layer names."""
    sites = {site.fingerprint: site for site in layer_sites(imported)}
    unbound = [layer for layer in plan.layers if layer.weight_fingerprint not in sites]
    if unbound:
        first = unbound[0]
        raise PlanError(
            f"{plan.LABEL} layer {first.name!r} ({first.kind.value} weight {list(first.weight_shape)}, "
            f"fingerprint {first.weight_fingerprint}) matches no weight of {imported.source}"
            + (f" (and {len(unbound) - 1} more plan layers do not either)" if len(unbound) > 1 else "")
            + ": the plan was made for another model"
        )
    for layer in plan.layers:
        site = sites[layer.weight_fingerprint]
        if site.kind is not layer.kind:
            raise PlanError(f"{plan.LABEL} layer {layer.name!r}: field 'kind' is {layer.kind.value}, "
                            f"the model's layer is {site.kind.value}")
    return [layer.name for layer in plan.layers]


def lut_rewrite_passes(plan: Plan) -> list:
    """Stage 3: planned layers to encode + lookup/accumulate, bias and ReLU folded in; the plan's
    int8 dense layers (mode ``int8_dense``) to the int8 kernels."""
    return [RewriteDenseToInt8(plan), RewriteDenseToLUT(plan), RewriteConv2dToLUT(plan),
            RewriteGroupedConv2dToLUT(plan), FuseLUTEpilogue()]


def exact_rewrite_passes(plan: ExactPlan) -> list:
    """Stage 3 for an exact plan: planned dense and conv2d layers to exact (LUT-NA) kernels,
    constant bias adds folded into their int32 bias; the look-up form is the plan's ``lookup``."""
    return [RewriteDenseToExactLUT(plan, plan.lookup), RewriteConv2dToExactLUT(plan, plan.lookup), FuseExactBias()]


# Stage 3 per plan kind: the passes that rewrite its layers. A new plan kind adds its entry here.
REWRITE_STAGES = {Plan: lut_rewrite_passes, ExactPlan: exact_rewrite_passes}


def rewrite_passes(plan: PlanKind) -> list:
    """Stage 3 for ``plan``'s kind (``REWRITE_STAGES``)."""
    try:
        return REWRITE_STAGES[type(plan)](plan)
    except KeyError:
        raise PlanError(f"no rewrite passes for plan kind {type(plan).__name__}; one of "
                        f"{[kind.__name__ for kind in REWRITE_STAGES]} is expected") from None


def load_plan(plan) -> PlanKind:
    """A plan (of any kind in ``REWRITE_STAGES``) from a plan object or file (the kind read from
    the file's metadata; a file no kind names is read as a Plan, whose loader says what is wrong)."""
    if not isinstance(plan, (str, Path)):
        return plan or Plan(layers=[])
    file_format = plan_file_format(plan)
    kind = next((kind for kind in REWRITE_STAGES if kind.FORMAT == file_format), Plan)
    return kind.load(plan)


@contextlib.contextmanager
def _naming_plan_file(plan: PlanKind, plan_path):
    """Prefix the PlanErrors raised inside with the plan file they come from, if any."""
    try:
        yield
    except PlanError as err:
        if plan_path is None:
            raise
        raise PlanError(f"{plan.LABEL} file {str(plan_path)!r}: {err}") from None


def legalize_passes(fast_math: bool = True) -> list:
    """Stage 4: every remaining op to TIR, fused the way the CPU backend fuses it; with
    ``fast_math`` GELU/softmax/exp/erf/tanh in their vectorizable forms first (``FastMath``)."""
    return [
        *([FastMath()] if fast_math else []),
        FoldBatchNorm(),
        Conv2dWeightPacked(),
        Conv2dWeightHWIO(),
        relax.transform.LegalizeOps(),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
        relax.transform.DeadCodeElimination(),
    ]


def _dump(dump_dir: Path | None, index: int, stage: str, mod: tvm.IRModule) -> None:
    if dump_dir is not None:
        dump_dir.mkdir(parents=True, exist_ok=True)
        (dump_dir / f"{index:02d}_{stage}.py").write_text(mod.script(show_meta=False))


def build_relax(mod: tvm.IRModule, tvm_target, dump_dir: Path | None = None, tuning_logs=None,
                fast_math: bool = True):
    """Stages 4-6 (see ``build_relax_with_log``); returns the VM executable only."""
    return build_relax_with_log(mod, tvm_target, dump_dir, tuning_logs, fast_math)[0]


def build_relax_with_log(mod: tvm.IRModule, tvm_target, dump_dir: Path | None = None,
                         tuning_logs=None, fast_math: bool = True):
    """Stages 4-6: legalize and fuse, schedule every PrimFunc (the matching tuning log in the
    folder ``tuning_logs`` first, if given, then the default rules), build the VM executable.
    Returns ``(executable, AppliedLog or None)``."""
    with tvm_target:
        mod = tvm.transform.Sequential(legalize_passes(fast_math), name="legalize")(mod)
        _dump(dump_dir, 3, "legalized", mod)
        mod, applied = apply_tuning_log(mod, tvm_target, tuning_logs)
        mod = _tvm_compat.default_schedule_pass(default_rules())(mod)
        _dump(dump_dir, 4, "scheduled", mod)
    return _tvm_compat.build_executable(mod, tvm_target), applied


def rewrite_module(imported: ImportedModel, plan, tvm_target, *, plan_path=None, say=None,
                   dump_dir: Path | None = None, after_rewrite=()):
    """Stages 2-3: check and bind ``plan`` (a Plan or an ExactPlan, loaded) to the imported model,
    then rewrite its layers to LUT kernels, then run ``after_rewrite`` (extra Relax passes, e.g. a
    test's code tap). Returns ``(module, bound layer names)``."""
    say = say or (lambda _line: None)
    with _naming_plan_file(plan, plan_path):
        plan.validate()  # an in-memory plan is not checked by its loader
        bound = bind_plan(plan, imported)
    LOG.info("layers to %s: %s", plan.KERNELS, ", ".join(bound) or "none")
    if plan.layers:
        say(f"rewriting {len(plan.layers)} layer(s) to {plan.KERNELS}")
    passes = [*rewrite_passes(plan), *after_rewrite]
    with tvm_target, _naming_plan_file(plan, plan_path):
        mod = tvm.transform.Sequential(passes, name="lut_rewrite")(imported.mod)
    _dump(dump_dir, 2, "lut_rewrite", mod)
    return mod, bound


def lowered_module(imported: ImportedModel, plan, tvm_target, *, fast_math: bool = True, after_rewrite=()):
    """Stages 2-4, what ``tune`` extracts its tasks from: the module as the schedule stage sees it."""
    mod, _ = rewrite_module(imported, load_plan(plan), tvm_target, after_rewrite=after_rewrite)
    with tvm_target:
        return tvm.transform.Sequential(legalize_passes(fast_math), name="legalize")(mod)


def compile_imported(imported: ImportedModel, plan, tvm_target, *, log_dir=None, fast_math: bool = True,
                     dump_dir: Path | None = None, say=None, after_rewrite=()) -> CompiledModel:
    """Stages 2-6 on an imported model: ``compile`` after its import, for callers that compile one
    model many times (the optimizer) or add passes after the rewrite (``after_rewrite``).
    ``plan``: a Plan, an ExactPlan, a file of either kind or None; ``log_dir``: the tuning log
    root(s) to apply (``tuning.logs.resolve_log_dir``), None for the default rules only."""
    say = say or (lambda _line: None)
    plan_path = plan if isinstance(plan, (str, Path)) else None
    if plan_path is not None:
        say(f"binding plan {plan_path}")
    given = plan is not None
    plan = load_plan(plan)
    if given and not plan.layers:
        LOG.warning("%s has no layers: %s compiles with every layer dense (a plan of `lut-tvm optimize` is "
                    "empty when no LUT was faster than dense within the budget)",
                    f"plan {str(plan_path)!r}" if plan_path else "the plan", imported.source)
    mod, bound = rewrite_module(imported, plan, tvm_target, plan_path=plan_path, say=say, dump_dir=dump_dir,
                                after_rewrite=after_rewrite)
    say("building (schedules, LLVM) ...")
    executable, applied = build_relax_with_log(mod, tvm_target, dump_dir, log_dir, fast_math)
    info = ArtifactInfo(
        input_names=imported.input_names,
        input_shapes=[list(s) for s in imported.input_shapes],
        target=str(tvm_target),
        lut_layers=bound,
        source=imported.source,
        tuning_log=str(applied) if applied else "",
        fast_math=fast_math,
    )
    compiled = CompiledModel(executable, info)
    compiled.tuning = applied
    return compiled


def compile(  # pylint: disable=redefined-builtin
    model,
    plan: PlanKind | str | Path | None = None,
    target="native",
    example_inputs=None,
    *,
    dump_ir: str | Path | None = None,
    tuning_logs: bool | str | Path = True,
    fast_math: bool = True,
    progress=None,
) -> CompiledModel:
    """Compile a torch module / ``.onnx`` / ``.pt2`` model, with the plan's layers as LUTs.

    ``plan`` is a Plan (LUT-NN), an ExactPlan (LUT-NA's exact mode: the planned layers become
    bit-exact quantized LUT kernels), a file of either kind (told apart by its metadata), or
    None (everything dense). ``target`` is a
    friendly name (``native``, ``x86-avx2``, ``x86-avx512``, ``arm64``) or a TVM target dict.
    ``tuning_logs``: True applies the matching log from the user's and the shipped log roots
    (lut_tvm.tuning), a folder path looks there instead, False uses the default schedule rules only.
    ``fast_math`` (default) computes GELU, softmax, exp, erf and tanh in TVM's vectorizable
    approximations (a few ulp in float32; ``relay_passes.fast_math``); False keeps libm's.
    ``progress``: called with a short line as each stage starts (the CLI prints them).
    The returned model's ``tuning`` is the AppliedLog (folder and functions it scheduled) or None.
    """
    say = progress or (lambda _line: None)
    tvm_target = resolve_target(target)
    dump_dir = Path(dump_ir) if dump_ir else None
    log_dir = checked_tuning_log_dir(tuning_logs)
    say(f"importing {imported_name(model)}")
    imported = import_model(model, example_inputs)
    _dump(dump_dir, 1, "imported", imported.mod)
    return compile_imported(imported, plan, tvm_target, log_dir=log_dir, fast_math=fast_math,
                            dump_dir=dump_dir, say=say)


def imported_name(model) -> str:
    """How progress lines call a model: its file name, or its class."""
    if isinstance(model, (str, Path)):
        return Path(model).name
    return type(model).__name__


def checked_tuning_log_dir(tuning_logs) -> Path | None:
    """``tuning_logs`` as a folder (``tuning.logs.resolve_log_dir``); a folder given by name must
    exist (a typo would otherwise compile untuned without a word). The default may be absent."""
    log_dir = resolve_log_dir(tuning_logs)
    if tuning_logs not in (True, False, None) and not log_dir.is_dir():
        raise LutTvmError(f"tuning log folder {str(log_dir)!r} does not exist"
                          + (" (it is a file)" if log_dir.exists() else ""))
    return log_dir
