"""Run every benchmark once, side by side on this machine, and write benchmarks/RESULTS.md.

Usage: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/run.py`` (``make bench``). Every variant runs
with one torch thread; compared variants are interleaved (A B A B ...) and medians reported.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_alerts
import bench_circles
import bench_cli
import bench_compile
import bench_depth
import bench_distributed
import bench_nan_guard
import bench_probe_overhead
import bench_second_order
import bench_spiral
import bench_unit_death

OUT = Path(__file__).resolve().parent / "RESULTS.md"
NOISE = 0.05  # an instrumented run faster than the plain one by more than this is load noise
# Repetitions scaled to the 15-minute budget on a shared 2-core machine; problem sizes are the issue's.
REPS = {"overhead": 5, "circles": 2, "spiral": 1, "depth": 2, "cli": 2, "compile": 3, "distributed": 3,
        "nan_guard": 3, "units": 7, "alerts": 1, "second_order": 5}


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """CPU, cores, load, versions, threads and date of this run."""
    return {"cpu": _cpu(), "cores": os.cpu_count(), "load_average": os.getloadavg(),
            "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version(),
            "torch_threads": torch.get_num_threads(), "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}


def _fmt(x: float, digits: int = 3) -> str:
    return f"{x:.{digits}g}"


def _met(overhead: float, target: float) -> str:
    """Whether an overhead meets its target; a clearly negative one is noise (other load), not a pass."""
    if overhead < -NOISE:
        return f"inconclusive (negative beyond -{NOISE:.0%}: load noise)"
    return "yes" if overhead <= target else "no"


def _overhead_rows(ov: dict[str, Any]) -> list[str]:
    """Summary rows of target 1, one pair per torch thread count."""
    rows = []
    for by in ov["by_threads"]:
        for variant, target in (("probe every step", 0.05), ("probe every 10 steps", 0.01)):
            value = by["overhead"][variant]
            rows.append(f"| 1 | {variant.replace('probe ', 'probe overhead, ')}, {by['threads']} thread(s), whole runs "
                        f"| {value:+.1%} | <= {target:.0%} | {_met(value, target)} |")
    return rows


def report(info: dict[str, Any], res: dict[str, Any], wall: float) -> str:
    """RESULTS.md text from the measurements."""
    ov, ci, sp, de, cl = res["overhead"], res["circles"], res["spiral"], res["depth"], res["cli"]
    lines = [
        "# gradprobe benchmarks", "",
        (f"Written by `benchmarks/run.py` (`make bench`) in {wall / 60:.1f} min. Machine: {info['cpu']}, "
        f"{info['cores']} cores (shared; load average at start {', '.join(_fmt(v) for v in info['load_average'])}), "
        f"torch {info['torch']}, numpy {info['numpy']}, Python {info['python']}, {info['date']}."),
        ("Every variant runs with **1 torch thread** (`torch.set_num_threads(1)`, `OMP_NUM_THREADS=1`) unless its "
        "table says otherwise (the probe overhead is also measured with 2 threads, torch's default here); compared "
        "variants are interleaved (A B A B ...) and the median over repetitions is reported. Repetitions "
        f"(not problem sizes) are scaled to the 15-minute budget: {REPS}."), "",
        "| # | benchmark | measured | target | met |", "|---|---|---|---|---|",
        *_overhead_rows(ov),
        *([(f"| 1 | probe overhead under torch.compile (inductor), every {res['compile']['every']} steps, whole runs "
            f"(compile {_fmt(res['compile']['compile_seconds'][bench_compile.VARIANTS[1]])} s vs "
            f"{_fmt(res['compile']['compile_seconds'][bench_compile.VARIANTS[0]])} s, "
            f"{res['compile']['graphs'][bench_compile.VARIANTS[1]]} graphs) | {res['compile']['overhead']:+.1%} | <= 1% | "
            f"{_met(res['compile']['overhead'], 0.01)} |")] if "compile" in res else []),
        *([(f"| 1 | probe overhead under DDP, {res['distributed']['world']} gloo ranks, every "
            f"{res['distributed']['every']} steps, whole runs (flushes included; alerts off: "
            f"{res['distributed']['overhead'][bench_distributed.ALERTS_OFF]:+.1%}) | "
            f"{res['distributed']['overhead'][bench_distributed.PROBED]:+.1%} | <= 1% | "
            f"{_met(res['distributed']['overhead'][bench_distributed.PROBED], 0.01)} |")]
           if "distributed" in res else []),
        *([(f"| - | `Probe(nan_guard=True)`: nan_guard every step, whole runs (CPU time) | "
            f"{res['nan_guard']['overhead_cpu']['nan_guard every step']:+.1%} | <= 3% | "
            f"{_met(res['nan_guard']['overhead_cpu']['nan_guard every step'], 0.03)} |")]
           if "nan_guard" in res else []),
        (f"| 2 | circles-deep 3 x {ci['models'] // 3} seeds, {ci['epochs']} epochs, ensemble vs plain loop | {ci['speedup']:.1f}x faster | >= 50x | "
        f"{'yes' if ci['speedup'] >= 50 else 'no'} |"),
        (f"| 2 | `gradprobe sweep circles-deep --seeds 10` vs a plain loop over the 30 models, whole processes | "
        f"{cl['sweep']['speedup']:.1f}x faster | >= 50x | {'yes' if cl['sweep']['speedup'] >= 50 else 'no'} |"),
        (f"| 3 | `gradprobe run circles-deep --no-report` vs a plain loop over its 3 models, whole processes | "
        f"{cl['single']['ratio']:.2f}x the plain time | <= 1.3x | {'yes' if cl['single']['ratio'] <= 1.3 else 'no'} |"),
        (f"| 4 | spiral 2 arms x {sp['iterations']} iterations, gradprobe vs NumPy | {sp['speedup']:.2f}x "
        f"| >= 3x | {'yes' if sp['speedup'] >= 3 else 'no'} |"),
        (f"| 6 | CLI start-up, `gradprobe presets` | {cl['presets_seconds']:.2f} s | <= 0.5 s | "
        f"{'yes' if cl['presets_seconds'] <= 0.5 else 'no'} |"),
        *(f"| 6 | CLI start-up, `gradprobe {name}` | {t['seconds']:.2f} s | <= 0.5 s | "
          f"{'yes' if t['seconds'] <= 0.5 else 'no'} |" for name, t in cl.get("startup", {}).items() if name != "presets"),
        (f"| 5 | depth sweep, best share of fp32 matmul peak | "
        f"{max(r['share_of_peak'] for r in de['rows']):.2%} | >= 10% | "
        f"{'yes' if max(r['share_of_peak'] for r in de['rows']) >= 0.1 else 'no'} |"),
        (f"| - | store, bytes per recorded stat value (circles / spiral) | {ci['store']['bytes_per_value']:.2f} / "
        f"{sp['store']['bytes_per_value']:.2f} | <= 16 | "
        f"{'yes' if max(ci['store']['bytes_per_value'], sp['store']['bytes_per_value']) <= 16 else 'no'} |"), "",
        "## 1. Probe overhead", "",
        (f"MLP 784 -> 6 x 256 -> 10, batch 128, Adam, random MNIST-shaped data. Each sample is one whole run of "
        f"{ov['steps']} steps (probe attach, every flush and the final detach included) divided by its steps, "
        f"after {bench_probe_overhead.WARMUP} untimed warm-up steps; {ov['reps']} interleaved repetitions, median "
        "reported. At `every=10` this mean includes the recorded steps, which a median step time would hide."), "",
        "| torch threads | variant | s/step (mean over the run) | overhead |", "|---|---|---|---|",
    ]
    for by in ov["by_threads"]:
        base = by["step_seconds"]["uninstrumented"]
        lines += [f"| {by['threads']} | {v} | {_fmt(s)} | {s / base - 1:+.1%} |" for v, s in by["step_seconds"].items()]
    lines += _scale_sections(res)
    lines += ["", "## 2. circles-deep ensemble vs plain loop", "",
              (f"{ci['models']} models (sigmoid/tanh/relu x {ci['models'] // 3} seeds), {ci['epochs']} epochs, batch 32, RMSprop. "
              "gradprobe: `train_group` with the preset's probe cadence (stats and histograms every epoch) "
              f"writing {ci['models']} run directories to a temp store. Baseline: a plain PyTorch loop, one model at a time, "
              f"no probe, no store. Repetitions: {ci['reps']}."), "",
              "| engine | seconds (median) | all |", "|---|---|---|"]
    lines += [f"| {k} | {_fmt(v)} | {', '.join(_fmt(x) for x in ci['all_seconds'][k])} |" for k, v in ci["seconds"].items()]
    lines += ["", f"Speed-up: **{ci['speedup']:.1f}x**. Final train accuracy, mean +- std over seeds:", "",
              "| arm | gradprobe | plain loop |", "|---|---|---|"]
    for arm, (m, s) in ci["accuracy_mean_std"]["gradprobe"].items():
        pm, ps = ci["accuracy_mean_std"]["plain loop"][arm]
        lines.append(f"| {arm} | {m:.3f} +- {s:.3f} | {pm:.3f} +- {ps:.3f} |")
    lines += ["", "## 4. spiral: gradprobe vs hand-written NumPy", "",
              (f"CS231n spiral, 2 -> 50 -> 50 -> 3, full batch, step 0.1, L2 1e-3, {sp['iterations']} iterations, "
              "arms sigmoid and relu. gradprobe trains both arms as one ensemble, recording the preset's "
              "per-iteration gradient stats (mean_abs, sum|dW|/sum(shape), norm, nonfinite, weight norm) and "
              "histograms, into a temp store. NumPy: CS231n-style forward/backward in float64 (NumPy's "
              "default, as in the course), also computing sum|dW|/sum(shape) per iteration, one arm after the "
              f"other. Repetitions: {sp['reps']}."), "",
              "| engine | seconds (median) | train accuracy (sigmoid, relu) |", "|---|---|---|",
              f"| gradprobe | {_fmt(sp['seconds']['gradprobe'])} | {', '.join(f'{a:.3f}' for a in sp['train_accuracy']['gradprobe'])} |",
              f"| NumPy | {_fmt(sp['seconds']['numpy'])} | {', '.join(f'{a:.3f}' for a in sp['train_accuracy']['numpy'])} |",
              "", f"Ratio NumPy time / gradprobe time: **{sp['speedup']:.2f}**.", "",
              "## 5. Depth sweep", "",
              (f"circles, width w (5, the preset's, and 256), depth d, activations {', '.join(bench_depth.ACTIVATIONS)} x the preset's 3 arms x "
              f"5 seeds = {de['rows'][0]['models']} models per group, {de['epochs']} epochs of batch 32, probe on at "
              "the preset cadence, no store; seconds include building the models and their summaries. Useful FLOPs "
              "= 6 x batch x sum(fan_in x fan_out) per model-step. fp32 matmul peak (1024^2 `torch.mm`, 1 thread, "
              f"measured between the runs): {de['peak_flop_per_s'] / 1e9:.1f} GFLOP/s."), "",
              "| width | depth | seconds | model-steps/s | useful GFLOP/s | share of peak |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['width']} | {r['depth']} | {_fmt(r['seconds'])} | {r['model_steps_per_s']:.0f} | "
              f"{r['useful_flop_per_s'] / 1e9:.3f} | {r['share_of_peak']:.3%} |" for r in de["rows"]]
    lines += ["", "## 6. Whole commands", "",
              ("Both sides timed as whole processes (interpreter, imports, data, training; gradprobe adds the probe, "
               "the store and the CLI; `--engine auto`, so the ensemble engine), 1 torch thread, "
               f"{cl['reps']} interleaved repetitions, medians. The plain loop is `bench_circles.plain_loop` over the "
               "same configs in one process."), "",
              "| command | gradprobe s | plain loop s | ratio |", "|---|---|---|---|",
              (f"| sweep circles-deep, 10 seeds (30 models) | {_fmt(cl['sweep']['seconds']['gradprobe'])} | "
               f"{_fmt(cl['sweep']['seconds']['plain loop'])} | {cl['sweep']['speedup']:.1f}x faster |"),
              (f"| run circles-deep (3 models), no report | {_fmt(cl['single']['seconds']['gradprobe'])} | "
               f"{_fmt(cl['single']['seconds']['plain loop'])} | {cl['single']['ratio']:.2f}x the plain time |"),
              "", f"`gradprobe presets`: {cl['presets_seconds']:.2f} s (median of {len(cl['presets_all'])}).",
              "", "## 7. Store", "",
              ("Bytes of the `stats-*.parquet` parts divided by the number of stat rows they hold "
              "(float32 values, dictionary-encoded keys, byte-stream-split values)."), "",
              (f"* circles-deep ({ci['models']} runs, every-epoch records): {ci['store']['bytes_per_value']:.2f} bytes/value "
              f"({ci['store']['stat_rows']} values; whole run directories incl. histograms and models: "
              f"{ci['store']['run_dir_bytes_total']} bytes)"),
              (f"* spiral (2 runs, every-iteration records): {sp['store']['bytes_per_value']:.2f} bytes/value "
              f"({sp['store']['stat_rows']} values)"), "",
              *_feature_sections(res), "Raw numbers: `benchmarks/results.json`."]
    return "\n".join(lines) + "\n"


def _scale_sections(res: dict[str, Any]) -> list[str]:
    """Section 1b: the probe's overhead under torch.compile and under DDP."""
    lines = ["", "## 1b. Probe overhead under torch.compile and DDP", ""]
    if "compile" in res:
        co = res["compile"]
        lines += [(f"`bench_compile.py`: the MLP of section 1, `torch.compile(model)` (inductor), a fresh model and "
                   f"`torch._dynamo.reset()` per sample; the first {bench_compile.COMPILE_STEPS} steps (compiling) are "
                   f"timed apart, then {co['steps']} steps and the final detach; {co['reps']} interleaved repetitions, "
                   "medians. Compile times after the first sample are served partly by inductor's on-disk cache."), "",
                  "| variant | s/step | compile s | graphs compiled |", "|---|---|---|---|"]
        lines += [f"| {v} | {_fmt(co['step_seconds'][v])} | {_fmt(co['compile_seconds'][v])} | {co['graphs'][v]} |"
                  for v in bench_compile.VARIANTS]
        lines += ["", f"Overhead {co['overhead']:+.1%}.", ""]
    if "distributed" in res:
        dd = res["distributed"]
        lines += [(f"`bench_distributed.py`: {dd['world']} gloo ranks on the 2 cores, the MLP of section 1, batch 128 "
                   f"per rank; whole runs of {dd['steps']} steps on rank 0 (every flush's cross-rank combine "
                   f"included), {dd['reps']} interleaved repetitions, medians."), "",
                  "| variant | s/step | overhead |", "|---|---|---|"]
        lines += [f"| {v} | {_fmt(t)} | {t / dd['step_seconds'][bench_distributed.PLAIN] - 1:+.1%} |"
                  for v, t in dd["step_seconds"].items()]
    return lines


def _feature_sections(res: dict[str, Any]) -> list[str]:
    """Section 8: what the NaN guard, per-unit death, live alerts and second-order signals cost."""
    lines = ["## 8. Live and second-order features", ""]
    if "nan_guard" in res:
        ng = res["nan_guard"]
        lines += [(f"`bench_nan_guard.py`: the MLP of section 1, whole runs of {ng['steps']} steps, {ng['reps']} "
                   "interleaved repetitions, medians; wall time and this process's CPU time per step (CPU time is "
                   "the stable one on a shared machine; the overhead is computed from it)."), "",
                  "| variant | wall s/step | CPU s/step | overhead (CPU) |", "|---|---|---|---|"]
        lines += [f"| {v} | {_fmt(ng['step_seconds_wall'][v])} | {_fmt(ng['step_seconds_cpu'][v])} | "
                  f"{ng['overhead_cpu'].get(v, 0.0):+.1%} |" for v in ng["step_seconds_cpu"]]
        lines.append("")
    if "units" in res:
        un = res["units"]
        lines += [(f"`bench_unit_death.py`: per-unit death tracking, probe with `units=True` against `units=False` "
                   f"at the same cadence, whole runs of {un['steps']} steps, {un['reps']} interleaved repetitions; "
                   "cost = median over repetitions of (on - off) / uninstrumented."), "",
                  "| cadence | tracker cost |", "|---|---|"]
        lines += [f"| {w} | {c:+.1%}{' (negative: load noise)' if c < -NOISE else ''} |" for w, c in un["units_cost"].items()]
        lines += ["", (f"The tracker's own ops, timed alone: {un['tracker_seconds_per_recorded_step'] * 1e6:.0f} us per "
                       "recorded step (whole-run differences this small are within the runs' noise)."), ""]
    if "alerts" in res:
        al = res["alerts"]
        lines += [(f"`bench_alerts.py`: live alerts, runs of {al['steps']} steps recorded every step (a flush every "
                   "64), each flush's `AlertMonitor.update` timed."), "",
                  "| model | flushes | alerts | s per flush (median, wall) | CPU s per flush | share of the run's wall |",
                  "|---|---|---|---|---|---|"]
        for name in ("mlp784", "sigmoid16"):
            on = al[name]["alerts_on"]
            lines.append(f"| {name} | {on['flushes']} | {on['alerts']} | {_fmt(on['flush_seconds_median'])} | "
                         f"{_fmt(on['flush_cpu_seconds_median'])} | {on['alerts_share_of_wall']:.1%} |")
        lines.append("")
    if "second_order" in res:
        so = res["second_order"]
        lines += [(f"`bench_second_order.py`: one call each on the MLP of section 1 (batch 128), median of "
                   f"{so['reps']} interleaved calls, CPU time."), "",
                  "| signal | s per call | x a training step |", "|---|---|---|"]
        lines += [f"| {k} | {_fmt(v)} | {so['x_train_step'][k]:.1f} |" for k, v in so["seconds"].items()]
        lines.append("")
    return lines


def main() -> None:
    """Run all benchmarks and write RESULTS.md and results.json."""
    torch.set_num_threads(1)
    info = machine()
    start = time.perf_counter()
    res: dict[str, Any] = {}
    for name, fn in (("overhead", bench_probe_overhead.run), ("circles", bench_circles.run),
                     ("spiral", bench_spiral.run), ("depth", bench_depth.run), ("cli", bench_cli.run),
                     ("compile", bench_compile.run), ("distributed", bench_distributed.run),
                     ("nan_guard", bench_nan_guard.run), ("units", bench_unit_death.run),
                     ("alerts", lambda reps: bench_alerts.run(2000 * reps)), ("second_order", bench_second_order.run)):
        t0 = time.perf_counter()
        res[name] = fn(REPS[name])
        print(f"{name}: {time.perf_counter() - t0:.0f} s", flush=True)  # a script's progress
    wall = time.perf_counter() - start
    (OUT.parent / "results.json").write_text(json.dumps({"machine": info, "results": res}, indent=1, default=str))
    OUT.write_text(report(info, res, wall))
    print(OUT.read_text())


if __name__ == "__main__":
    main()
