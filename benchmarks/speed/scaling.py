"""Merge the per-framework timing workers, and drop ratios whose peer ran slower with more threads."""

from __future__ import annotations

# A peer whose median at N threads exceeds its 1-thread median by more than this factor is not
# measuring its N-thread speed (another pool on its cores, or a thread pool that does not scale):
# its ratios at N are left out and the report says why.
SLOWER_THAN_ONE_THREAD = 1.10
LUT_PREFIX = "lut "  # the project's own variants in a case result's "ms"
MERGED_KEYS = ("ms", "min_ms", "max_ms", "calls_per_sample", "relative_error_vs_pytorch", "lut_profile",
               "exact_check")


def merge_group_timings(group_timings: list[dict]) -> dict:
    """One timing record (``{"threads", "cases", "loadavg_end", "groups"}``) from one record per group."""
    cases: dict[str, dict] = {}
    for timing in group_timings:
        for key, result in timing["cases"].items():
            merged = cases.setdefault(key, {"rounds": result["rounds"]})
            for field in MERGED_KEYS:
                if field in result:
                    merged.setdefault(field, {}).update(result[field])
    first = group_timings[0]
    return {"threads": first["threads"], "cases": cases,
            "loadavg_end": max((t["loadavg_end"] for t in group_timings), key=lambda load: load[0]),
            "groups": [t.get("group") for t in group_timings]}


def flag_thread_regressions(timings: dict[int, dict]) -> dict[int, dict]:
    """Mark in each case result (``"slower_than_one_thread": {name: [ms at N, ms at 1]}``) every framework
    that ran more than ``SLOWER_THAN_ONE_THREAD`` slower at N threads than at 1, and drop such peers from
    ``ms`` (no ratio against them); the LUT variants' own times stay, marked. A no-op without a 1-thread run."""
    one = timings.get(1, {}).get("cases", {})
    for threads, timing in timings.items():
        if threads == 1:
            continue
        for key, result in timing["cases"].items():
            base = one.get(key, {}).get("ms", {})
            slower = {name: [ms, base[name]] for name, ms in result["ms"].items()
                      if name in base and ms > base[name] * SLOWER_THAN_ONE_THREAD}
            if slower:
                result["slower_than_one_thread"] = slower
                result["ms"] = {name: ms for name, ms in result["ms"].items()
                                if name not in slower or name.startswith(LUT_PREFIX)}
    return timings
