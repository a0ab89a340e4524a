"""Issue 11: which design should the ensemble engine be built on? circles-deep, 30 models, 100 epochs.

Every design trains the same 30 models (sigmoid/tanh/relu x seeds 0-9, 2 -> 4x5 -> 1, N(0, 1)
weights, RMSprop lr 1e-3 alpha 0.9 eps 1e-7, batch 32, BCE with logits, each model its own data
order) and records what ``record: {every: epoch}`` asks for at least (mean |g| of every parameter at
each epoch's first batch); each runs in a fresh process with one torch thread:

  e         the plain one-model-at-a-time loop (baseline; ``bench_circles.plain_loop`` plus the record)
  a-full    today's engine, ``train_group`` as the preset records (default stats, histograms, store)
  a-lean    today's engine recording only grad mean |g| (the others' work), no store
  a-cli     ``gradprobe sweep circles-deep --seeds 10 --engine ensemble`` timed from the shell
  b         batched leaves (M, out, in), baddbmm, ``loss.sum().backward()``, RMSprop(foreach=True)
  c         torch.func: stack_module_state + functional_call + vmap(grad_and_value), one vmap per activation
  d         torch.compile(fullgraph) of b's whole step (func.grad, RMSprop by hand, statistics)
  d8        d with 8 steps per compiled call (the epoch's other 8 steps take d's one-step graphs)

Usage: ``python benchmarks/bench_ensemble_designs.py all --reps 3 --out DIR`` (results.json, table.md);
``... one DESIGN --out FILE`` runs one design in this process; ``... table --out DIR`` reprints the table;
BENCH_EPOCHS=3 makes a smoke test (a-cli always trains the preset's 100 epochs).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gradprobe import records as R
from gradprobe.data.datasets import Dataset, load_dataset
from gradprobe.train import setup
from gradprobe.train.config import RunConfig
from gradprobe.train.experiment import load_experiment
from gradprobe.train.loop import epoch_order

EPOCHS, SEEDS, FIRST, K = int(os.environ.get("BENCH_EPOCHS", "100")), 10, 10, 8  # FIRST: steps whose losses are compared; K: steps per call (d8)
LEAN = ["record.grad_stats=[mean_abs]", "record.weight_stats=[]", "record.activation_stats=[]",
        "record.delta_stats=[]", "record.modules=[]", "record.hist_every=null"]
Runs = list[tuple[int, int, nn.Module]]  # (start, stop, activation module) of equal activations


class _Out:
    """What one design measured: seconds per phase and the numbers the correctness check compares."""

    def __init__(self) -> None:
        self.t: dict[str, float] = {"compile_s": 0.0}
        self.first: list[torch.Tensor] = []  # (M,) batch loss of each of the first FIRST steps
        self.stats: list[torch.Tensor] = []  # (M, params) mean |g| at each epoch's first batch
        self.acc: list[float] = []


def _experiment(lean: bool = False) -> tuple[list[RunConfig], Dataset]:
    exp = load_experiment("circles-deep", [f"train.epochs={EPOCHS}"] + (LEAN if lean else []), seeds=SEEDS)
    return exp.runs, load_dataset(exp.runs[0].data)


def _orders(cfgs: list[RunConfig], n: int, epoch: int) -> torch.Tensor:
    return torch.stack([epoch_order(n, c.seed, epoch, True, "cpu") for c in cfgs])  # (M, N)


def _grad_stats(grads: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack([g.abs().flatten(1).mean(1) for g in grads], dim=1)  # (M, params)


def _runs(models: list[nn.Module]) -> Runs:
    """Contiguous runs of equal activations (the sweep's runs are arm-major), with a member's module."""
    out: Runs = []
    for i, m in enumerate(models):
        act = m.layers[1]
        if out and type(out[-1][2]) is type(act):
            out[-1] = (out[-1][0], i + 1, out[-1][2])
        else:
            out.append((i, i + 1, act))
    return out


def _forward(params: list[torch.Tensor], x: torch.Tensor, runs: Runs) -> torch.Tensor:
    """Logits (M, B) of M MLPs; params [W (M, out, in), b (M, out)] per layer, x (M, B, d)."""
    h, last = x, len(params) // 2 - 1
    for i in range(last + 1):
        z = torch.baddbmm(params[2 * i + 1].unsqueeze(1), h, params[2 * i].transpose(1, 2))  # (M, B, out)
        if i == last:
            return z.squeeze(-1)
        h = torch.cat([act(z[a:b]) for a, b, act in runs]) if len(runs) > 1 else runs[0][2](z)
    raise AssertionError


def _losses(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, y, reduction="none").mean(1)  # (M,)


def _accuracy(params: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor, runs: Runs) -> list[float]:
    with torch.no_grad():
        logits = _forward(params, x.expand(params[0].shape[0], *x.shape), runs)
        return ((logits > 0).float() == y).float().mean(1).tolist()


def _stacked(cfgs: list[RunConfig], data: Dataset) -> tuple[list[torch.Tensor], Runs]:
    models = [setup.build_model(c, data, "bce") for c in cfgs]
    params = [torch.stack([p.detach() for p in ps]) for ps in zip(*(m.parameters() for m in models))]
    return params, _runs(models)


def _epochs(cfgs: list[RunConfig], data: Dataset, out: _Out,
            body: Callable[[torch.Tensor, torch.Tensor, int], None]) -> None:
    """Per epoch: each member's order, its batches gathered (M, N, ...), then ``body(xs, ys, epoch)``."""
    x, y = data.x_train, data.y_train.float()
    for epoch in range(EPOCHS):
        order = _orders(cfgs, len(y), epoch)
        body(x[order], y[order], epoch)


def design_e(out: _Out) -> None:
    cfgs, data = _experiment()
    x, y = data.x_train, data.y_train.float()
    n, batch, o = len(y), cfgs[0].train.batch_size or 1, cfgs[0].optimizer
    for cfg in cfgs:
        model = setup.build_model(cfg, data, "bce")
        opt = torch.optim.RMSprop(model.parameters(), lr=o.lr, alpha=o.alpha, eps=o.eps)
        first, stats = [], []
        for epoch in range(EPOCHS):
            order = epoch_order(n, cfg.seed, epoch, True, "cpu")
            for b in range(math.ceil(n / batch)):
                idx = order[b * batch:(b + 1) * batch]
                opt.zero_grad(set_to_none=True)
                loss = F.binary_cross_entropy_with_logits(model(x[idx]).squeeze(-1), y[idx])
                loss.backward()
                if b == 0:
                    stats.append(torch.stack([p.grad.abs().mean() for p in model.parameters()]))  # type: ignore
                if len(first) < FIRST:
                    first.append(loss.detach())
                opt.step()
        with torch.no_grad():
            out.acc.append(float(((model(x).squeeze(-1) > 0).float() == y).float().mean()))
        out.first.append(torch.stack(first))  # per model here; transposed below
        out.stats.append(torch.stack(stats))
    out.first = list(torch.stack(out.first).T)  # (FIRST, M)
    out.stats = list(torch.stack(out.stats).transpose(0, 1))  # (E, M, params)


def design_a(out: _Out, lean: bool) -> None:
    from gradprobe.train.ensemble import train_group

    cfgs, data = _experiment(lean)
    with tempfile.TemporaryDirectory() as tmp:
        results = train_group(cfgs, data, None if lean else Path(tmp))
    names = [n for n, _ in setup.build_model(cfgs[0], data, "bce").named_parameters()]
    for r in results:
        f = r.frame[(r.frame["kind"] == R.GRAD) & (r.frame["stat"] == R.MEAN_ABS)]
        table = f.assign(name=f["layer"] + "." + f["tensor"]).pivot(index="step", columns="name", values="value")
        out.stats.append(torch.tensor(table[names].to_numpy()))  # (E, params)
        out.acc.append(float(r.summary["train_accuracy"]))
    out.stats = list(torch.stack(out.stats).transpose(0, 1))


def design_b(out: _Out) -> None:
    cfgs, data = _experiment()
    params, runs = _stacked(cfgs, data)
    leaves = [p.requires_grad_() for p in params]
    o, batch = cfgs[0].optimizer, cfgs[0].train.batch_size or 1
    opt = torch.optim.RMSprop(leaves, lr=o.lr, alpha=o.alpha, eps=o.eps, foreach=True)

    def body(xs: torch.Tensor, ys: torch.Tensor, epoch: int) -> None:
        for b in range(math.ceil(ys.shape[1] / batch)):
            sl = slice(b * batch, (b + 1) * batch)
            losses = _losses(_forward(leaves, xs[:, sl], runs), ys[:, sl])  # (M,)
            opt.zero_grad(set_to_none=True)
            losses.sum().backward()  # members independent: each gets its own mean loss's gradient
            if b == 0:
                out.stats.append(_grad_stats([p.grad for p in leaves]))  # type: ignore[misc]
            if len(out.first) < FIRST:
                out.first.append(losses.detach())
            opt.step()

    _epochs(cfgs, data, out, body)
    out.acc = _accuracy(leaves, data.x_train, data.y_train.float(), runs)


def design_c(out: _Out) -> None:
    from torch.func import functional_call, grad_and_value, stack_module_state, vmap

    cfgs, data = _experiment()
    models = [setup.build_model(c, data, "bce") for c in cfgs]
    runs = _runs(models)
    groups = []  # one vmap per activation: functional_call runs one module structure
    for a, b, _ in runs:
        state, _ = stack_module_state(models[a:b])  # type: ignore[arg-type]
        base = copy.deepcopy(models[a]).to("meta")

        def loss(p: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor, base: nn.Module = base) -> torch.Tensor:
            return F.binary_cross_entropy_with_logits(functional_call(base, p, (x,)).squeeze(-1), y)

        groups.append((a, b, state, vmap(grad_and_value(loss))))
    o, batch = cfgs[0].optimizer, cfgs[0].train.batch_size or 1
    leaves = [t for _, _, state, _ in groups for t in state.values()]
    opt = torch.optim.RMSprop(leaves, lr=o.lr, alpha=o.alpha, eps=o.eps, foreach=True)

    def body(xs: torch.Tensor, ys: torch.Tensor, epoch: int) -> None:
        for b in range(math.ceil(ys.shape[1] / batch)):
            sl = slice(b * batch, (b + 1) * batch)
            losses = []
            for a, z, state, fn in groups:
                grads, loss = fn(state, xs[a:z, sl], ys[a:z, sl])
                for k, g in grads.items():
                    state[k].grad = g
                losses.append(loss)
            if b == 0:
                out.stats.append(torch.cat([_grad_stats([p.grad for p in s.values()]) for _, _, s, _ in groups]))
            if len(out.first) < FIRST:
                out.first.append(torch.cat(losses))
            opt.step()

    _epochs(cfgs, data, out, body)
    params = [torch.cat(ts) for ts in zip(*([t.detach() for t in s.values()] for _, _, s, _ in groups))]
    out.acc = _accuracy(params, data.x_train, data.y_train.float(), runs)


def _compiled_step(runs: Runs, lr: float, alpha: float, eps: float, k: int) -> Callable[..., Any]:
    """``k`` whole steps (forward, func.grad backward, RMSprop, mean |g|) as one fullgraph compiled call."""
    def total(params: list[torch.Tensor], xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        losses = _losses(_forward(params, xb, runs), yb)
        return losses.sum(), losses

    grad_fn = torch.func.grad_and_value(total, has_aux=True)

    def step(params: list[torch.Tensor], sq: list[torch.Tensor], xs: torch.Tensor,
             ys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, losses, stats = ys.shape[1] // k, [], None
        for i in range(k):
            grads, (_, loss) = grad_fn(params, xs[:, i * batch:(i + 1) * batch], ys[:, i * batch:(i + 1) * batch])
            if stats is None:
                stats = _grad_stats(grads)
            for p, s, g in zip(params, sq, grads):  # torch's single-tensor RMSprop, op for op
                s.mul_(alpha).addcmul_(g, g, value=1 - alpha)
                p.addcdiv_(g, s.sqrt().add_(eps), value=-lr)
            losses.append(loss)
        return torch.stack(losses), stats  # (k, M), (M, params)

    return torch.compile(step, fullgraph=True, dynamic=False)


def design_d(out: _Out, k: int) -> None:
    cfgs, data = _experiment()
    params, runs = _stacked(cfgs, data)
    sq = [torch.zeros_like(p) for p in params]
    o, batch, n = cfgs[0].optimizer, cfgs[0].train.batch_size or 1, len(data.y_train)
    start = time.perf_counter()  # compile: importing dynamo/inductor, then every graph, on copies
    one = _compiled_step(runs, o.lr, o.alpha, o.eps, 1)
    many = _compiled_step(runs, o.lr, o.alpha, o.eps, k) if k > 1 else one
    full, tail = n // batch, n % batch
    calls = [(many, s, s + k * batch) for s in range(0, (full // k) * k * batch, k * batch)]
    calls += [(one, s, s + batch) for s in range((full // k) * k * batch, full * batch, batch)]
    calls += [(one, full * batch, n)] if tail else []
    xs, ys = torch.zeros(params[0].shape[0], n, data.x_train.shape[1]), torch.zeros(params[0].shape[0], n)
    for fn, a, b in {(fn, b - a): (fn, a, b) for fn, a, b in calls}.values():  # the training's strides too
        fn([p.clone() for p in params], [s.clone() for s in sq], xs[:, a:b], ys[:, a:b])
    out.t["compile_s"] = time.perf_counter() - start

    def body(xs: torch.Tensor, ys: torch.Tensor, epoch: int) -> None:
        for i, (fn, a, b) in enumerate(calls):
            losses, stats = fn(params, sq, xs[:, a:b], ys[:, a:b])
            if i == 0:
                out.stats.append(stats)
            if len(out.first) < FIRST:
                out.first += list(losses)[:FIRST - len(out.first)]

    _epochs(cfgs, data, out, body)
    out.acc = _accuracy(params, data.x_train, data.y_train.float(), runs)


def run_one(design: str) -> dict[str, Any]:
    """Run ``design`` in this process; seconds per phase and what the correctness check needs."""
    torch.set_num_threads(1)
    out = _Out()
    start = time.perf_counter()
    _experiment(design == "a-lean")  # imports (sklearn for the data: 1.3 s) and first calls, the same for all
    import gradprobe.train.ensemble  # noqa: F401
    startup = time.perf_counter() - start
    start = time.perf_counter()
    fns: dict[str, Callable[[], None]] = {
        "e": lambda: design_e(out), "a-full": lambda: design_a(out, False), "a-lean": lambda: design_a(out, True),
        "b": lambda: design_b(out), "c": lambda: design_c(out), "d": lambda: design_d(out, 1),
        "d8": lambda: design_d(out, K)}
    fns[design]()
    t = out.t  # wall: configs, data, models, orders, training, record, evaluation; compile apart
    t["wall_s"] = time.perf_counter() - start - t["compile_s"]
    steps = EPOCHS * math.ceil(1000 / 32)
    return {"design": design, **t, "startup_s": startup, "user_s": t["wall_s"] + t["compile_s"], "steps": steps,
            "per_step_us": t["wall_s"] / steps * 1e6, "acc": out.acc,
            "first": torch.stack(out.first).tolist() if out.first else None,  # (FIRST, M)
            "stats": torch.stack(out.stats).tolist(), "load": os.getloadavg()}


ORDER = ["e", "a-full", "a-lean", "a-cli", "b", "c", "d:cold", "d:warm", "d8:cold", "d8:warm"]


def _spawn(design: str, out: Path, env: dict[str, str]) -> dict[str, Any]:
    start = time.perf_counter()
    if design == "a-cli":
        with tempfile.TemporaryDirectory() as store:
            cmd = [str(Path(sys.executable).parent / "gradprobe"), "sweep", "circles-deep", "--seeds", str(SEEDS),
                   "--engine", "ensemble", "--store", store]
            subprocess.run(cmd, env={**env, "OMP_NUM_THREADS": "1", "MPLBACKEND": "agg"}, check=True,
                           capture_output=True)
        return {"design": design, "process_s": time.perf_counter() - start, "load": os.getloadavg()}
    subprocess.run([sys.executable, __file__, "one", design.split(":")[0], "--out", str(out)], env=env, check=True)
    res = json.loads(out.read_text())
    res.update(design=design, process_s=time.perf_counter() - start)
    return res


def run_all(reps: int, out_dir: Path) -> None:
    """``reps`` interleaved rounds of every design, each in a fresh process; writes results.json."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rounds = []
    for rep in range(reps):
        cache = tempfile.mkdtemp(prefix="inductor-")  # empty: the :cold runs compile, :warm ones reuse it
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
        row = {}
        for design in ORDER:
            res = _spawn(design, out_dir / f"{design.replace(':', '-')}-{rep}.json", env)
            print(f"rep {rep} {design}: process {res['process_s']:.1f} s, wall {res.get('wall_s', 0):.2f} s, "
                  f"compile {res.get('compile_s', 0):.1f} s, load {res['load'][0]:.2f}", flush=True)
            row[design] = res
        rounds.append(row)
        (out_dir / "results.json").write_text(json.dumps(rounds))
    print(table(rounds))


def _check(res: dict[str, Any], base: dict[str, Any]) -> str:
    """Losses of the first steps (max relative difference), stats at epochs 0 and 1, accuracies equal."""
    parts = []
    if res.get("first"):
        f, g = np.array(res["first"]), np.array(base["first"])
        parts.append(f"loss<={np.max(np.abs(f - g) / np.abs(g)):.1e}")
    if res.get("stats"):
        s, t = np.array(res["stats"])[:2], np.array(base["stats"])[:2]
        parts.append(f"g0,1<={np.max(np.abs(s - t) / np.maximum(np.abs(t), 1e-30)):.1e}")
    if res.get("acc"):
        acc, ref = np.array(res["acc"]), np.array(base["acc"])
        parts.append(f"acc= {int(np.sum(np.abs(acc - ref) < 1e-6))}/{len(ref)}, "  # a: k / 1000 in float64
                     f"max|d| {np.max(np.abs(acc - ref)):.3f}")
    return ", ".join(parts)


def table(rounds: list[dict[str, dict[str, Any]]]) -> str:
    """Markdown table of medians over rounds; speed-ups against e's wall time."""
    def med(design: str, key: str) -> float:
        vals = [r[design][key] for r in rounds if key in r[design]]
        return float(np.median(vals)) if vals else math.nan

    base = med("e", "wall_s")
    lines = ["| design | wall s | compile s | as user sees it s | process s | per step us | speed-up (wall) "
             "| speed-up (user) | correctness vs e (last round) |", "|" + "---|" * 9]
    for d in ORDER:
        wall = med(d, "wall_s") if d != "a-cli" else med(d, "process_s")
        user = med(d, "user_s") if d != "a-cli" else wall
        lines.append(f"| {d} | {wall:.2f} | {med(d, 'compile_s'):.1f} | {user:.2f} | {med(d, 'process_s'):.1f} | "
                     f"{med(d, 'per_step_us'):.0f} | {base / wall:.1f}x | {base / user:.1f}x | "
                     f"{_check(rounds[-1][d], rounds[-1]['e']) if d != 'e' else 'baseline'} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["all", "one", "table"])
    parser.add_argument("design", nargs="?")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.what == "one":
        args.out.write_text(json.dumps(run_one(args.design)))
    elif args.what == "table":
        print(table(json.loads((args.out / "results.json").read_text())))
    else:
        run_all(args.reps, args.out)


if __name__ == "__main__":
    main()
