"""Exact (LUT-NA) whole model: the lutna VGG-11 (width 8, OpenCV digits) with the all-8-bit and a mixed-precision plan.

The model, data and plans are ``benchmarks.lutna``'s: its cached dense (sparsity 0) lottery-ticket
weights with BatchNorm folded, the 256 calibration images of its split, batch ``speed_batch``
(32) test images as input. Mixed bits: the ones ``benchmarks.lutna`` found for these weights
(``lut_tvm.exact.search_bits``, read from ``benchmarks/results/lutna.json`` when it names the
same weight file), else the fixed assignment ``FIXED_MIXED`` (stated in the report). Without
cached weights or data the model is seeded and untrained and the input random (speed is the
same). Both plans compile for the native target, i.e. the fastest form the host has.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .exact import ExactForm, ExactVariant, build_exact_variant, reference_output
from .prepare import prepare_case

ARCH = "vgg11"
LUTNA_BUILDER = "lutna"
LUTNA_JSON = Path(__file__).resolve().parents[1] / "results" / "lutna.json"
FIXED_MIXED = {"first conv": 8, "classifier": 8, "other convs": 4}
NATIVE = ExactForm("native", "native target (fastest form)", "native")


def lutna_torch_model(meta: dict, folder: Path):
    """Rebuild the folded lutna model of a prepared case (in a timing worker)."""
    import torch  # pylint: disable=import-outside-toplevel

    from benchmarks.common.models import fold_batchnorm  # pylint: disable=import-outside-toplevel
    from benchmarks.lutna.models import ARCHS  # pylint: disable=import-outside-toplevel

    model = fold_batchnorm(ARCHS[meta["torch"]["arch"]](meta["torch"]["width"]))
    model.load_state_dict(torch.load(folder / "torch.pt", map_location="cpu", weights_only=True))
    return model.eval()


def _lutna_inputs(settings: dict):
    """``(calibration, example, data note)``: lutna's calibration images and first test batch."""
    from benchmarks.accuracy.data import DataUnavailable  # pylint: disable=import-outside-toplevel
    from benchmarks.lutna.run import data_splits  # pylint: disable=import-outside-toplevel

    try:
        _, _, calibration, test, path = data_splits(settings, 0)
        return calibration, np.ascontiguousarray(test[0][: settings["speed_batch"]]), f"{path} (lutna split, seed 0)"
    except DataUnavailable as err:
        rng = np.random.default_rng(0)
        images = rng.random((settings["calibration"] + settings["speed_batch"], 1, 20, 20), dtype=np.float32)
        return images[settings["speed_batch"]:], images[: settings["speed_batch"]], f"random images ({err})"


def lutna_search(weights: Path) -> tuple[dict, float] | None:
    """``(dense row, search bound)`` of ``lutna.json`` for ``ARCH`` when it was made from ``weights``."""
    try:
        results = json.loads(LUTNA_JSON.read_text())
        entry, bound = results["models"][ARCH], results["settings"]["bound"]
    except (OSError, ValueError, KeyError):
        return None
    if entry.get("training", {}).get("path") != str(weights):
        return None
    row = next((row for row in entry["rows"] if row["sparsity_target"] == 0.0), None)
    return None if row is None else (row, bound)


def fixed_mixed_bits(names: list[str]) -> dict:
    """``FIXED_MIXED``: the first and last layers at 8 bits, the rest at 4."""
    return {name: FIXED_MIXED["first conv"] if i == 0 else FIXED_MIXED["classifier"] if i == len(names) - 1
            else FIXED_MIXED["other convs"] for i, name in enumerate(names)}


def prepare_exact_vgg(folder: Path) -> dict:
    """Peers and the all-8-bit and mixed exact libraries of the lutna VGG-11 in ``folder``."""
    from benchmarks.common.models import fold_batchnorm  # pylint: disable=import-outside-toplevel
    from benchmarks.lutna.models import ARCHS  # pylint: disable=import-outside-toplevel
    from benchmarks.lutna.run import FULL, load_tickets, tickets_path  # pylint: disable=import-outside-toplevel
    from lut_tvm.exact.quantize import build_plan, calibrate_layers  # pylint: disable=import-outside-toplevel

    settings = FULL
    weights = tickets_path(ARCH, settings, 0)
    if weights.is_file():
        model, weights_note = load_tickets(ARCH, weights, settings["width"])[0.0], f"trained, dense ({weights})"
    else:
        import torch  # pylint: disable=import-outside-toplevel

        torch.manual_seed(0)
        model = ARCHS[ARCH](settings["width"]).eval()
        weights_note = "seeded, untrained (no cached weights: run python -m benchmarks.lutna)"
    folded = fold_batchnorm(model)
    calibration, example, data_note = _lutna_inputs(settings)
    layers = calibrate_layers(folded, calibration, seed=0)
    names = [layer.name for layer in layers]
    found = lutna_search(weights) if weights.is_file() else None
    if found is not None and list(found[0]["mixed"]["bits"]) == names:
        row, bound = found
        mixed, mixed_note = row["mixed"]["bits"], (
            f"search_bits (from benchmarks/results/lutna.json: bound {bound} points under float on the validation "
            f"split; test accuracy {row['mixed']['acc']:.2%}, int8 {row['int8_acc']:.2%}, float {row['float_acc']:.2%})")
    else:
        mixed, mixed_note = fixed_mixed_bits(names), "fixed: first conv and classifier 8 bits, other convs 4"
    variants = {}
    for label, bits, note in (("int8", 8, "all layers 8 bits"), ("mixed", mixed, mixed_note)):
        plan = build_plan(layers, bits, {"method": "ptq", "model": f"lutna {ARCH}"})
        variants[label] = ExactVariant(plan, NATIVE, reference_output(folded, plan, example), note)
    meta = {"exact_kind": "model", "name": f"VGG-11 (width {settings['width']})", "batch": len(example),
            "torch": {"builder": LUTNA_BUILDER, "arch": ARCH, "width": settings["width"], "weights": "state_dict"},
            "weights": weights_note, "data": data_note, "input_shape": list(example.shape), "layers": names}
    return prepare_case(folder, folded, example, variants, meta, build_variant=build_exact_variant,
                        calibration=calibration)
