"""Trainer integrations: one line gives Lightning, the HF Trainer or Keras a probe, a stored run and a diagnosis.

Each integration is its own module with an optional dependency (``gradprobe[lightning]``, ``[hf]``,
``[keras]``); they share :class:`gradprobe.integrations.session.ProbeSession`.
"""

__all__: list[str] = []
