"""MetaSchedule's calls and private pieces as TVM 0.27 has them (used by lut_tvm.tuning)."""

from __future__ import annotations

import tvm
import tvm_ffi

from .tir import walk_tir

SCHEDULED_ATTR = "tirx.is_scheduled"


def meta_schedule():
    """The MetaSchedule package (``tvm.meta_schedule`` before 0.27)."""
    from tvm.s_tir import meta_schedule  # pylint: disable=import-outside-toplevel

    return meta_schedule


def subclassable(registered):
    """The Python class behind a MetaSchedule ``derived_object`` (``LocalRunner``, ``RPCRunner``,
    ``LocalBuilder``, ``XGBModel``), to subclass: TVM 0.27 keeps it in the private ``_cls``."""
    return registered._cls  # pylint: disable=protected-access


def local_worker_functions():
    """``(build, run)``: the functions MetaSchedule's local builder and runner run in their worker
    processes (private module-level ``_worker_func`` in TVM 0.27)."""
    ms = meta_schedule()
    return (ms.builder.local_builder._worker_func,  # pylint: disable=protected-access
            ms.runner.local_runner._worker_func)  # pylint: disable=protected-access


def run_evaluator_common(*args, **kwargs):
    """MetaSchedule's shared "time a built candidate" helper (``runner.utils`` in TVM 0.27)."""
    from tvm.s_tir.meta_schedule.runner.utils import run_evaluator_common as run  # pylint: disable=C0415

    return run(*args, **kwargs)


def popen_pool():
    """TVM's worker pool and its status enum: ``(PopenPoolExecutor, StatusKind)``."""
    from tvm.support.popen_pool import PopenPoolExecutor, StatusKind  # pylint: disable=import-outside-toplevel

    return PopenPoolExecutor, StatusKind


def is_scheduled(func) -> bool:
    """Whether a PrimFunc carries the is-scheduled mark (set by dlight and the tuning database)."""
    attrs = getattr(func, "attrs", None)
    return bool(attrs is not None and SCHEDULED_ATTR in attrs and int(attrs[SCHEDULED_ATTR]))


def apply_tuning_database(mod, database):
    """Replace every PrimFunc that ``database`` has a record for by its best schedule.

    Runs inside ``with target:``; the applied functions get the is-scheduled mark, so the default
    schedule rules leave them alone.
    """
    with database:
        return tvm.relax.transform.MetaScheduleApplyDatabase()(mod)


def build_tir_for_measure(mod, target):
    """Build one scheduled PrimFunc module for a tuning measurement (the default builder's steps,
    without its import of every GPU tensor intrinsic)."""
    from tvm.driver import build as tvm_build  # pylint: disable=import-outside-toplevel
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock  # pylint: disable=import-outside-toplevel

    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    return tvm_build(mod, target=target)


def popen_worker_pids() -> list[int]:
    """PIDs of this process's children that are TVM popen workers (builder/runner pools)."""
    import psutil  # pylint: disable=import-outside-toplevel

    found = []
    for child in psutil.Process().children():
        try:
            if any("tvm.exec.popen_worker" in part for part in child.cmdline()):
                found.append(child.pid)
        except psutil.Error:
            continue
    return found


def ordered_union_database(databases):
    """One database over ``databases``: a workload's record comes from the first that has one."""
    return meta_schedule().database.OrderedUnionDatabase(*databases)


CUSTOM_RULE_ANNOTATION = "schedule_rule"


def register_missing_custom_rules(funcs, target) -> list[str]:
    """Register, for each ``schedule_rule`` block annotation in ``funcs`` that names no
    registered function, the fallback MetaSchedule's ApplyCustomRule takes anyway (drop the
    annotation, keep the schedule), under the name it looks up
    (``s_tir.meta_schedule.<target key>.<annotation>``). The design space is the same; what goes
    is its C++ "Unknown schedule rule" warning, printed through the progress bar for every
    task with a pooling op (topi annotates ``meta_schedule.pool_max``). Returns the names added.
    """
    keys = [str(k) for k in target.keys]
    wanted = set()
    for func in funcs:
        for node in walk_tir(func.body):
            annotations = getattr(node, "annotations", None)
            if annotations is not None and CUSTOM_RULE_ANNOTATION in annotations:
                wanted.add(str(annotations[CUSTOM_RULE_ANNOTATION]))
    added = []
    for rule in sorted(wanted - {"None"}):
        names = [f"s_tir.meta_schedule.{key}.{rule}" for key in keys]
        if not names or any(tvm_ffi.get_global_func(n, allow_missing=True) for n in names):
            continue

        def unannotate(sch, block):
            sch.unannotate(block, CUSTOM_RULE_ANNOTATION)
            return [sch]

        tvm_ffi.register_global_func(names[0], unannotate)
        added.append(names[0])
    return added


