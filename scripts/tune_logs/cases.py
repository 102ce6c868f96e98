"""The cases to tune: the speed benchmark's prepared case folders (kernels, models) and the demo
CNN, each as its dense and its LUT plan models; several one-layer cases side by side as one model."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

GROUPS = ("kernels", "models", "demo")


@dataclass
class TuneCase:
    """One model to tune: ``load()`` gives ``(torch model, plan or plan file or None, example input)``."""

    name: str  # "<case folder>/dense" or "<case folder>/LUT <variant>"
    group: str  # one of GROUPS
    load: Callable[[], tuple]
    lut: bool  # with a LUT plan



def wanted(name: str, patterns) -> bool:
    return not patterns or any(pattern in name for pattern in patterns)


def prepared_folders(args, work: Path, progress) -> list[tuple[str, Path]]:
    """``(group, folder)`` of every speed-benchmark case selected, prepared (or reused) in ``work``;
    ``progress``: a ``lut_tvm.steps.Progress``."""
    # pylint: disable=import-outside-toplevel
    from benchmarks.common.peers import failure_text
    from benchmarks.speed.kernels import prepare_kernel
    from benchmarks.speed.models import prepare_digits, prepare_minilm
    from benchmarks.speed.prepare import read_meta
    from benchmarks.speed.run import select_kernel_cases

    jobs = []
    if args.only in (None, "kernels"):
        jobs += [("kernels", work / "kernels" / case.key, lambda f, c=case: prepare_kernel(c, f))
                 for case in select_kernel_cases(quick=False)]
    if args.only in (None, "models"):
        jobs += [("models", work / "models" / "digits_cnn", prepare_digits),
                 ("models", work / "models" / "minilm", lambda f: prepare_minilm(f, [16]))]
    # "<folder part>/<case part>": the folder part selects the folders to prepare; a pattern
    # without "/" may match either part ("LUT" is in "<folder>/LUT V=9"), so it selects them all.
    folder_patterns = [pattern.split("/")[0] if "/" in pattern else "" for pattern in args.cases or ()]
    jobs = [job for job in jobs if wanted(job[1].name, folder_patterns)]
    ready = []
    with progress.counter("preparing the benchmark's cases", len(jobs), "case") as count:
        for group, folder, prepare in jobs:
            count.status(folder.name[-40:])
            if read_meta(folder) is not None:
                ready.append((group, folder))
            else:
                try:
                    prepare(folder)
                    ready.append((group, folder))
                except Exception as err:  # pylint: disable=broad-except
                    progress.say(f"{folder.name}: could not be prepared, left out: {failure_text(err)}")
            count.update()
    return ready


def folder_cases(group: str, folder: Path) -> list[TuneCase]:
    """The dense model and each LUT plan of a prepared case folder, as the benchmark compiles them."""
    # pylint: disable=import-outside-toplevel
    from benchmarks.speed.models import load_torch_model
    from benchmarks.speed.prepare import read_meta, variant_slug

    meta = read_meta(folder)

    def loader(plan_file):
        return lambda: (load_torch_model(meta, folder), plan_file, np.load(folder / "input.npy"))

    cases = [TuneCase(f"{folder.name}/dense", group, loader(None), lut=False)]
    for label in meta.get("lut_variants", {}):
        plan_file = folder / f"plan_{variant_slug(label)}.npz"
        if plan_file.is_file():
            cases.append(TuneCase(f"{folder.name}/LUT {label}", group, loader(plan_file), lut=True))
        else:
            print(f"{folder.name}: variant {label} has no {plan_file.name}, left out", file=sys.stderr)
    return cases


def demo_cases() -> list[TuneCase]:
    """The demo CNN (seeded, untrained: records key on shapes) with its k-means plan, and dense."""

    def load(with_plan: bool):
        import torch  # pylint: disable=import-outside-toplevel

        from lut_tvm.demo import EVAL_BATCH, digits_cnn, load_digits_split  # pylint: disable=C0415
        from lut_tvm.planner import PlanPolicy, build_kmeans_plan  # pylint: disable=C0415

        torch.manual_seed(0)
        model = digits_cnn().eval()
        x_train, x_test, _, _ = load_digits_split(0)
        x = x_test[:EVAL_BATCH]
        plan = build_kmeans_plan(model, x_train, PlanPolicy(seed=0), example_inputs=(x,)) if with_plan else None
        return model, plan, x

    return [TuneCase("demo_cnn/LUT k-means", "demo", lambda: load(True), lut=True),
            TuneCase("demo_cnn/dense", "demo", lambda: load(False), lut=False)]



def select_cases(args, work: Path, progress) -> list[TuneCase]:
    cases = []
    for group, folder in prepared_folders(args, work, progress):
        cases += folder_cases(group, folder)
    if args.only in (None, "demo"):
        cases += demo_cases()
    return [case for case in cases if wanted(case.name, args.cases)]



class SideBySide(nn.Module):
    """One-layer models side by side, one input each: their layers tune in one session, paying
    the worker start-up and the default-schedule builds once for all of them."""

    def __init__(self, models):
        super().__init__()
        self.parts = nn.ModuleList(models)

    def forward(self, *inputs):
        return tuple(part(x) for part, x in zip(self.parts, inputs))


def session_inputs(cases: list[TuneCase]):
    """``(model, plan, example inputs, cases)`` of one case, or of several one-layer cases side by
    side: their plans merged, layers renamed after their part (plans bind by weight fingerprint);
    a case whose planned weight equals an earlier one's (same shape, same seed) is left out of
    the returned cases and the model."""
    from dataclasses import replace  # pylint: disable=import-outside-toplevel

    from lut_tvm.plan import Plan  # pylint: disable=import-outside-toplevel

    if len(cases) == 1:
        model, plan, example = cases[0].load()
        return model, plan, (example,), cases
    kept, layers, fingerprints = [], [], set()
    for case in cases:
        model, plan, example = case.load()
        plan = Plan.load(plan) if isinstance(plan, (str, Path)) else plan
        planned = plan.layers if plan is not None else []
        if any(layer.weight_fingerprint in fingerprints for layer in planned):
            continue
        fingerprints.update(layer.weight_fingerprint for layer in planned)
        layers += [replace(layer, name=f"parts.{len(kept)}.{layer.name}") for layer in planned]
        kept.append((case, model, example))
    merged = Plan(layers, provenance={"method": "scripts.tune_logs side by side"}) if layers else None
    return (SideBySide([model for _, model, _ in kept]), merged, tuple(example for _, _, example in kept),
            [case for case, _, _ in kept])

