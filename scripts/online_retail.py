"""Reading the UCI Online Retail data (data/online-retail/) the same way everywhere: the recommender's
evaluation, the benchmarks, the tests and the demo.

The files are read as gzipped CSV streams, one row at a time. Clean rows are purchases only:

- cancellations (InvoiceNo starting with ``C``) are dropped, and so are rows with a non-positive quantity or price;
- rows without a CustomerID are dropped; the id is kept as an identifier string (``17850.0`` -> ``"17850"``);
- stock codes that are not products (postage, manual entries, discounts, fees, gift vouchers, codes without a
  digit) are dropped; see :data:`NON_PRODUCT_CODES` and :func:`is_product_code`.

There is no category column; :func:`category_for` derives one from the description with the keyword table
:data:`CATEGORY_KEYWORDS` (first match wins, so more specific rows come first; no match is ``"Other"``).

Source: Daqing Chen, Sai Liang Sain and Kun Guo, "Data mining for the online retail industry", Journal of
Database Marketing and Customer Strategy Management 19(3), 2012; UCI Machine Learning Repository dataset 352.
Licence CC BY 4.0.
"""

from __future__ import annotations

import csv
import gzip
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path

__all__ = [
    "CATEGORY_KEYWORDS",
    "FULL",
    "NON_PRODUCT_CODES",
    "SAMPLE",
    "Invoice",
    "Row",
    "category_for",
    "invoices",
    "is_product_code",
    "rows",
]

DATA_DIR = Path(__file__).resolve().parents[1] / "data" / "online-retail"
FULL = DATA_DIR / "online_retail_2010-12_2011-12.csv.gz"
SAMPLE = DATA_DIR / "online_retail_2010-12_sample.csv.gz"

NON_PRODUCT_CODES = frozenset(
    {"POST", "DOT", "M", "m", "D", "C2", "S", "B", "BANK CHARGES", "AMAZONFEE", "PADS", "CRUK", "DCGSSBOY", "DCGSSGIRL"}
)

# (category, keywords): a description belongs to the first category with a keyword among its words (or, for
# keywords with a space, its text). Ordered from specific to general: "CHRISTMAS TREE T-LIGHT HOLDER" is Christmas.
CATEGORY_KEYWORDS: tuple[tuple[str, tuple[str, ...]], ...] = tuple(
    (category, tuple(k.strip() for k in keywords.split(",")))
    for category, keywords in (
        ("Christmas", "CHRISTMAS, XMAS, ADVENT, SANTA, REINDEER, SNOWFLAKE, SNOWMAN, NATIVITY"),
        ("Easter", "EASTER, BUNNY, EGG, EGGS, CHICK"),
        ("Party", "PARTY, BIRTHDAY, BALLOON, BALLOONS, BUNTING, CONFETTI, GARLAND, PAPER CHAIN"),
        ("Cards & wrap", "CARD, CARDS, WRAP, WRAPPING, GIFT TAG, TAGS, ENVELOPE, RIBBON, RIBBONS"),
        (
            "Candles & lights",
            "CANDLE, CANDLES, T-LIGHT, TLIGHT, LANTERN, LIGHTS, LIGHT, LAMP, NIGHT LIGHT, INCENSE, OIL BURNER, "
            "CANDLEHOLDER",
        ),
        ("Baking", "CAKE, CAKES, CAKESTAND, CUPCAKE, BAKING, BAKE, CASES, COOKIE, MOULD, ICING, PASTRY, TART"),
        (
            "Tableware",
            "MUG, MUGS, CUP, CUPS, SAUCER, PLATE, PLATES, BOWL, BOWLS, TEAPOT, CUTLERY, NAPKINS, NAPKIN, GLASS, "
            "TUMBLER, JUG, BEAKER, EGG CUP, PLACEMAT, PLACEMATS, COASTER, COASTERS, TRAY, STRAW, STRAWS",
        ),
        (
            "Kitchen",
            "KITCHEN, APRON, OVEN, TEA TOWEL, TEA TOWELS, JAR, JARS, TIN, TINS, LUNCH, BOTTLE, SPOON, SPOONS, "
            "CHOPPING, SCALES, TOAST, SUGAR, COFFEE, TEA, KETTLE, COLANDER, BREAD, FOOD, PANTRY, RECIPE, DOILY, "
            "DOILIES",
        ),
        ("Bags", "BAG, BAGS, SHOPPER, TOTE, PURSE, HANDBAG, RUCKSACK, BACKPACK, CHARLOTTE"),
        (
            "Stationery",
            "PEN, PENS, PENCIL, PENCILS, NOTEBOOK, NOTEBOOKS, NOTE, NOTES, ERASER, RULER, STICKER, STICKERS, "
            "STATIONERY, DIARY, CALENDAR, JOURNAL, BOOK, BOOKS, MEMO, CHALK, PAPER, SKETCHBOOK",
        ),
        (
            "Toys & games",
            "TOY, TOYS, GAME, GAMES, DOLL, DOLLY, PUZZLE, JIGSAW, SPACEBOY, DOMINOES, SKITTLES, PLAYING, BLOCKS, "
            "CRAYONS, KIT, TEDDY, SOLDIER, SOLDIERS, TRAIN, SKIPPING, MARBLES, SPINNING, SNAKES",
        ),
        (
            "Jewellery & accessories",
            "NECKLACE, BRACELET, EARRINGS, RING, RINGS, JEWEL, JEWELLERY, BROOCH, HAIR, HAIRCLIP, HAIRBAND, "
            "CHARM, BEAD, BEADS, DIAMANTE, UMBRELLA, SCARF, GLOVES, HAT, MIRROR, COMPACT, WALLET",
        ),
        (
            "Textiles",
            "CUSHION, CUSHIONS, THROW, BLANKET, QUILT, TOWEL, TOWELS, HOT WATER BOTTLE, FELT, FELTCRAFT, KNITTED, "
            "FABRIC, SLIPPER, SLIPPERS, CURTAIN",
        ),
        (
            "Garden",
            "GARDEN, GARDENERS, PLANT, PLANTER, FLOWER, FLOWERS, POT, POTS, WATERING, BIRD, BIRDHOUSE, FEEDER, "
            "SEEDS, TRELLIS, HERB, PICNIC, PEG, PEGS",
        ),
        (
            "Storage",
            "BOX, BOXES, BASKET, BASKETS, STORAGE, CRATE, DRAWER, CABINET, CHEST, TRUNK, HOLDER, RACK, CADDY, CASE",
        ),
        (
            "Wall decor",
            "SIGN, SIGNS, PLAQUE, FRAME, FRAMES, PICTURE, CLOCK, CLOCKS, WALL, POSTER, ART, BLACKBOARD, DOORMAT, "
            "MAT, HOOK, HOOKS, COAT HANGER, HANGER, HANGERS, DOORSTOP, KEY",
        ),
        (
            "Home decor",
            "HEART, HEARTS, DECORATION, DECORATIONS, ORNAMENT, HANGING, WREATH, VASE, FEATHER, BUTTERFLY, "
            "CHANDELIER, DOVE, STAR, SPHERE, BELL, BELLS, DOORSTOP, BUNNY, SCULPTURE, FIGURE",
        ),
        (
            "Bath & beauty",
            "SOAP, BATH, BATHROOM, TOILET, SPONGE, WASHBAG, LIP, NAIL, COSMETIC, MAKE UP, TISSUES, PLASTERS",
        ),
    )
)
OTHER = "Other"

_WORD = re.compile(r"[A-Z0-9][A-Z0-9'-]*")
_SINGLE: dict[str, str] = {}
_PHRASES: list[tuple[str, str, int]] = []
for _rank, (_category, _keywords) in enumerate(CATEGORY_KEYWORDS):
    for _keyword in _keywords:
        if " " in _keyword:
            _PHRASES.append((_keyword, _category, _rank))
        else:
            _SINGLE.setdefault(_keyword, _category)
_RANK = {category: rank for rank, (category, _) in enumerate(CATEGORY_KEYWORDS)}


@lru_cache(maxsize=16_384)
def category_for(description: str) -> str:
    """The first category of :data:`CATEGORY_KEYWORDS` (in table order) that the description mentions."""
    text = description.upper()
    found: list[tuple[int, str]] = []
    for word in _WORD.findall(text):
        category = _SINGLE.get(word)
        if category is not None:
            found.append((_RANK[category], category))
    for phrase, category, rank in _PHRASES:
        if phrase in text:
            found.append((rank, category))
    return min(found)[1] if found else OTHER


def is_product_code(code: str) -> bool:
    return code not in NON_PRODUCT_CODES and not code.lower().startswith("gift_") and any(c.isdigit() for c in code)


@dataclass(frozen=True, slots=True)
class Row:
    invoice: str
    product_id: str
    description: str
    quantity: int
    occurred_at: datetime
    unit_price: Decimal
    customer_id: str
    country: str

    @property
    def category(self) -> str:
        return category_for(self.description)


@dataclass(frozen=True, slots=True)
class Invoice:
    invoice: str
    customer_id: str
    occurred_at: datetime
    country: str
    rows: tuple[Row, ...]


def rows(path: Path = FULL) -> Iterator[Row]:
    """Clean purchase rows, in file order (which is invoice order), streamed from the gzipped CSV."""
    with gzip.open(path, "rt", encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        next(reader)  # header
        for invoice, code, description, quantity, date, price, customer, country in reader:
            if not customer or invoice.startswith("C") or not is_product_code(code):
                continue
            try:
                amount = int(quantity)
                unit_price = Decimal(price)
            except (ValueError, InvalidOperation):
                continue
            if amount <= 0 or unit_price <= 0:
                continue
            yield Row(
                invoice=invoice,
                product_id=code,
                description=description.strip(),
                quantity=amount,
                occurred_at=datetime.strptime(date, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC),
                unit_price=unit_price,
                customer_id=customer.removesuffix(".0"),
                country=country,
            )


def invoices(path: Path = FULL) -> Iterator[Invoice]:
    """Clean rows grouped by invoice (consecutive in the file): one purchase each."""
    current: list[Row] = []
    for row in rows(path):
        if current and row.invoice != current[0].invoice:
            yield _invoice(current)
            current = []
        current.append(row)
    if current:
        yield _invoice(current)


def _invoice(group: list[Row]) -> Invoice:
    first = group[0]
    return Invoice(first.invoice, first.customer_id, first.occurred_at, first.country, tuple(group))


if __name__ == "__main__":
    import collections

    counts: collections.Counter[str] = collections.Counter()
    names: dict[str, str] = {}
    for row in rows(SAMPLE):
        names[row.product_id] = row.description
    for description in names.values():
        counts[category_for(description)] += 1
    for category, count in counts.most_common():
        print(f"{category:28} {count}")
