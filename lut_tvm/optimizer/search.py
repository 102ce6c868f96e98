"""The search: sensitivity of each candidate alone, the fastest single-V plan within budget as a
start, then greedy by latency saved per metric lost, each step verified end to end on the
evaluation data (layers that break the budget backed off)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from tqdm.auto import tqdm

from .layers import NUM_CENTROIDS, is_int8, num_centroids_of, option_label

EPSILON = 1e-3  # points: a loss below this counts as free (ordered by saving alone)


@dataclass
class Candidate:
    """One layer at one option (``sub_len``: a ``layers.LutOption``, V and K): its measured cost alone
    and what happened to it in the search."""

    layer: str
    sub_len: int
    saving_ms: float
    loss_alone: float = float("nan")  # metric points lost with only this layer as a LUT
    status: str = "untried"  # chosen / replaced / over budget alone / breaks budget / slower / ...
    loss_with_plan: float = float("nan")  # loss of the plan when this candidate was tried in it
    table_quant: str = "int8_per_layer"  # the table scale granularity that lost least alone
    tables: str = "kmeans"  # "kmeans" (P.W) or "ridge" (refit on the layer's rows), whichever lost less alone
    num_centroids: int = field(init=False, default=NUM_CENTROIDS)  # K of the option, for the report

    def __post_init__(self):
        self.num_centroids = num_centroids_of(self.sub_len)

    @property
    def score(self) -> float:
        return self.saving_ms / max(self.loss_alone, EPSILON)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["sub_len"] = str(self.sub_len) if is_int8(self.sub_len) else int(self.sub_len)
        return out


@dataclass
class Step:
    """One end-to-end check of the search: the plan tried and its loss."""

    tried: str
    choice: dict
    loss: float
    accepted: bool


def uniform_start(candidates: list[Candidate], loss_of, budget: float, predict_ms):
    """``(choice, steps)``: the fastest (by ``predict_ms``) of the empty plan and the single-V plans
    (every layer with a saving at that V and K) whose loss stays within ``budget``: where one V suits
    every layer, the greedy search starts from there instead of building it layer by layer."""
    steps: list[Step] = []
    best: dict[str, int] = {}
    for sub_len in sorted({c.sub_len for c in candidates}):
        choice = {c.layer: sub_len for c in candidates if c.sub_len == sub_len and c.saving_ms > 0}
        if len(choice) < 2:  # one layer: the greedy search tries it anyway
            continue
        loss = loss_of(choice)
        accepted = loss <= budget and predict_ms(choice) < predict_ms(best)
        steps.append(Step(f"every layer at {option_label(sub_len)}", choice, loss, loss <= budget))
        if accepted:
            best = choice
    for cand in candidates:
        if best.get(cand.layer) == cand.sub_len:
            cand.loss_with_plan = next(s.loss for s in steps if s.choice is best)
    return best, steps


def greedy_search(candidates: list[Candidate], loss_of, budget: float, start: dict[str, int] | None = None,
                  prune: bool = False):
    """``(choice {layer: V}, steps)``: from ``start`` (default: all dense), candidates in order of
    saving per point lost, each added (or swapped in for its layer's current, smaller saving) only
    if the plan's loss measured end to end by ``loss_of(choice)`` stays within ``budget``.
    ``loss_alone`` must be filled in. ``prune``: a candidate whose loss alone exceeds the budget
    left (the layer's current loss alone given back on a swap) is not checked end to end (losses
    compound: it would break the budget); for models whose end-to-end check is slow."""
    choice: dict[str, int] = dict(start or {})
    current = loss_of(choice) if prune and choice else 0.0
    by_key = {(c.layer, c.sub_len): c for c in candidates}
    saved: dict[str, float] = {n: by_key[(n, v)].saving_ms for n, v in choice.items()}
    for name, sub_len in choice.items():
        by_key[(name, sub_len)].status = "chosen"
    steps: list[Step] = []
    ordered = sorted(candidates, key=lambda c: (-c.score, -c.saving_ms, c.layer, c.sub_len))
    for cand in ordered:
        if cand.status == "chosen":
            continue
        if cand.saving_ms <= 0:
            cand.status = "slower than dense"
        elif cand.loss_alone > budget:
            cand.status = "over budget alone"
    usable = [c for c in ordered if c.status == "untried"]
    for cand in tqdm(usable, desc="search", unit="plan", leave=False, disable=None):
        if saved.get(cand.layer, 0.0) >= cand.saving_ms:
            cand.status = "a faster V of this layer already chosen"
            continue
        if prune:
            given_back = by_key[(cand.layer, choice[cand.layer])].loss_alone if cand.layer in choice else 0.0
            if cand.loss_alone > budget - current + given_back:
                cand.status = "over the budget left (pruned, not checked end to end)"
                continue
        trial = {**choice, cand.layer: cand.sub_len}
        loss = loss_of(trial)
        cand.loss_with_plan = loss
        accepted = loss <= budget
        steps.append(Step(f"{cand.layer} {option_label(cand.sub_len)}", trial, loss, accepted))
        if not accepted:
            cand.status = "breaks the budget with the layers chosen before it"
            continue
        if cand.layer in choice:
            by_key[(cand.layer, choice[cand.layer])].status = "replaced by a faster V"
        choice, saved[cand.layer], current = trial, cand.saving_ms, loss
        cand.status = "chosen"
    return choice, steps


def prefer_single_layer(candidates: list[Candidate], loss_of, budget: float, predict_ms, choice: dict,
                        steps: list) -> dict:
    """``choice``, or the single-layer plan predicted faster than it whose loss (``loss_of``, cached from
    the sensitivity pass) stays within ``budget``: greedy adding can take two small savings where one
    larger saving alone would have fit, and the uniform start only covers plans of two or more layers."""
    fits = [c for c in candidates if c.saving_ms > 0 and loss_of({c.layer: c.sub_len}) <= budget]
    best = min(fits, key=lambda c: predict_ms({c.layer: c.sub_len}), default=None)
    if best is None or predict_ms({best.layer: best.sub_len}) >= predict_ms(choice):
        return choice
    steps.append(Step(f"{best.layer} {option_label(best.sub_len)} alone", {best.layer: best.sub_len},
                      loss_of({best.layer: best.sub_len}), True))
    for cand in candidates:
        if cand.status == "chosen":
            cand.status = "replaced by a faster single-layer plan"
    best.status, best.loss_with_plan = "chosen", loss_of({best.layer: best.sub_len})
    return {best.layer: best.sub_len}
