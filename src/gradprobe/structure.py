"""What a network's wiring is, read once on the recording side: residual joins, normalisation layers, tied weights.

The diagnosis compares back-propagated errors; that is only meaningful along a product of per-layer
gains. A residual join sums paths, a normalisation layer divides the error by its input's scale,
and a tied weight also receives the output layer's gradient. This module finds all three from one
forward pass of an example batch through a copy of the model and returns plain JSON-ready data,
so the diagnosis (which never touches autograd) can read it from a probe or a stored run.

Joins are found in the autograd graph rather than from module names or classes: ``x + f(x)``
written in any module, functional code or a loop is an add node whose two inputs share an
ancestor, whatever the classes are called. Normalisation is found by behaviour: a module whose
output does not change when its input is doubled (BatchNorm in training, LayerNorm, GroupNorm,
RMSNorm, custom ones) divides the error by its input's scale.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from gradprobe.errors import GradprobeError
from gradprobe.hooks import first_tensor

# Autograd nodes that pass the error through unchanged in value (an add passes it to both inputs).
_PASS_THROUGH = frozenset({"AddBackward0", "ViewBackward0", "UnsafeViewBackward0", "ReshapeAliasBackward0",
                           "CloneBackward0", "AliasBackward0"})
_ADD = "AddBackward0"
MAX_NODES = 20_000  # the ancestor bitsets grow with nodes^2 bits: ~50 MB at this size
_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def _leaves(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    return ((n, m) for n, m in model.named_modules() if not list(m.children()))


def _unhooked_copy(model: nn.Module) -> nn.Module:
    """A deep copy without the original's hooks, so a probe attached to ``model`` records nothing."""
    twin = copy.deepcopy(model)
    for m in twin.modules():
        for attr in _HOOK_DICTS:
            getattr(m, attr, {}).clear()
    return twin


# Autograd nodes that multiply two inputs: with activations on both sides, each side's gradient is scaled by the other.
_PRODUCTS = ("BmmBackward", "MmBackward", "MatmulBackward", "BaddbmmBackward", "MulBackward", "EinsumBackward",
             "ScaledDotProduct")


def _feeders(graph: _Graph, node: Any, owners: dict[Any, list[str]]) -> frozenset[str]:
    """Recorded modules whose outputs reach ``node`` without passing through another recorded module."""
    found: set[str] = set()
    todo, seen = [node], set()
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        seen.add(n)
        if n in owners:
            found.update(owners[n])
        else:
            todo.extend(graph.inputs(n))
    return frozenset(found)


def _bilinear(graph: _Graph, owners: dict[Any, list[str]]) -> set[str]:
    """Modules feeding a product whose factors come from different modules (q @ k^T, attn @ v, gate * up)."""
    found: set[str] = set()
    for node in graph.index:
        if node in owners or not type(node).__name__.startswith(_PRODUCTS):
            continue
        sides = {f for f in (_feeders(graph, i, owners) for i in graph.inputs(node)) if f}
        if len(sides) >= 2:  # x * g(x) has one feeder on both sides: not a product of two activations
            found.update(*sides)
    return found


def _is_norm(module: nn.Module, x: torch.Tensor) -> bool:
    """Whether ``module`` (in training mode) ignores the scale of its input but not its content."""
    if x.numel() < 4 or not x.is_floating_point() or not x.std() > 0:
        return False
    twin = _unhooked_copy(module).train()
    g = torch.Generator(device=x.device).manual_seed(0)
    # Centred at unit std: a saturating activation (sigmoid, tanh) changes when its input doubles here,
    # while a norm's eps (1e-5 of the variance, typically) stays far below the tolerance.
    x = (x - x.mean()) / x.std()
    noise = torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype)
    # fork: a dropout module draws from the global RNG here, which must not shift the training run's draws
    with torch.no_grad(), torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        y = first_tensor(twin.forward(x))  # .forward: no hooks
        doubled = first_tensor(twin.forward(2.0 * x))
        other = first_tensor(twin.forward(x + noise))
    if y is None or doubled is None or other is None or y.shape != x.shape or not y.abs().sum() > 0:
        return False
    tol = 1e-3 * float(y.abs().mean())
    return bool(torch.allclose(y, doubled, rtol=1e-3, atol=tol)) and not torch.allclose(y, other, rtol=1e-3, atol=tol)


class _Graph:
    """The autograd graph behind one output: nodes in topological order with ancestor bitsets."""

    def __init__(self, root: Any) -> None:
        self.index: dict[Any, int] = {}
        order: list[Any] = []
        stack: list[tuple[Any, bool]] = [(root, False)]
        while stack:  # iterative post-order: deep graphs exceed Python's recursion limit
            node, done = stack.pop()
            if done:
                if node not in self.index:
                    self.index[node] = len(order)
                    order.append(node)
                continue
            if node in self.index:
                continue
            stack.append((node, True))
            stack.extend((p, False) for p, _ in node.next_functions if p is not None and p not in self.index)
        if len(order) > MAX_NODES:
            raise GradprobeError(f"structure: the autograd graph has {len(order)} nodes, more than the "
                                 f"{MAX_NODES} analysed; the diagnosis falls back to the plain flow rule")
        self.ancestors: dict[Any, int] = {}
        for node in order:  # parents come first in post-order
            bits = 1 << self.index[node]
            for p, _ in node.next_functions:
                if p is not None:
                    bits |= self.ancestors[p]
            self.ancestors[node] = bits

    def inputs(self, node: Any) -> list[Any]:
        return [p for p, _ in node.next_functions if p is not None]


def _exit(graph: _Graph, node: Any, owners: dict[Any, list[str]]) -> str | None:
    """The recorded module whose output error equals the error at ``node`` (through views), if any."""
    while node not in owners:
        ins = graph.inputs(node)
        if type(node).__name__ not in _PASS_THROUGH - {_ADD} or len(ins) != 1:
            return None
        node = ins[0]
    return owners[node][-1]


def _entry(graph: _Graph, node: Any, owners: dict[Any, list[str]], shapes: dict[str, tuple[int, ...]],
           shape: tuple[int, ...]) -> list[str]:
    """Recorded modules of ``shape`` whose output error equals the error at ``node``, through adds and views."""
    found: list[str] = []
    todo = [node]
    while todo:
        n = todo.pop()
        if n in owners:
            found += [m for m in owners[n] if shapes.get(m) == shape]
        elif type(n).__name__ in _PASS_THROUGH:
            todo.extend(graph.inputs(n))
    return sorted(set(found))


class Capture:
    """Forward hooks that note, for one pass, each leaf module's first call: order, grad_fn, shape and input."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.nodes: dict[str, Any] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.inputs: dict[str, torch.Tensor] = {}

    def hook(self, name: str) -> Callable[[nn.Module, Any, Any], None]:
        """The forward hook of leaf ``name``."""
        def record(module: nn.Module, args: Any, output: Any) -> None:
            out, x = first_tensor(output), first_tensor(args)
            if name in self.nodes or out is None:  # the first call of a reused module, as the probe records
                return
            self.calls.append(name)
            self.nodes[name], self.shapes[name] = out.grad_fn, tuple(out.shape)
            if x is not None:
                self.inputs[name] = x.detach()
        return record

    def clear(self) -> None:
        """Forget a pass that cannot be analysed (no grad), to capture the next one."""
        self.__init__()  # type: ignore[misc]


def _may_normalise(module: nn.Module, x: torch.Tensor) -> bool:
    """Cheap pre-test: a normalisation layer has at most an affine pair per feature, no weight matrix."""
    return sum(p.numel() for p in module.parameters()) <= 2 * max(x.shape[1:], default=1)


def analyse(model: nn.Module, capture: Capture, out: torch.Tensor | None) -> dict[str, Any]:
    """The structure of ``model`` from a captured pass whose output is ``out`` (see :func:`model_structure`).

    Raises:
        GradprobeError: if the output does not require grad, or the graph is too large to analyse.
    """
    if out is None or out.grad_fn is None:
        raise GradprobeError("example_input: the model's output does not require grad; pass a batch that "
                             "goes through trainable parameters")
    calls, nodes, shapes = capture.calls, capture.nodes, capture.shapes
    owners: dict[Any, list[str]] = {}
    for name in calls:
        if nodes[name] is not None:
            owners.setdefault(nodes[name], []).append(name)
    graph = _Graph(out.grad_fn)
    by_name = dict(_leaves(model))
    found: list[tuple[int, dict[str, Any], Any]] = []  # (call index of the branch's last module, join, skip input)
    for node in graph.index:
        ins = graph.inputs(node)
        if type(node).__name__ != _ADD or len(ins) != 2:
            continue
        a, b = (graph.ancestors[n] for n in ins)
        if not a & b:  # no shared ancestor: a plain sum (token + position embeddings), not a skip
            continue
        sides = [[m for m in calls if nodes[m] in graph.index and bits >> graph.index[nodes[m]] & 1]
                 for bits in (a & ~b, b & ~a)]
        main = 1 if len(sides[1]) >= len(sides[0]) else 0  # the path with more modules is the branch
        if not sides[main]:
            continue
        branch = [m for m in calls if m in sides[0] or m in sides[1]]
        found.append((calls.index(branch[-1]), {"exit": _exit(graph, ins[main], owners), "branch": branch},
                      ins[1 - main]))
    found.sort(key=lambda j: j[0])
    entry = []
    if found and found[0][1]["exit"] is not None:
        entry = _entry(graph, found[0][2], owners, shapes, shapes[found[0][1]["exit"]])
    out_module = _exit(graph, out.grad_fn, owners)
    norms = [n for n, x in capture.inputs.items()
             if n in by_name and _may_normalise(by_name[n], x) and _is_norm(by_name[n], x)]
    shared: dict[int, list[str]] = {}
    for pname, p in model.named_parameters(remove_duplicate=False):
        shared.setdefault(id(p), []).append(pname)
    tied = {names[0]: sorted({n.rpartition(".")[0] for n in names}) for names in shared.values() if len(names) > 1}
    bilinear = _bilinear(graph, owners)
    return {"modules": calls, "output": out_module, "norms": [n for n in calls if n in norms], "tied": tied,
            "joins": [j for _, j, _ in found], "entry": entry, "bilinear": [n for n in calls if n in bilinear]}


def model_structure(model: nn.Module, example_input: Any) -> dict[str, Any]:
    """Residual joins, normalisation layers and tied weights of ``model``, found from one forward pass.

    The pass runs on a hook-free deep copy, so ``model`` (its BatchNorm statistics, an attached probe,
    the global RNG) is left as it was. A :class:`gradprobe.Probe` reads the same from the model's
    first training pass instead, without a copy.

    Args:
        model: any ``nn.Module``.
        example_input: a batch the model accepts: a tensor, or a tuple of positional arguments.

    Returns:
        JSON-ready ``{"modules", "output", "norms", "tied", "joins", "entry", "bilinear"}``: leaf modules in call
        order; the module that produces the model's output; scale-invariant modules; tied parameters
        (name from ``named_parameters()`` -> modules using it); residual joins in forward order, each
        ``{"exit", "branch"}`` (the recorded module whose output error is the stream's error at the
        join, or None, and the modules on the summed paths); the modules whose output error is the
        stream's error before the first join; the modules feeding a product of two activations.

    Raises:
        GradprobeError: if the model's output does not depend on anything that requires grad.
    """
    twin = _unhooked_copy(model)
    capture = Capture()
    handles = [m.register_forward_hook(capture.hook(n)) for n, m in _leaves(twin)]
    rng = torch.random.get_rng_state()
    try:
        with torch.enable_grad():
            args = example_input if isinstance(example_input, tuple) else (example_input,)
            out = first_tensor(twin(*args))
    finally:
        torch.random.set_rng_state(rng)
        for h in handles:
            h.remove()
    return analyse(twin, capture, out)


__all__ = ["Capture", "analyse", "model_structure"]
