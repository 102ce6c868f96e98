"""The speed benchmark merges its per-framework workers and gives no ratio to a framework slower with more threads."""

from benchmarks.speed.goals import speedup
from benchmarks.speed.scaling import SLOWER_THAN_ONE_THREAD, flag_thread_regressions, merge_group_timings


def _worker(group, threads, ms, load=0.5, **extra):
    return {"threads": threads, "group": group, "loadavg_end": [load, 0, 0],
            "cases": {"case": {"rounds": 3, "ms": ms, "min_ms": ms, "max_ms": ms, **extra}}}


def test_merge_keeps_every_group_s_frameworks_and_the_highest_load():
    merged = merge_group_timings([
        _worker("pytorch", 2, {"pytorch": 4.0}, load=0.2),
        _worker("ort_fp32", 2, {"ort_fp32": 3.0}, load=1.7, relative_error_vs_pytorch={"ort_fp32": 1e-6}),
        _worker("ort_int8", 2, {"ort_int8": 2.0}),
        _worker("tvm", 2, {"tvm_dense": 3.5, "lut V=4": 1.0}, lut_profile={"V=4": {"encode_ms": 0.2}}),
    ])
    case = merged["cases"]["case"]
    assert case["ms"] == {"pytorch": 4.0, "ort_fp32": 3.0, "ort_int8": 2.0, "tvm_dense": 3.5, "lut V=4": 1.0}
    assert case["relative_error_vs_pytorch"] == {"ort_fp32": 1e-6}
    assert case["lut_profile"] == {"V=4": {"encode_ms": 0.2}}
    assert merged["loadavg_end"][0] == 1.7 and merged["groups"] == ["pytorch", "ort_fp32", "ort_int8", "tvm"]


def test_a_peer_slower_at_two_threads_loses_its_two_thread_ratio_only():
    one = {"pytorch": 0.40, "ort_int8": 0.30, "lut V=16": 0.10}
    two = {"pytorch": 0.40 * SLOWER_THAN_ONE_THREAD * 1.5, "ort_int8": 0.30 * SLOWER_THAN_ONE_THREAD * 0.99,
           "lut V=16": 0.06}
    timings = flag_thread_regressions({1: merge_group_timings([_worker("all", 1, dict(one))]),
                                       2: merge_group_timings([_worker("all", 2, dict(two))])})
    at_two, at_one = timings[2]["cases"]["case"], timings[1]["cases"]["case"]
    assert speedup(at_two, "V=16", "pytorch") is None
    assert at_two["slower_than_one_thread"] == {"pytorch": [two["pytorch"], one["pytorch"]]}
    assert speedup(at_two, "V=16", "ort_int8") == two["ort_int8"] / two["lut V=16"]
    assert speedup(at_one, "V=16", "pytorch") == one["pytorch"] / one["lut V=16"]
    assert "slower_than_one_thread" not in at_one


def test_a_lut_variant_slower_at_two_threads_keeps_its_time_and_is_marked():
    one, two = {"ort_fp32": 1.0, "lut V=4": 0.5}, {"ort_fp32": 0.6, "lut V=4": 0.9}
    timings = flag_thread_regressions({1: merge_group_timings([_worker("all", 1, dict(one))]),
                                       2: merge_group_timings([_worker("all", 2, dict(two))])})
    at_two = timings[2]["cases"]["case"]
    assert at_two["ms"] == two and at_two["slower_than_one_thread"] == {"lut V=4": [0.9, 0.5]}
