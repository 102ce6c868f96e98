"""The held-back check: a share of the evaluation data that the search never sees, on which the final plan
is verified compiled, and backed off layer by layer until it holds the budget there.

The search compares many plans on the same samples and keeps the one that looked best on them, so its
own measure of the chosen plan is optimistic: an unseen bias-less MLP lost -0.10 points on 1,000 eval
samples and 1.33 on 1,500 others. Samples it never chose on measure the plan without that bias.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..plan import Plan
from .evaluate import CompiledEvaluator, loss_standard_error, metric_value, run_batched
from . import inputs

# Standard errors added to the held-back loss before it is held to the budget. The search already adds two
# on its own samples; one here (on fewer samples) keeps plans whose flips cancel out from being backed off
# for noise alone.
HELD_BACK_STANDARD_ERRORS = 1.0


@dataclass
class EvalSplit:
    """The evaluation data split into the samples the search uses and the ones held back from it."""

    search_x: np.ndarray
    search_y: np.ndarray | None
    held_x: np.ndarray | None = None
    held_y: np.ndarray | None = None
    note: str | None = None  # why nothing was held back, when a split was asked for


def split_eval(eval_x: np.ndarray, eval_y, fraction: float, seed: int) -> EvalSplit:
    """``fraction`` of the samples held back (seeded; stratified by label where every class has two or
    more samples), or none when fewer than ``inputs.MIN_HELD_BACK`` would be held back or searched."""
    held = int(round(len(eval_x) * fraction))
    if fraction == 0.0:
        return EvalSplit(eval_x, eval_y)
    if held < inputs.MIN_HELD_BACK or len(eval_x) - held < inputs.MIN_HELD_BACK:
        return EvalSplit(eval_x, eval_y, note=(
            f"no evaluation data held back for the final check: {len(eval_x)} samples at a verify fraction of "
            f"{fraction} would leave fewer than {inputs.MIN_HELD_BACK} on one side; give at least "
            f"{int(np.ceil(inputs.MIN_HELD_BACK / min(fraction, 1.0 - fraction)))} samples"))
    from sklearn.model_selection import train_test_split  # pylint: disable=import-outside-toplevel

    stratify = None
    if eval_y is not None:
        counts = np.unique(eval_y, return_counts=True)[1]
        if counts.min() >= 2 and len(counts) <= min(held, len(eval_x) - held):
            stratify = eval_y
    order = np.arange(len(eval_x))
    search_idx, held_idx = train_test_split(order, test_size=held, random_state=seed, stratify=stratify)
    search_idx, held_idx = np.sort(search_idx), np.sort(held_idx)
    pick = (lambda y, idx: None if y is None else y[idx])
    return EvalSplit(eval_x[search_idx], pick(eval_y, search_idx), eval_x[held_idx], pick(eval_y, held_idx))


@dataclass
class HeldBackResult:
    """What the held-back check found and did."""

    plan: Plan
    compiled: object  # the compiled model of ``plan``
    samples: int
    loss: float
    standard_error: float
    backed_off: list[str] = field(default_factory=list)
    tried: list[dict] = field(default_factory=list)  # each plan checked: layers, loss, standard error

    def to_dict(self) -> dict:
        return {"samples": self.samples, "loss": self.loss, "standard_error": self.standard_error,
                "margin_standard_errors": HELD_BACK_STANDARD_ERRORS, "backed_off": list(self.backed_off),
                "tried": list(self.tried)}


class HeldBackCheck:
    """The final plan compiled and measured on the held-back samples against the original model."""

    def __init__(self, imported, x: np.ndarray, y, metric: str, target, batch: int):
        self.x, self.y, self.metric, self.target, self.batch = x, y, metric, target, batch
        self.reference = CompiledEvaluator(imported, x, target, batch).outputs(None)
        self.original = metric_value(metric, self.reference, self.reference, y)

    def measure(self, imported, plan: Plan | None):
        """``(compiled, loss, standard error)`` of ``plan`` compiled for ``imported`` on the held-back samples."""
        compiled = CompiledEvaluator(imported, self.x, self.target, self.batch).compiled(plan)
        outputs = run_batched(compiled, self.x, self.batch)  # the compiled model once, not again by .outputs
        loss = self.original - metric_value(self.metric, outputs, self.reference, self.y)
        return compiled, loss, loss_standard_error(self.metric, outputs, self.reference, self.y)

    def verify(self, imported, plan: Plan, budget: float, drop_order) -> HeldBackResult:
        """``plan`` checked on the held-back samples; while its loss plus ``HELD_BACK_STANDARD_ERRORS``
        standard errors exceeds ``budget``, its layer that comes first in ``drop_order(names)`` (the least
        saving per point) is made dense again."""
        current, backed_off, tried = plan, [], []
        while True:
            compiled, loss, error = self.measure(imported, current if current.layers else None)
            tried.append({"layers": [l.name for l in current.layers], "loss": loss, "standard_error": error})
            if loss + HELD_BACK_STANDARD_ERRORS * error <= budget or not current.layers:
                return HeldBackResult(current, compiled, len(self.x), loss, error, backed_off, tried)
            worst = drop_order([l.name for l in current.layers])[0]
            backed_off.append(worst)
            current = Plan([l for l in current.layers if l.name != worst], provenance=current.provenance)
