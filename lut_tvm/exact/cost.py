"""Operation counts and area/energy estimates of LUT-NA's exact mode, per layer and per model.

Three ways to compute one quantized layer ``acc[M, N] = xq[M, D] @ Wq[D, N]`` (int8 x b-bit):

* **exact LUT (LUT-NA, software form)** — ``lut_tvm.exact.reference``: per row and group of
  ``G`` activations a 16-entry table of partial sums is built at run time; each column then
  does one look-up + one add per (nonzero group, weight piece), and a shift-and-add over the
  pieces. Groups whose weights are all zero (per column) are skipped.
* **traditional LUT** — one table holding every product ``x * w``: ``2^(8+b)`` entries of
  ``8+b`` bits; one look-up + one add per (nonzero) MAC.
* **MAC** — one ``8 x b``-bit multiply + one 32-bit add per (nonzero) MAC.

Counts are exact functions of the shapes and the weight's zero pattern. Energy and area are
**order-of-magnitude estimates from documented assumptions** (``CostParams``), not a circuit
model: the LUT-NA paper reports synthesised circuits, this reports what the software does.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from .reference import check_bits

TABLE_ENTRIES = 16
ACT_BITS = 8


@dataclass(frozen=True)
class CostParams:
    """Energy (pJ) and area (um^2) per operation. Every default is a documented assumption.

    Arithmetic: M. Horowitz, "Computing's energy problem (and what we can do about it)",
    ISSCC 2014, 45 nm / 0.9 V table: integer ADD 8 b 0.03 pJ / 36 um^2, 16 b 0.05 pJ / 67 um^2,
    32 b 0.1 pJ / 137 um^2; integer MULT 8 b 0.2 pJ / 282 um^2. An ``8 x b`` multiplier is
    scaled from the 8 x 8 one by ``b / 8`` (array multiplier: partial-product rows ∝ b; an
    assumption). Constant shifts are wiring in a circuit: 0 pJ, 0 um^2 by default (the
    software still counts them).

    Table reads: same source, SRAM read of 64 bits: 8 KB 10 pJ, 32 KB 20 pJ, 1 MB 100 pJ.
    Reads of other sizes are interpolated log-log between those points and extrapolated below
    8 KB with the 8-32 KB slope (energy ∝ sqrt(capacity), the usual wire-length argument),
    floored at ``min_table_read_pj``; a read of ``w`` bits costs ``w / 64`` of a 64-bit read.
    Storage area: ``table_bit_um2`` = 0.346 um^2 (45 nm 6T SRAM cell, Mistry et al., IEDM 2007)
    times ``table_periphery`` = 2 (decoders, sense amplifiers; an assumption).
    """

    add8_pj: float = 0.03
    add16_pj: float = 0.05
    add32_pj: float = 0.1
    mult8_pj: float = 0.2
    shift_pj: float = 0.0
    add8_um2: float = 36.0
    add16_um2: float = 67.0
    add32_um2: float = 137.0
    mult8_um2: float = 282.0
    sram_read_64b_pj: tuple = ((8 * 1024, 10.0), (32 * 1024, 20.0), (1024 * 1024, 100.0))
    min_table_read_pj: float = 0.01
    table_bit_um2: float = 0.346
    table_periphery: float = 2.0
    source: str = ("Horowitz ISSCC 2014 (45 nm) energy/area per op; Mistry IEDM 2007 SRAM cell; "
                   "order-of-magnitude, documented assumptions")

    def table_read_pj(self, table_bytes: float, read_bits: int) -> float:
        """Energy of one ``read_bits`` read from a table of ``table_bytes`` (see class doc)."""
        points = sorted(self.sram_read_64b_pj)
        sizes = np.log([p[0] for p in points])
        energies = np.log([p[1] for p in points])
        size = math.log(max(table_bytes, 1.0))
        if size <= sizes[0]:
            slope = (energies[1] - energies[0]) / (sizes[1] - sizes[0])
            log_e = energies[0] + slope * (size - sizes[0])
        elif size >= sizes[-1]:
            slope = (energies[-1] - energies[-2]) / (sizes[-1] - sizes[-2])
            log_e = energies[-1] + slope * (size - sizes[-1])
        else:
            log_e = float(np.interp(size, sizes, energies))
        return max(math.exp(log_e) * read_bits / 64.0, self.min_table_read_pj)

    def mult_pj(self, bits: int) -> float:
        return self.mult8_pj * bits / 8.0

    def mult_um2(self, bits: int) -> float:
        return self.mult8_um2 * bits / 8.0

    def table_um2(self, table_bytes: float) -> float:
        return table_bytes * 8 * self.table_bit_um2 * self.table_periphery


def _table_build_adds(piece_bits: int, bits: int) -> tuple[int, int]:
    """``(adds, tables)`` to fill one group's 16-entry activation table(s).

    p = 1 (4 activations, entries = subset sums): 16 - 1 (zero) - 4 (single activations) = 11,
    each one add of an earlier entry; the sign plane reuses the table (its sum is subtracted).
    p = 2 (2 activations x digits 0..3): 2 adds per activation for 2x, 3x, plus 9 cross sums;
    p = 4 (1 activation x 0..15): 14 adds for 2x..15x. For p > 1 the signed top digit needs
    a second table: counted as the same number of adds again (upper bound) unless the top digit
    is a single bit (its table is then the negated unsigned one, folded into a subtract).
    """
    base = {1: 11, 2: 13, 4: 14}[piece_bits]
    pieces = -(-bits // piece_bits)
    top_width = bits - (pieces - 1) * piece_bits
    tables = 1 if (piece_bits == 1 or top_width == 1) else 2
    return base * tables, tables


def _entry_bits(piece_bits: int) -> int:
    """Bits of a table entry: |sum| <= 4 * 127 (p=1), 2 * 3 * 127 (p=2), 15 * 127 (p=4)."""
    bound = {1: 4 * 127, 2: 2 * 3 * 127, 4: 15 * 127}[piece_bits]
    return int(math.ceil(math.log2(bound + 1))) + 1


@dataclass
class LayerCost:
    """Counts and estimates of one layer (``rows`` = output positions, M)."""

    name: str
    bits: int
    rows: int
    depth: int
    out_features: int
    piece_bits: int = 1
    macs: int = 0  # M * D * N: the MACs the layer replaces
    macs_nonzero: int = 0  # M * (nonzero weights)
    weight_sparsity: float = 0.0
    groups: int = 0  # Gc * N (per column groups)
    groups_nonzero: int = 0  # sum over columns of groups with a nonzero weight
    tables: int = 0  # M * (groups nonzero in any column)
    table_build_adds: int = 0
    lookups: int = 0
    accumulate_adds: int = 0
    combine_adds: int = 0
    shifts: int = 0
    table_bytes: int = 0  # live activation tables of one row
    weight_bytes: int = 0  # patterns + group indices
    trad_table_bytes: float = 0.0
    trad_lookups: int = 0
    trad_adds: int = 0
    mac_mults: int = 0
    mac_adds: int = 0
    energy_pj: dict = field(default_factory=dict)  # scheme -> pJ
    area_um2: dict = field(default_factory=dict)  # scheme -> um^2 of one processing element

    @property
    def lookups_per_mac(self) -> float:
        return self.lookups / self.macs if self.macs else 0.0


SCHEMES = ("exact_lut", "traditional_lut", "mac")


def layer_cost(name: str, wq: np.ndarray, bits: int, rows: int, piece_bits: int = 1,
               params: CostParams | None = None, skip_zero_macs: bool = True) -> LayerCost:
    """Costs of ``xq [rows, D] @ wq [D, N]`` with ``bits``-bit weights.

    ``skip_zero_macs``: the baselines (traditional LUT, MAC) skip zero weights too (fair
    against a pruned model); with False they do every MAC.
    """
    params = params or CostParams()
    bits = check_bits(bits)
    if piece_bits not in (1, 2, 4):
        raise ValueError(f"piece_bits must be 1, 2 or 4, got {piece_bits!r}")
    wq = np.asarray(wq)
    depth, cols = wq.shape
    group = 4 // piece_bits
    pieces = -(-bits // piece_bits)
    num_groups = -(-depth // group)
    padded = np.zeros((num_groups * group, cols), dtype=bool)
    padded[:depth] = wq != 0
    nonzero_groups = padded.reshape(num_groups, group, cols).any(axis=1)  # [Gc, N]
    groups_nz = int(nonzero_groups.sum())
    used_groups = int(nonzero_groups.any(axis=1).sum())
    nnz = int((wq != 0).sum())
    entry_bits = _entry_bits(piece_bits)
    kmax = max(1, int(nonzero_groups.sum(axis=0).max(initial=0)))

    cost = LayerCost(name=name, bits=bits, rows=int(rows), depth=int(depth), out_features=int(cols),
                     piece_bits=piece_bits)
    cost.macs = rows * depth * cols
    cost.macs_nonzero = rows * nnz
    cost.weight_sparsity = 1.0 - nnz / max(1, depth * cols)
    cost.groups = num_groups * cols
    cost.groups_nonzero = groups_nz
    cost.tables = rows * used_groups
    build_adds, tables_per_group = _table_build_adds(piece_bits, bits)
    cost.table_build_adds = cost.tables * build_adds
    cost.lookups = rows * groups_nz * pieces
    cost.accumulate_adds = cost.lookups
    cost.combine_adds = rows * cols * (pieces - 1)
    cost.shifts = rows * cols * (pieces - 1)
    cost.table_bytes = int(math.ceil(used_groups * tables_per_group * TABLE_ENTRIES * entry_bits / 8))
    cost.weight_bytes = int(math.ceil(pieces * kmax * cols * group * piece_bits / 8)) + 4 * kmax * cols

    trad_entry_bits = ACT_BITS + bits
    cost.trad_table_bytes = 2 ** (ACT_BITS + bits) * trad_entry_bits / 8
    baseline_macs = cost.macs_nonzero if skip_zero_macs else cost.macs
    cost.trad_lookups = baseline_macs
    cost.trad_adds = baseline_macs
    cost.mac_mults = baseline_macs
    cost.mac_adds = baseline_macs

    small_read = params.table_read_pj(TABLE_ENTRIES * entry_bits / 8, entry_bits)
    cost.energy_pj = {
        "exact_lut": (cost.table_build_adds * params.add16_pj + cost.lookups * small_read
                      + cost.accumulate_adds * params.add32_pj
                      + cost.combine_adds * params.add32_pj + cost.shifts * params.shift_pj),
        "traditional_lut": (cost.trad_lookups * params.table_read_pj(cost.trad_table_bytes,
                                                                     trad_entry_bits)
                            + cost.trad_adds * params.add32_pj),
        "mac": cost.mac_mults * params.mult_pj(bits) + cost.mac_adds * params.add32_pj,
    }
    # One processing element of each scheme (one look-up or MAC per cycle).
    cost.area_um2 = {
        "exact_lut": (params.table_um2(TABLE_ENTRIES * entry_bits / 8) + build_adds * params.add16_um2
                      + 2 * params.add32_um2),
        "traditional_lut": params.table_um2(cost.trad_table_bytes) + params.add32_um2,
        "mac": params.mult_um2(bits) + params.add32_um2,
    }
    return cost


def compare_pieces(wq: np.ndarray, bits: int, rows: int, params: CostParams | None = None) -> dict:
    """``{piece_bits: LayerCost}`` for bit planes (1), crumbs (2) and nibbles (4)."""
    return {p: layer_cost("cmp", wq, bits, rows, p, params) for p in (1, 2, 4)}


def best_piece_bits(wq: np.ndarray, bits: int, rows: int, params: CostParams | None = None) -> int:
    """The piece width with the lowest estimated exact-LUT energy (ties: fewer look-ups)."""
    costs = compare_pieces(wq, bits, rows, params)
    return min(costs, key=lambda p: (costs[p].energy_pj["exact_lut"], costs[p].lookups))


@dataclass
class ModelCost:
    """Per-layer costs and their totals."""

    layers: list[LayerCost]
    params: CostParams = field(default_factory=CostParams)

    def total(self, attr: str) -> float:
        return sum(getattr(layer, attr) for layer in self.layers)

    def energy(self, scheme: str) -> float:
        return sum(layer.energy_pj[scheme] for layer in self.layers)

    def ratios(self) -> dict:
        """Energy of each baseline over the exact LUT's (>1: the exact LUT uses less)."""
        ours = self.energy("exact_lut")
        return {s: (self.energy(s) / ours if ours else float("inf")) for s in SCHEMES}

    def summary(self) -> dict:
        """Model totals: look-ups, adds (table build + accumulate + combine), shifts, nonzero MACs,
        table bytes, energy per scheme, and the baselines' energy and table bytes over the exact LUT's."""
        energy = {s: self.energy(s) for s in SCHEMES}
        table_bytes, trad_bytes = self.total("table_bytes"), self.total("trad_table_bytes")
        return {
            "lookups": self.total("lookups"),
            "adds": self.total("table_build_adds") + self.total("accumulate_adds") + self.total("combine_adds"),
            "shifts": self.total("shifts"), "macs": self.total("macs"),
            "macs_nonzero": self.total("macs_nonzero"), "trad_lookups": self.total("trad_lookups"),
            "table_bytes": table_bytes, "trad_table_bytes": trad_bytes, "energy_pj": energy,
            "energy_ratio_trad": self.ratios()["traditional_lut"], "energy_ratio_mac": self.ratios()["mac"],
            "table_bytes_ratio_trad": trad_bytes / table_bytes if table_bytes else float("inf"),
        }

    def to_dict(self) -> dict:
        return {"layers": [asdict(layer) for layer in self.layers],
                "totals": {k: self.total(k) for k in COUNT_FIELDS},
                "energy_pj": {s: self.energy(s) for s in SCHEMES},
                "params": {k: v for k, v in asdict(self.params).items()}}


COUNT_FIELDS = ("macs", "macs_nonzero", "lookups", "accumulate_adds", "table_build_adds",
                "combine_adds", "shifts", "table_bytes", "weight_bytes", "trad_lookups", "mac_mults")


def format_report(model: ModelCost) -> str:
    """A fixed-width text table: one line per layer, then totals and energy ratios."""
    head = (f"{'layer':<14}{'b':>2}{'p':>2}{'MACs':>12}{'sparsity':>9}{'lookups':>12}"
            f"{'adds':>12}{'shifts':>10}{'tab B/row':>10}{'trad tab B':>12}"
            f"{'E lut pJ':>11}{'E trad pJ':>11}{'E mac pJ':>11}")
    lines = [head, "-" * len(head)]
    for c in model.layers:
        adds = c.table_build_adds + c.accumulate_adds + c.combine_adds
        lines.append(
            f"{c.name[:14]:<14}{c.bits:>2}{c.piece_bits:>2}{c.macs:>12}{c.weight_sparsity:>9.2f}"
            f"{c.lookups:>12}{adds:>12}{c.shifts:>10}{c.table_bytes:>10}{c.trad_table_bytes:>12.0f}"
            f"{c.energy_pj['exact_lut']:>11.3g}{c.energy_pj['traditional_lut']:>11.3g}"
            f"{c.energy_pj['mac']:>11.3g}")
    adds = model.total("table_build_adds") + model.total("accumulate_adds") + model.total("combine_adds")
    lines.append("-" * len(head))
    lines.append(
        f"{'total':<18}{model.total('macs'):>12.0f}{'':>9}{model.total('lookups'):>12.0f}"
        f"{adds:>12.0f}{model.total('shifts'):>10.0f}{model.total('table_bytes'):>10.0f}"
        f"{sum(c.trad_table_bytes for c in model.layers):>12.0f}"
        f"{model.energy('exact_lut'):>11.3g}{model.energy('traditional_lut'):>11.3g}"
        f"{model.energy('mac'):>11.3g}")
    ratios = model.ratios()
    lines.append(f"energy vs exact LUT: traditional LUT {ratios['traditional_lut']:.2f}x, "
                 f"MAC {ratios['mac']:.2f}x  ({model.params.source})")
    return "\n".join(lines)
