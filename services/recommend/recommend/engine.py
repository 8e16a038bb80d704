"""The serving side (PROCESS_ROLE api or all): one immutable :class:`View` (a trained model plus the catalog as
this process last saw it), replaced by a single reference assignment when a newer stored model is loaded or the
catalog changes. Requests read whichever view is current; they never wait for a load.

Models are trained by the recommend workers (recommend.trainer) and stored in the `models` table; each api process
polls for the newest and swaps it in.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import asyncpg
import numpy as np
import structlog

from recommend import repository
from recommend.model import (
    Bools,
    History,
    Ints,
    Mode,
    Model,
    Pick,
    ReasonKind,
    describe_interval,
    empty_model,
    popular,
    recommend,
    similar,
)
from recommend.store import loads
from recommend.tuning import settings_dict

if TYPE_CHECKING:
    from recommend.trainer import Trainer

__all__ = ["Engine", "Item", "Result", "View"]

log = structlog.get_logger("recommend.engine")


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    name: str
    category: str
    active: bool


@dataclass(frozen=True, slots=True)
class Item:
    product_id: str
    name: str
    category: str
    score: float
    reason: str


@dataclass(frozen=True, slots=True)
class Result:
    strategy: str
    model_version: int
    items: list[Item]


@dataclass(frozen=True)
class View:
    model: Model
    catalog: Mapping[str, CatalogEntry]
    seq: int
    names: tuple[str, ...]  # aligned with the model's products
    categories: tuple[str, ...]
    category_codes: Mapping[str, int]  # casefolded category -> code
    codes: Ints
    active: Bools
    unmodelled: tuple[str, ...]  # active catalog products the model does not know yet (last-resort fill)

    @classmethod
    def build(cls, model: Model, catalog: Mapping[str, CatalogEntry], seq: int) -> View:
        names: list[str] = []
        categories: list[str] = []
        active = np.zeros(model.products, dtype=np.bool_)
        for i, product_id in enumerate(model.product_ids):
            entry = catalog.get(product_id)
            if entry is None:
                names.append(product_id)
                categories.append("")
            else:
                names.append(entry.name)
                categories.append(entry.category)
                active[i] = entry.active
        category_codes: dict[str, int] = {}
        codes = np.fromiter(
            (category_codes.setdefault(c.casefold(), len(category_codes)) for c in categories),
            np.int64,
            count=len(categories),
        )
        unmodelled = tuple(p for p, e in catalog.items() if e.active and p not in model.index)
        return cls(model, catalog, seq, tuple(names), tuple(categories), category_codes, codes, active, unmodelled)

    def mask(self, category: str | None, excluded: Sequence[str]) -> Bools:
        allowed = self.active.copy()
        if category is not None:
            code = self.category_codes.get(category.casefold())
            if code is None:
                return np.zeros_like(allowed)
            allowed &= self.codes == code
        excluded_codes = [self.category_codes[c.casefold()] for c in excluded if c.casefold() in self.category_codes]
        if excluded_codes:
            allowed &= ~np.isin(self.codes, excluded_codes)
        return allowed


class Engine:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.view = View.build(empty_model(), {}, 0)
        self._catalog_lock = asyncio.Lock()
        self._load_lock = asyncio.Lock()
        self.requested = 0  # the newest training request seen (through this process or the poll)
        self.trainer: Trainer | None = None  # PROCESS_ROLE all: this process's own trainer, for `training`
        self.model_seconds: float | None = None  # how long the served model took to train

    # -- catalog -------------------------------------------------------------------------------------------
    async def ensure_catalog(self, seq: int) -> View:
        """The current view, refreshed first when the database's catalog is newer than this process's copy."""
        view = self.view
        if seq <= view.seq:
            return view
        async with self._catalog_lock:
            view = self.view
            if seq > view.seq:
                catalog, newest = _merged(view.catalog, view.seq, await repository.catalog_since(self.pool, view.seq))
                view = View.build(view.model, catalog, newest)
                self.view = view
            return view

    async def reload_catalog(self) -> None:
        """Read the whole catalog again: a change committed out of sequence order (two writers at once) is
        never missed for longer than one period of this job."""
        async with self._catalog_lock:
            catalog, newest = _merged({}, 0, await repository.catalog_since(self.pool, 0))
            self.view = View.build(self.view.model, catalog, max(newest, self.view.seq))

    async def load_latest(self) -> bool:
        """Swap in the newest stored model when it is newer than the one served (a worker trained it); requests
        go on with the current model meanwhile (the blob is decoded in a thread). Also notes the newest training
        request, for `training` in the model info."""
        async with self._load_lock:
            newest = await repository.newest_model(self.pool)
            self.requested = max(self.requested, newest.requested)
            if newest.version is None or newest.version <= self.view.model.version:
                return False
            blob = await repository.model_body(self.pool, newest.version)
            if blob is None:
                return False
            model = await asyncio.to_thread(loads, blob)
            await self.install(model, seconds=newest.seconds)
        log.info("recommend.model_loaded", version=model.version)
        return True

    async def install(self, model: Model, seconds: float | None = None) -> None:
        """Swap a trained model in, aligned with the freshest catalog."""
        if model.version < self.view.model.version:
            return
        self.model_seconds = seconds
        async with self._catalog_lock:
            seq = await repository.catalog_seq(self.pool)
            view = self.view
            changes = await repository.catalog_since(self.pool, view.seq) if seq > view.seq else []
            catalog, newest = _merged(view.catalog, view.seq, changes)
            self.view = View.build(model, catalog, newest)

    # -- serving -------------------------------------------------------------------------------------------
    async def recommendations(
        self, customer_id: str, *, limit: int, category: str | None, mode: Mode, now: float | None = None
    ) -> Result:
        read = await repository.read_for_serving(self.pool, customer_id)
        view = await self.ensure_catalog(read.catalog_seq)
        model = view.model
        allowed = view.mask(category, read.excluded)
        history = [History(p, n, last, first, weight) for p, n, last, first, weight in read.history]
        # a refunded product is never offered back to this customer
        refunded = [model.index[h.product_id] for h in history if h.weight <= 0 and h.product_id in model.index]
        if refunded:
            allowed[refunded] = False
        picks = recommend(
            model, history, allowed=allowed, now=time.time() if now is None else now, mode=mode, limit=limit
        )
        if mode is Mode.buy_again:
            # a buy-again shelf lists bought products only (those bought since the last training after the rest);
            # it is filled up only when it would be empty
            items = [self._item(view, p) for p in picks]
            items += self._bought_since_training(view, history, category, read.excluded, limit - len(items))
            if items:
                return Result("personal", model.version, items)
        strategy = "personal" if picks else ("preference" if read.categories else "popular")
        chosen = {p.index for p in picks}
        bought = [model.index[h.product_id] for h in history if h.product_id in model.index]
        # discover never repeats a bought product; mixed fills up with new products only
        skip = list(chosen | set(bought))
        if len(picks) < limit and read.categories:
            preferred = view.mask(None, read.excluded)
            codes = [view.category_codes[c.casefold()] for c in read.categories if c.casefold() in view.category_codes]
            preferred &= np.isin(view.codes, codes) & allowed
            more = popular(model, allowed=preferred, limit=limit - len(picks), exclude=skip)
            picks += more
            skip += [p.index for p in more]
        if len(picks) < limit:
            picks += popular(model, allowed=allowed, limit=limit - len(picks), exclude=skip)
        items = [self._item(view, p) for p in picks]
        if len(items) < limit:
            owned = {h.product_id for h in history}
            items += self._unmodelled(view, category, read.excluded, limit - len(items), skip=owned)
        return Result(strategy, model.version, items)

    def similar(self, product_id: str, *, limit: int) -> list[Item]:
        view = self.view
        model = view.model
        allowed = view.active.copy()
        picks = similar(model, product_id, allowed=allowed, limit=limit)
        i = model.index.get(product_id)
        if len(picks) < limit and i is not None:
            same = allowed & (view.codes == view.codes[i])
            picks += popular(model, allowed=same, limit=limit - len(picks), exclude=[i, *(p.index for p in picks)])
        return [self._item(view, p) for p in picks]

    def _item(self, view: View, pick: Pick) -> Item:
        i = pick.index
        return Item(
            view.model.product_ids[i], view.names[i], view.categories[i], round(pick.score, 6), _reason(view, pick)
        )

    def _bought_since_training(
        self, view: View, history: Sequence[History], category: str | None, excluded: Sequence[str], limit: int
    ) -> list[Item]:
        """Bought products the model has not seen yet, latest first (it knows nothing of their repeat rate)."""
        items: list[Item] = []
        for h in sorted(history, key=lambda h: -h.last_at):
            if len(items) >= limit:
                break
            entry = view.catalog.get(h.product_id)
            if h.product_id in view.model.index or entry is None or h.weight <= 0:
                continue
            if not _shown(entry, category, excluded):
                continue
            reason = f"you bought this {h.purchases} times" if h.purchases > 1 else "you bought this before"
            items.append(Item(h.product_id, entry.name, entry.category, 0.0, reason))
        return items

    def _unmodelled(
        self, view: View, category: str | None, excluded: Sequence[str], limit: int, skip: set[str]
    ) -> list[Item]:
        items: list[Item] = []
        for product_id in view.unmodelled:
            entry = view.catalog[product_id]
            if product_id in skip or not _shown(entry, category, excluded):
                continue
            items.append(Item(product_id, entry.name, entry.category, 0.0, f"new in {entry.category}"))
            if len(items) == limit:
                break
        return items

    def model_info(self) -> dict[str, object]:
        model = self.view.model
        return {
            "version": model.version,
            "trained_at": model.trained_at if model.version else None,
            "customers": model.customers,
            "products": model.products,
            "interactions": model.interactions,
            # a newer model is asked for and not served yet (a worker trains it), or this process trains
            "training": self.requested > model.version or (self.trainer is not None and self.trainer.training),
            "training_seconds": None if self.model_seconds is None else round(self.model_seconds, 3),
            "settings": settings_dict(model.params),
            "validation": model.report or None,
        }


def _merged(
    catalog: Mapping[str, CatalogEntry], seq: int, changes: Sequence[repository.CatalogChange]
) -> tuple[dict[str, CatalogEntry], int]:
    """A copy of `catalog` (as of catalog sequence `seq`) with the changes applied, and its new sequence."""
    merged = dict(catalog)
    for change in changes:
        merged[change.product_id] = CatalogEntry(change.name, change.category, change.active)
        seq = max(seq, change.seq)
    return merged, seq


def _shown(entry: CatalogEntry, category: str | None, excluded: Sequence[str]) -> bool:
    folded = entry.category.casefold()
    if not entry.active or (category is not None and folded != category.casefold()):
        return False
    return all(folded != c.casefold() for c in excluded)


def _reason(view: View, pick: Pick) -> str:
    if pick.reason is ReasonKind.bought_together and pick.because >= 0:
        return f"bought together with {view.names[pick.because]}"
    if pick.reason is ReasonKind.buy_again:
        every = describe_interval(pick.interval_days)
        if pick.purchases >= 3 and every:
            return f"you buy this {every}"
        if pick.purchases >= 2:
            return f"you bought this {pick.purchases} times"
        return "you bought this before"
    category = view.categories[pick.index]
    return f"popular in {category}" if category else "popular right now"
