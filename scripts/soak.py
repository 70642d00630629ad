"""Soak: one loaded artifact called from several threads many times, then loaded and released
many times — what a service does with it.

    python scripts/soak.py [--model squeezenet1_1] [--small] [--split 0.5] [--precision native]
                           [--gpu emulated] [--artifact DIR] [--threads 4] [--runs 10000]
                           [--compare 1,2,4] [--compare-runs 200] [--reloads 50] [--json FILE]

1. `--compare`: throughput with 1, 2, 4 callers as `Executable.run` serves them (on the
   process's runner threads, TVM_MULAYER_CONCURRENT_RUNS at once, each with its own VM, the
   weights shared) beside its peer, the same calls serialised by one lock around `run` (the
   floor any thread-safe wrapper gives), alternated in one process so a busy machine hurts
   both alike; the ratio is run / lock.
2. The soak: `--runs` calls from `--threads` threads, thread i on its own seeded input; every
   output is compared bit for bit with a single-threaded reference computed before the
   threads start. Prints throughput, latency p50/p99, and resident memory and the process's
   thread count after a warm-up round (every caller once) and at the end.
3. `--reloads`: the artifact loaded, run once and released that many times; resident memory
   after each (the growth per reload over the second half tells a leak from a plateau).

The model is compiled and exported first unless `--artifact` names an exported one. Exits 1
when an output differs. `--json` writes every figure for a test or a log.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def thread_count() -> int:
    return len(list(Path("/proc/self/task").iterdir()))


def resident_mib() -> float:
    """This process's resident memory (VmRSS) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def seeded_inputs(executable, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(shape).astype(dtype) if np.dtype(dtype).kind == "f"
            else rng.integers(0, 8, shape).astype(dtype) for name, (shape, dtype) in executable.inputs.items()}


def callers(run, threads: int, calls: int) -> dict:
    """`calls` calls of `run(thread_index)` spread over `threads` threads started together:
    wall seconds, per-call latencies, and the first exception any thread raised."""
    latencies, errors = [[] for _ in range(threads)], []
    barrier = threading.Barrier(threads + 1)

    def work(index):
        barrier.wait()
        try:
            for _ in range(calls // threads + (index < calls % threads)):
                start = time.perf_counter()
                run(index)
                latencies[index].append(time.perf_counter() - start)
        except BaseException as err:  # noqa: BLE001 - reported by the caller, not lost in a thread
            errors.append(err)

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    barrier.wait()
    start = time.perf_counter()
    for worker in workers:
        worker.join()
    wall = time.perf_counter() - start
    if errors:
        raise errors[0]
    return {"wall": wall, "latencies": [t for times in latencies for t in times]}


def compare(executable, inputs: list, counts: list, calls: int, rounds: int = 3) -> list:
    """Throughput (calls/s) with each caller count: `run` as is, and serialised by one lock."""
    lock = threading.Lock()

    def locked(index):
        with lock:
            executable.run(inputs[index % len(inputs)])

    def concurrent(index):
        executable.run(inputs[index % len(inputs)])

    best = {(count, name): 0.0 for count in counts for name in ("run", "lock")}
    for _ in range(rounds):  # everything alternated, best kept: a busy machine hurts all alike
        for count in counts:
            for name, run in (("run", concurrent), ("lock", locked)):
                result = callers(run, count, calls)
                best[count, name] = max(best[count, name], calls / result["wall"])
    return [{"callers": count, "run_per_s": best[count, "run"], "lock_per_s": best[count, "lock"],
             "ratio": best[count, "run"] / best[count, "lock"]} for count in counts]


def soak(executable, threads: int, runs: int) -> dict:
    inputs = [seeded_inputs(executable, seed) for seed in range(threads)]
    references = [executable.run(x) for x in inputs]  # single-threaded, before any concurrency
    mismatches = [0] * threads

    def checked(index):
        outputs = executable.run(inputs[index])
        if any(not np.array_equal(outputs[name], references[index][name]) for name in outputs):
            mismatches[index] += 1

    callers(checked, threads, threads)  # warm-up: a VM for every caller exists from here on
    gc.collect()
    start_mib, start_threads = resident_mib(), thread_count()
    result = callers(checked, threads, runs)
    gc.collect()
    latencies = sorted(result["latencies"])
    return {"threads": threads, "runs": runs, "mismatches": sum(mismatches),
            "per_s": runs / result["wall"], "p50_ms": 1e3 * statistics.median(latencies),
            "p99_ms": 1e3 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
            "start_mib": start_mib, "end_mib": resident_mib(), "start_threads": start_threads,
            "end_threads": thread_count()}


def reload(artifact: Path, times: int) -> dict:
    import tvm_mulayer

    mib = []
    for _ in range(times):
        executable = tvm_mulayer.load(artifact)
        executable.run(seeded_inputs(executable, 0))
        del executable
        gc.collect()
        mib.append(resident_mib())
    # allocators and driver caches grow over the first loads and then hold: the second half's
    # slope tells a leak (every load keeps some) from a plateau
    half = mib[len(mib) // 2:]
    settled = (half[-1] - half[0]) / (len(half) - 1) if len(half) > 1 else 0.0
    return {"reloads": times, "first_mib": mib[0], "last_mib": mib[-1],
            "settled_mib_per_reload": settled, "mib": mib}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="squeezenet1_1", help="zoo name or ONNX file")
    parser.add_argument("--small", action="store_true", help="the zoo model's small CI variant")
    parser.add_argument("--split", default="0.5")
    parser.add_argument("--precision", default="native")
    parser.add_argument("--gpu", default="emulated")
    parser.add_argument("--artifact", help="an exported artifact to soak (no compile)")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--runs", type=int, default=10000)
    parser.add_argument("--compare", default="1,2,4", help="caller counts to compare ('' for none)")
    parser.add_argument("--compare-runs", type=int, default=200)
    parser.add_argument("--reloads", type=int, default=50)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)

    import tvm_mulayer
    from tvm_mulayer.base import zoo

    with tempfile.TemporaryDirectory() as tmp:
        artifact = Path(args.artifact) if args.artifact else None
        if artifact is None:
            model = args.model
            if model in zoo.NAMES:
                model = zoo.build(model, **(zoo.small(model) if args.small else {}))
            split = float(args.split) if args.split.replace(".", "", 1).isdigit() else args.split
            compiled = tvm_mulayer.compile(model, cpu="host", gpu=args.gpu, split=split, precision=args.precision)
            artifact = compiled.export(Path(tmp) / "artifact")
            del compiled
        executable = tvm_mulayer.load(artifact)
        report = {"machine": f"{platform.node()} ({platform.processor() or platform.machine()})",
                  "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "argv": vars(args),
                  # the artifact's, which --gpu does not choose when --artifact is given
                  "processors": f"{executable.cpu.label()} + {executable.gpu.label()}"}
        counts = [int(n) for n in args.compare.split(",") if n]
        if counts:
            inputs = [seeded_inputs(executable, seed) for seed in range(max(counts))]
            report["compare"] = compare(executable, inputs, counts, args.compare_runs)
            print("| callers | Executable.run (runs/s) | one lock around it (runs/s) | run / lock |\n|---|---|---|---|")
            for row in report["compare"]:
                print(f"| {row['callers']} | {row['run_per_s']:.1f} | {row['lock_per_s']:.1f} | {row['ratio']:.2f} |")
        if args.runs:
            report["soak"] = s = soak(executable, args.threads, args.runs)
            print(f"soak: {s['runs']} runs from {s['threads']} threads, {s['mismatches']} outputs differing from "
                  f"the single-threaded reference; {s['per_s']:.1f} runs/s, p50 {s['p50_ms']:.2f} ms, "
                  f"p99 {s['p99_ms']:.2f} ms; resident {s['start_mib']:.1f} -> {s['end_mib']:.1f} MiB, threads "
                  f"{s['start_threads']} -> {s['end_threads']}")
        del executable
        if args.reloads:
            report["reload"] = r = reload(artifact, args.reloads)
            print(f"reload: loaded, run and released {r['reloads']} times; resident {r['first_mib']:.1f} -> "
                  f"{r['last_mib']:.1f} MiB, {r['settled_mib_per_reload']:+.2f} MiB per reload over the last half")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 1 if report.get("soak", {}).get("mismatches") else 0


if __name__ == "__main__":
    raise SystemExit(main())
