"""Arrow schemas of the part files (a module of its own so that listing runs needs no pyarrow)."""

from __future__ import annotations

from typing import Final

import pyarrow as pa

from gradprobe.store.layout import RUN_ID

# Arrow schemas of the part files. Stat values are float32 (about 7 significant digits;
# magnitudes beyond 3.4e38 become inf) and steps int32; metric values stay float64 (few, compared
# exactly). Every part carries its ``run_id`` (dictionary-encoded, nearly free) so SQL can join.
_TEXT = pa.string()
SCHEMAS: Final = {
    "stats": pa.schema(
        [
            ("step", pa.int32()),
            ("layer", _TEXT),
            ("tensor", _TEXT),
            ("kind", _TEXT),
            ("stat", _TEXT),
            ("value", pa.float32()),
            (RUN_ID, _TEXT),
        ]
    ),
    "metrics": pa.schema(
        [
            ("step", pa.int32()),
            ("epoch", pa.int32()),
            ("split", _TEXT),
            ("metric", _TEXT),
            ("value", pa.float64()),
            (RUN_ID, _TEXT),
        ]
    ),
    "hists": pa.schema(
        [
            ("step", pa.int32()),
            ("layer", _TEXT),
            ("tensor", _TEXT),
            ("kind", _TEXT),
            ("edges", pa.list_(pa.float32())),
            ("counts", pa.list_(pa.int64())),
            (RUN_ID, _TEXT),
        ]
    ),
    "alerts": pa.schema(
        [
            ("step", pa.int32()),
            ("layer", _TEXT),
            ("verdict", _TEXT),
            ("previous", _TEXT),
            ("message", _TEXT),
            ("value", pa.float64()),
            (RUN_ID, _TEXT),
        ]
    ),
    # Steps: -1 where there is none (never fired, alive at the end); null where the family has no such notion.
    "units": pa.schema(
        [
            ("layer", _TEXT),
            ("unit", pa.int32()),
            ("last_fired", pa.int32()),
            ("dead_since", pa.int32()),
            ("first_dead", pa.int32()),
            ("saturated_frac", pa.float32()),
            ("observed_steps", pa.int32()),
            ("last_observed", pa.int32()),
            (RUN_ID, _TEXT),
        ]
    ),
}

__all__ = ["SCHEMAS"]
