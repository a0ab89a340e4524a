"""Keras 3 on the torch backend: ``model.fit(..., callbacks=[GradprobeKerasCallback()])`` gives a probe and a run.

A Keras model on the torch backend is a ``torch.nn.Module``, but not one a probe can name or hook:
its parameters sit in one ``ParameterDict`` keyed by variable paths and its layers are called by
Keras, not through ``nn.Module.__call__``, so torch forward hooks never fire. The callback therefore
probes a *view*: one small module per Keras layer, named by ``layer.name``, holding that layer's own
variables (the very torch parameters Keras trains) under their Keras names. Records read
``dense_1.kernel``, ``dense_1.bias``; activations and deltas are the outputs of each Keras layer
(after its activation function), seen through an identity "tap" that the layer's ``call`` passes
its output through during ``fit``.

Keras's optimizer is not a torch optimizer. ``TorchTrainer.train_step`` runs ``loss.backward()`` and
then ``optimizer.apply(grads, variables)``, which unscales, clips (``clipnorm``, ``clipvalue``,
``global_clipnorm``), decays and updates in place. The callback shadows ``apply`` on the optimizer
instance during ``fit``: gradients are read on entry (final for the batch, before Keras's clipping),
the update ratio around the call is the step's true one.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from torch import nn

from gradprobe import records as R
from gradprobe.alerts import AlertCallback
from gradprobe.errors import GradprobeError
from gradprobe.integrations.session import CALLBACK_BUDGET, ProbeSession, missing
from gradprobe.probe import Probe
from gradprobe.schedules import Schedule

try:
    import keras
except ImportError:
    raise missing("keras", "keras") from None

# Keras activation name -> the torch class whose activation family (dead regions, bounds) applies.
_FAMILY_OF = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu6": nn.ReLU6, "elu": nn.ELU,
              "softplus": nn.Softplus, "silu": nn.SiLU, "hard_sigmoid": nn.Hardsigmoid}


class _Tap(nn.Module):
    """Identity on a Keras layer's output, so the probe's forward and tensor hooks see it."""

    def forward(self, x: Any) -> Any:
        """Return ``x`` unchanged."""
        return x


@functools.cache
def _tap_class(activation: str | None) -> type[_Tap]:
    """A tap class that is also the activation's torch class, so the probe applies that family's tests."""
    base = _FAMILY_OF.get(activation or "")
    return _Tap if base is None else type(f"_{base.__name__}Tap", (_Tap, base), {})


def _activation(layer: Any) -> str | None:
    """The name of ``layer``'s activation function (``Dense(5, "relu")``, ``Activation("relu")``), if any."""
    fn = getattr(layer, "activation", None)
    return getattr(fn, "__name__", None) if callable(fn) else None


def keras_view(model: Any) -> tuple[nn.Module, list[tuple[Any, nn.Module]]]:
    """The probe's view of a built Keras model: one module per layer, named ``layer.name``, and the layer taps.

    Each Keras layer's own variables are registered under their names (``kernel``, ``bias``,
    ``gamma``, ...) as the same torch parameters Keras trains; layers that hold other layers
    (nested models) add only their own variables and get no tap, since their output is a sublayer's.

    Returns:
        ``(view, [(layer, tap), ...])``: ``view.named_parameters()`` gives ``dense_1.kernel``; each
        tap is the view's module for that layer, to be called on the layer's output.
    """
    view = _Tap()  # called on the model's output too: the probe reads the model's wiring from that pass
    taps = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.InputLayer):
            continue
        inner = layer._flatten_layers(include_self=False, recursive=True)
        theirs = {id(v) for sub in inner for v in sub.weights}
        if inner and all(id(v) in theirs for v in layer.weights):
            continue  # a container (nested model) with no variables of its own
        module = _tap_class(_activation(layer))() if not inner else nn.Module()
        for variable in layer.weights:
            if id(variable) not in theirs:
                module.register_parameter(variable.name, variable.value)
        view.add_module(layer.name.replace(".", "_"), module)
        if not inner:
            taps.append((layer, module))
    return view, taps


class GradprobeKerasCallback(keras.callbacks.Callback):
    """Probes every ``fit`` of a Keras 3 model on the torch backend; one stored run per ``fit``.

    Args:
        every: fixed record cadence in optimizer steps; None records under ``budget``.
        budget: the probe's largest share of wall time when ``every`` is None.
        store: run store directory (default ``$GRADPROBE_STORE`` or ``./gradprobe-runs``); False: in memory.
        run_id: the stored run's id (default: a fresh one).
        report: also write ``report.html`` for the run when training ends.
        on_alert: called with each live alert (:mod:`gradprobe.alerts`), after it is stored; None: a
            ``GradprobeAlert`` warning. An exception it raises (``gradprobe.StopTraining``) ends the fit.
        probe_kwargs: further :class:`gradprobe.Probe` arguments (``hist_every``, ``params``, ``modules``),
            with Keras names (``params="dense_1.*"``).

    After ``fit``, ``session`` holds the probe (``session.probe.frame()``) and ``diagnosis`` the verdicts.

    Raises:
        GradprobeError: if Keras does not run on torch, or (at ``fit``) for settings whose gradients the
            probe would misread: ``jit_compile=True``, ``gradient_accumulation_steps``, a loss scale.
    """

    def __init__(self, *, every: int | Schedule | None = None, budget: float = CALLBACK_BUDGET,
                 store: str | Path | bool | None = None, run_id: str | None = None, report: bool = False,
                 on_alert: AlertCallback | None = None, **probe_kwargs: Any) -> None:
        super().__init__()
        if keras.backend.backend() != "torch":
            raise GradprobeError(f"keras backend: {keras.backend.backend()!r}; gradprobe needs 'torch': set "
                                 "KERAS_BACKEND=torch before keras is imported")
        self._options: dict[str, Any] = dict(every=every, budget=budget, store=store, run_id=run_id, report=report,
                                             on_alert=on_alert, **probe_kwargs)
        self.session: ProbeSession | None = None
        self.diagnosis: Any = None
        self._shadowed: list[tuple[Any, str]] = []
        self._metrics: list[tuple[int, int, str, str, float]] = []  # (step, epoch, split, metric, value)

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        """Check the setup, build the view, start the session and shadow ``optimizer.apply`` and layer calls."""
        model, optimizer = self.model, self.model.optimizer
        self._restore()  # a fit that raised never reached on_train_end
        self._metrics.clear()
        _check(model, optimizer)
        view, taps = keras_view(model)
        self.session = session = ProbeSession(view, experiment="keras", config=_config(model, self.params),
                                              **self._options)
        self._shadow(optimizer, "apply", functools.partial(_around, session=session))
        for layer, tap in taps:
            self._shadow(layer, "call", functools.partial(_then, tap=tap, probe=session.probe))
        # the root pass: the probe reads the model's wiring from it
        self._shadow(model, "call", functools.partial(_then, tap=view, probe=session.probe))

    def _shadow(self, owner: Any, name: str, wrap: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
        """Set ``owner.name`` to a wrapper of the bound method on the instance (undone in ``_restore``)."""
        object.__setattr__(owner, name, wrap(getattr(owner, name)))
        self._shadowed.append((owner, name))

    def _restore(self) -> None:
        while self._shadowed:
            owner, name = self._shadowed.pop()
            vars(owner).pop(name, None)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Keep Keras's epoch logs (``loss``, ``acc``, ``val_*``) at the current step; stored at the end of fit."""
        if self.session is not None and logs:
            step = self.session.probe.step_count
            for key, value in logs.items():
                if _is_number(value):  # val_loss -> ("test", "loss"): the held-out split, named as in the store
                    split, name = (R.TEST, key[4:]) if key.startswith("val_") else (R.TRAIN, key)
                    self._metrics.append((step, epoch, split, name, float(value)))

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        """Undo the shadows, store the metrics and the run's summary, and keep (and log) the diagnosis."""
        self._restore()
        if self.session is not None:
            if self._metrics:  # one write: a frame per epoch costs milliseconds each in the store
                self.session.add_metrics_frame(pd.DataFrame(self._metrics, columns=list(R.METRIC_COLUMNS)))
                self._metrics.clear()
            self.diagnosis = self.session.finish()


def _check(model: Any, optimizer: Any) -> None:
    """Refuse settings under which the gradients read at ``apply`` are not the step's (one line each)."""
    if model.jit_compile:
        raise GradprobeError("jit_compile: True compiles the train step, hiding its gradients from gradprobe; "
                             "compile(..., jit_compile=False)")
    if getattr(optimizer, "gradient_accumulation_steps", None):
        raise GradprobeError(f"gradient_accumulation_steps: {optimizer.gradient_accumulation_steps} is not "
                             "supported (the step's gradients live in Keras's accumulators); use None")
    if getattr(optimizer, "loss_scale_factor", None) is not None or hasattr(optimizer, "inner_optimizer"):
        raise GradprobeError("loss scaling: the optimizer scales the loss, so .grad is scaled; train without "
                             "loss_scale_factor or a LossScaleOptimizer (mixed_float16 policy)")


def _around(apply: Callable[..., Any], session: ProbeSession) -> Callable[..., Any]:
    """``apply`` between ``before_update()`` (gradients final) and ``after_update()`` (update applied)."""
    def shadow(*args: Any, **kwargs: Any) -> Any:
        session.before_update()
        out = apply(*args, **kwargs)
        session.after_update()
        return out
    return shadow


def _then(call: Callable[..., Any], tap: nn.Module, probe: Probe) -> Callable[..., Any]:
    """``call`` whose output goes through ``tap`` (an identity whose torch hooks the probe uses) on recorded steps."""
    def shadow(*args: Any, **kwargs: Any) -> Any:
        out = call(*args, **kwargs)
        return tap(out) if probe.due else out
    return shadow


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _config(model: Any, params: dict[str, Any]) -> dict[str, Any]:
    """What the run stores as its config: fit settings, optimizer config, loss and layers."""
    layers = [{"name": layer.name, "class": type(layer).__name__, "activation": _activation(layer)}
              for layer in model._flatten_layers(include_self=False, recursive=True)]
    with warnings.catch_warnings():  # Keras 3.15 reads its variables with np.array(copy=False): numpy 2 warns
        warnings.simplefilter("ignore", DeprecationWarning)
        optimizer = {"class": type(model.optimizer).__name__, **model.optimizer.get_config()}
    return {"fit": dict(params or {}), "optimizer": optimizer, "loss": model.loss, "model": model.name,
            "layers": layers}


__all__ = ["GradprobeKerasCallback", "keras_view"]
