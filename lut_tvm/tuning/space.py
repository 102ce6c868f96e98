"""Design space per task: our rules (tunable, layout/width variants) + MetaSchedule's CPU space."""

from __future__ import annotations

import functools
import logging

from schedules.attrs import LUT_KIND_ATTR

from .. import _tvm_compat
from ..target_features import target_features

ms = _tvm_compat.meta_schedule()
LOG = logging.getLogger("lut_tvm.tuning")

_NARROW_MCPU = "haswell"


def target_variants(target) -> list:
    """``target`` and, on AVX-512 CPUs, an AVX2 view of it (narrower shuffle and vector width).

    A schedule made for the AVX2 view still runs on the AVX-512 CPU: it is one more point of
    the space (intrinsic width 32 instead of 64 lanes), compiled for the real target.
    """
    if target_features(target).shuffle_lanes != 64:  # only AVX-512BW has a narrower shuffle to offer
        return [target]
    spec = {k: v for k, v in dict(target.export()).items() if k not in ("mattr", "tag", "keys")}
    spec["mcpu"] = _NARROW_MCPU
    try:
        return [target, _tvm_compat.make_target(spec)]
    except Exception:  # pylint: disable=broad-except
        return [target]


def first_rule_schedule(func, target, rules, tunable: bool):
    """The schedule of the first rule that applies to ``func`` (dlight's contract), or None."""
    for rule in rules:
        try:
            sch = rule.apply(func, target, tunable)
        except Exception as err:  # pylint: disable=broad-except
            LOG.debug("rule %r failed (%s: %s); trying the next rule", rule, type(err).__name__, err)
            continue
        if sch is None:
            continue
        return sch[0] if isinstance(sch, list) else sch
    return None


def _lut_variants(func, target) -> list:
    """Other schedules of a LUT kernel than its default rule's: the gather encode's centroid-major
    distances, the row encodes' tile copy of the input, the shuffle lookups with row tiles
    (not row x channel tiles) in parallel (tunable: the tiles are sampled too)."""
    # pylint: disable=import-outside-toplevel
    from schedules.attrs import LutKind
    from schedules.rules import lut_encode
    from schedules.rules.lut_encode_rows import LutEncodeRowsRule
    from schedules.rules.lut_lookup_shuffle import LutLookupShuffleRule

    kind = str(func.attrs.get(LUT_KIND_ATTR, "")) if func.attrs is not None else ""
    if kind in (LutKind.ENCODE_DENSE, LutKind.ENCODE_CONV2D):
        makers = [lambda: lut_encode._centroid_major(func)]  # pylint: disable=protected-access
    elif kind == LutKind.ENCODE_DENSE_ROWS:
        # The default reads the input through an in-register transpose; or in place; or tile copies.
        makers = [lambda: LutEncodeRowsRule(xt_mode="tile").apply(func, target, True),
                  lambda: LutEncodeRowsRule(xt_mode="inline").apply(func, target, True)]
    elif kind == LutKind.ENCODE_CONV2D_ROWS:
        # A padded-layout conv encode: chunked window copies (default) vs in-place reads.
        makers = [lambda: LutEncodeRowsRule(xt_mode="tile").apply(func, target, True),
                  lambda: LutEncodeRowsRule(xt_mode="inline").apply(func, target, True)]
    elif kind in (LutKind.LOOKUP_DENSE_SHUFFLE, LutKind.LOOKUP_CONV2D_SHUFFLE):
        makers = [lambda: LutLookupShuffleRule(parallel_axis="rows").apply(func, target, True)]
    else:
        makers = []
    spaces = []
    for make in makers:
        try:
            made = make()
        except Exception:  # pylint: disable=broad-except
            continue
        if made is not None:
            spaces.append(made)
    return spaces


def rule_schedules(sch, target, rules, lut: bool, stop=None) -> list:
    """Design-space schedules for ``sch``'s function from our rules (tunable where supported).
    Once ``stop`` (a ``stopping.StopRequest``) is requested, raises instead: the tuning run is
    ending, and generating the other tasks' spaces would only delay it."""
    if stop is not None and stop.requested:
        raise RuntimeError("tuning was stopped")
    func = sch.mod["main"]
    spaces = []
    for variant in target_variants(target):
        made = first_rule_schedule(func, variant, rules, tunable=True)
        if made is not None:
            spaces.append(made)
    if lut:
        spaces.extend(_lut_variants(func, target))
    # A variant can coincide with another (e.g. in-place reads where the encode keeps its
    # input layout): keep one of each, or the tuner spends trials on the same space twice.
    distinct = {}
    for space in spaces:
        distinct.setdefault(str(space.trace), space)
    return list(distinct.values())


def design_space(func, target, stop=None):
    """A MetaSchedule space generator for one task (``stop``: see ``rule_schedules``).

    LUT kernels: our rules only (MetaSchedule's generic rules cannot produce the shuffle
    tensorization). Dense ops: the union of our default rule's schedule and MetaSchedule's
    default CPU space (multi-level tiling, parallel/vectorize/unroll, compute location), with
    its post-processors.
    """
    from schedules.rules import DENSE_OP_RULES, LUT_RULES  # pylint: disable=import-outside-toplevel

    is_lut = func.attrs is not None and LUT_KIND_ATTR in func.attrs
    if is_lut:
        return ms.space_generator.ScheduleFn(
            functools.partial(rule_schedules, target=target, rules=LUT_RULES, lut=True, stop=stop))
    ours = ms.space_generator.ScheduleFn(
        functools.partial(rule_schedules, target=target, rules=DENSE_OP_RULES, lut=False,
                          stop=stop))
    return ms.space_generator.SpaceGeneratorUnion([ours, ms.space_generator.PostOrderApply()])
