"""A trained model as bytes, for the `models` table: numpy arrays in an `.npz` archive and the rest as JSON.

No pickle: whoever can write the table cannot make a replica run code by loading it."""

from __future__ import annotations

import io
import json
from dataclasses import asdict
from datetime import datetime
from typing import Any

import numpy as np
from scipy import sparse

from recommend.model import Model, Params

__all__ = ["dumps", "loads"]


def dumps(model: Model) -> bytes:
    meta = {
        "version": model.version,
        "trained_at": model.trained_at.isoformat(),
        "customers": model.customers,
        "interactions": model.interactions,
        "reference_time": model.reference_time,
        "params": asdict(model.params),
        "report": model.report,
    }
    neighbours = model.neighbours.tocsr()
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        meta=np.frombuffer(json.dumps(meta, default=float).encode(), dtype=np.uint8),
        product_ids=np.array(model.product_ids, dtype=np.str_),
        data=neighbours.data,
        indices=neighbours.indices,
        indptr=neighbours.indptr,
        popularity=model.popularity,
        repeat_rate=model.repeat_rate,
    )
    return buffer.getvalue()


def loads(blob: bytes) -> Model:
    with np.load(io.BytesIO(blob), allow_pickle=False) as archive:
        meta: dict[str, Any] = json.loads(archive["meta"].tobytes())
        product_ids = tuple(str(p) for p in archive["product_ids"])
        n = len(product_ids)
        neighbours = sparse.csr_matrix((archive["data"], archive["indices"], archive["indptr"]), shape=(n, n))
        popularity, repeat_rate = archive["popularity"], archive["repeat_rate"]
    return Model(
        version=int(meta["version"]),
        trained_at=datetime.fromisoformat(meta["trained_at"]),
        customers=int(meta["customers"]),
        interactions=int(meta["interactions"]),
        product_ids=product_ids,
        index={p: i for i, p in enumerate(product_ids)},
        neighbours=neighbours,
        popularity=popularity,
        repeat_rate=repeat_rate,
        reference_time=float(meta["reference_time"]),
        params=Params(**meta["params"]),
        report=meta["report"],
    )
