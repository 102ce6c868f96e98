"""Time one framework group on every prepared case, in one process with one thread count.

Run by ``benchmarks.speed.run`` as ``python -m benchmarks.speed.worker --group G --threads N ...``
with ``TVM_NUM_THREADS`` and ``OMP_NUM_THREADS`` set to N in its environment (TVM reads its thread
count when its pool starts, so each thread count needs a fresh process); PyTorch gets
``torch.set_num_threads(N)`` and each ONNX Runtime session ``intra_op_num_threads = N``. One
process per group (``pytorch``, each ONNX Runtime session: ``ort_fp32``, ``ort_int8``,
``ort_int8_static``, and ``tvm``) so that no framework is timed while another's idle thread pool
spins on the same cores; in the non-PyTorch groups the PyTorch reference output
is computed on one thread, so torch starts no pool there.

Per case: outputs are checked against PyTorch's (relative max error), and the output of each
variant whose meta names an ``expected`` file (the exact LUT's integer reference) against that
file bit for bit; each framework's calls per sample are calibrated to ``--min-sample`` seconds,
then ``--rounds`` rounds take one sample of each framework of the group in turn
(``timing.interleaved_samples``).
Then the LUT libraries run under the VM's instrument hook for a per-kernel profile: encode
(``lut_encode*``), lookup + accumulate (``lut_lookup*``, with any epilogue fused into them), the
exact (LUT-NA) kernels (``exact_lut*``) and the rest (skipped for a case whose meta says
``"profile": false``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

import numpy as np

from benchmarks.common.peers import failure_text, first_output, ort_runner, torch_runner, tvm_runner
from lut_tvm.files import write_json_atomic

from .prepare import read_meta
from benchmarks.common.timing import PAUSE_S, calls_per_sample, interleaved_samples, vm_kernel_times

LUT_ENCODE_PREFIX = "lut_encode"
LUT_LOOKUP_PREFIX = "lut_lookup"
EXACT_PREFIX = "exact_lut"


def split_profile(kernel_ms: dict) -> dict:
    """Per-function medians grouped into encode / lookup / exact LUT / other (ms) and the encode share."""
    groups = {"encode_ms": 0.0, "lookup_ms": 0.0, "exact_ms": 0.0, "other_ms": 0.0}
    for name, ms in kernel_ms.items():
        key = ("encode_ms" if name.startswith(LUT_ENCODE_PREFIX) else
               "lookup_ms" if name.startswith(LUT_LOOKUP_PREFIX) else
               "exact_ms" if name.startswith(EXACT_PREFIX) else "other_ms")
        groups[key] += ms
    total = sum(groups.values())
    top = sorted(kernel_ms.items(), key=lambda kv: -kv[1])[:8]
    return {**groups, "total_ms": total,
            "encode_share": groups["encode_ms"] / total if total else None,
            "lut_share": (groups["encode_ms"] + groups["lookup_ms"]) / total if total else None,
            "top": [[name, ms] for name, ms in top]}


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    scale = float(np.abs(want).max()) or 1.0
    return float(np.abs(got.astype(np.float64) - want).max()) / scale


def exactness(got: np.ndarray, want: np.ndarray) -> dict:
    """``{"bit_exact", "max_abs_diff"}`` of an exact LUT output against its reference output."""
    got = np.asarray(got)
    if got.shape != want.shape:
        return {"bit_exact": False, "max_abs_diff": None, "shape": [list(got.shape), list(want.shape)]}
    return {"bit_exact": bool(np.array_equal(got, want)),
            "max_abs_diff": float(np.abs(got.astype(np.float64) - want).max(initial=0.0))}


def check_exact(folder: Path, meta: dict, runners: dict) -> dict:
    """``{label: exactness}`` of each variant that names an ``expected`` output file."""
    return {label: exactness(first_output(runners[f"lut {label}"]()), np.load(folder / variant["expected"]))
            for label, variant in meta["lut_variants"].items() if "expected" in variant}


# One worker process each: no framework shares its cores with another's pool. Each ONNX Runtime session
# has its own intra-op pool, whose workers spin after a run: fp32 and int8 sessions timed in turn in one
# process ran 1.5-2.5x slower at 2 threads than at 1, so every session gets its own process.
ORT_GROUPS = ("ort_fp32", "ort_int8", "ort_int8_static")
GROUPS = ("pytorch", *ORT_GROUPS, "tvm")


def torch_reference(folder: Path, meta: dict, example: np.ndarray):
    """The case's PyTorch model as a runner (``pytorch`` group) and its output, the reference of every check."""
    from .exact_models import LUTNA_BUILDER, lutna_torch_model  # pylint: disable=import-outside-toplevel
    from .models import load_torch_model  # pylint: disable=import-outside-toplevel

    from .zoo import REFERENCE, ZOO_BUILDER  # pylint: disable=import-outside-toplevel

    if meta["torch"]["builder"] == ZOO_BUILDER:  # no PyTorch model: ONNX Runtime fp32's output is the reference
        return None, np.load(folder / REFERENCE)
    load = lutna_torch_model if meta["torch"]["builder"] == LUTNA_BUILDER else load_torch_model
    run = torch_runner(load(meta, folder), example)
    return run, first_output(run())


def case_runners(folder: Path, meta: dict, threads: int, group: str, example: np.ndarray):
    """``(runners, luts)`` of ``group``: a no-argument callable per framework, and ``{label: (vm, args)}`` of
    the LUT builds (``tvm`` group)."""
    failed = meta.get("failed", {})
    if group in ORT_GROUPS:
        files = {"ort_fp32": "model.onnx", "ort_int8": "model_int8.onnx", "ort_int8_static": meta.get("ort_int8_static")}
        if files[group] is None or group in failed:
            return {}, {}
        return {group: ort_runner(folder / files[group], example, threads)}, {}
    runners = {} if "tvm_dense" in failed else {"tvm_dense": tvm_runner(folder / "tvm_dense.so", example)[0]}
    luts = {}
    for label, variant in meta["lut_variants"].items():
        run, vm, args = tvm_runner(folder / variant["library"], example)
        runners[f"lut {label}"] = run
        luts[label] = (vm, args)
    return runners, luts


class CaseTimer:
    """One case's frameworks of ``group`` in this process: outputs checked and calls per sample calibrated
    when made; ``sample`` times one block of calls of each; ``result`` ends the case (LUT profiles)."""

    def __init__(self, folder: Path, threads: int, rounds: int, min_sample_s: float, group: str):
        import torch  # pylint: disable=import-outside-toplevel

        meta = read_meta(folder)
        if meta is None:
            raise RuntimeError(f"{folder}: no meta.json (the case was not prepared completely)")
        example = np.load(folder / "input.npy")
        torch.set_num_threads(threads if group == "pytorch" else 1)
        torch_run, want = torch_reference(folder, meta, example)
        if group == "pytorch":
            self.runners, self.luts = ({"pytorch": torch_run} if torch_run else {}), {}
        else:
            self.runners, self.luts = case_runners(folder, meta, threads, group, example)
        self.errors = {name: relative_error(first_output(fn()), want)
                       for name, fn in self.runners.items() if name != "pytorch"}
        self.exact = check_exact(folder, meta, self.runners) if group == "tvm" else {}
        self.number = {name: calls_per_sample(fn, min_sample_s) for name, fn in self.runners.items()}
        self.pause_s = PAUSE_S if threads > 1 else 0.0
        self.rounds, self.profile = rounds, meta.get("profile", True)
        self.samples: dict = {name: [] for name in self.runners}

    def sample(self) -> None:
        """One round: a block of calls of each framework (after a pause when several threads run)."""
        for name, seconds in interleaved_samples(self.runners, 1, self.number, self.pause_s).items():
            self.samples[name].extend(seconds)

    def result(self) -> dict:
        profiles = ({label: split_profile(vm_kernel_times(vm, args, self.rounds)) for label, (vm, args) in
                     self.luts.items()} if self.profile else {})
        samples = {name: s for name, s in self.samples.items() if s}
        return {
            "ms": {name: statistics.median(s) * 1e3 for name, s in samples.items()},
            "min_ms": {name: min(s) * 1e3 for name, s in samples.items()},
            "max_ms": {name: max(s) * 1e3 for name, s in samples.items()},
            "calls_per_sample": self.number, "rounds": self.rounds, "relative_error_vs_pytorch": self.errors,
            "lut_profile": profiles, **({"exact_check": self.exact} if self.exact else {}),
        }


def measure_case(folder: Path, threads: int, rounds: int, min_sample_s: float, group: str) -> dict:
    """All ``rounds`` samples of one case in this process (the frameworks of ``group`` interleaved)."""
    timer = CaseTimer(folder, threads, rounds, min_sample_s, group)
    for _ in range(rounds):
        timer.sample()
    return timer.result()


def serve(args) -> int:
    """Answer one JSON command per stdin line with one JSON line on stdout: ``{"case": folder}`` prepares a
    case, ``{"sample": true}`` times one round of it, ``{"result": true}`` returns its result (or
    ``{"error": text}``); the coordinator (``run.time_all_groups``) interleaves the rounds of every group's
    process, so that a drifting machine load reaches every framework alike."""
    import json  # pylint: disable=import-outside-toplevel

    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # whatever a library prints goes to stderr, not into the replies
    timer, failure = None, None
    for line in sys.stdin:
        command, reply = json.loads(line), {}
        try:
            if "case" in command:
                timer, failure = None, None
                timer = CaseTimer(Path(command["case"]), args.threads, args.rounds, args.min_sample, args.group)
            elif "sample" in command and timer is not None:
                timer.sample()
            elif "result" in command:
                reply = {"result": timer.result()} if timer is not None else {"error": failure or "no case"}
                timer = None
        except Exception as err:  # pylint: disable=broad-except
            failure, timer = failure_text(err), None
            reply = {"error": failure}
        print(json.dumps(reply), file=replies, flush=True)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--group", choices=GROUPS, required=True, help="the frameworks this process times")
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--rounds", type=int, required=True)
    parser.add_argument("--min-sample", type=float, required=True, help="seconds per sample, at least")
    parser.add_argument("--out", type=Path, help="time every folder's case in turn and write the results here")
    parser.add_argument("--serve", action="store_true", help="take commands on stdin (run.time_all_groups)")
    parser.add_argument("folders", type=Path, nargs="*")
    args = parser.parse_args(argv)
    if os.environ.get("TVM_NUM_THREADS") != str(args.threads):
        raise SystemExit(f"worker: TVM_NUM_THREADS is {os.environ.get('TVM_NUM_THREADS')!r}, "
                         f"expected {args.threads} (set it before TVM starts)")
    if args.serve:
        return serve(args)
    if args.out is None:
        raise SystemExit("worker: give --out (or --serve)")
    import torch  # pylint: disable=import-outside-toplevel
    from lut_tvm.steps import Progress  # pylint: disable=import-outside-toplevel

    results = {}
    progress = Progress()
    with progress.counter(f"timing {args.group}, {args.threads} thread(s)", len(args.folders), "case") as count:
        for folder in args.folders:
            count.status(folder.name[-32:])
            try:
                results[folder.name] = measure_case(folder, args.threads, args.rounds, args.min_sample, args.group)
            except Exception as err:  # pylint: disable=broad-except
                progress.say(f"{folder.name}: timing failed: {failure_text(err)}")
            count.update()
    write_json_atomic(args.out, {"threads": args.threads, "group": args.group, "torch_threads": torch.get_num_threads(),
                                 "loadavg_end": list(os.getloadavg()), "cases": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
