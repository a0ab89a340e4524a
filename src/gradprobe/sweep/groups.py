"""Which configurations of a sweep or experiment train together as one ensemble, and in which groups."""

from __future__ import annotations

from gradprobe.train.config import RunConfig
from gradprobe.train.ensemble import ensemble_key, loop_reason


def can_ensemble(cfgs: list[RunConfig]) -> bool:
    """Whether ``cfgs`` can be trained as one group by ``train.ensemble.train_group``.

    They must share everything but experiment, arm, seed, activation (elementwise ones; not
    maxout or linear), init, output_init and bias_init, and not ask for checkpoints.
    """
    if not cfgs or any(loop_reason(c) is not None for c in cfgs):
        return False
    first = ensemble_key(cfgs[0])
    return all(ensemble_key(c) == first for c in cfgs[1:])


def group_configs(cfgs: list[RunConfig]) -> list[list[RunConfig]]:
    """Split ``cfgs`` into groups that :func:`can_ensemble`, in order of first appearance.

    A configuration that cannot join any group (see :func:`can_ensemble`) is a group of its own,
    for which ``can_ensemble([cfg])`` is False.
    """
    groups: dict[str, list[RunConfig]] = {}
    for i, cfg in enumerate(cfgs):
        key = f"alone-{i}" if loop_reason(cfg) is not None else ensemble_key(cfg)
        groups.setdefault(key, []).append(cfg)
    return list(groups.values())


__all__ = ["can_ensemble", "group_configs"]
