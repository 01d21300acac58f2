"""Writers of small raw files in the official KuaiSAR and Amazon-2018 formats, for reader tests.

Each writer also returns what a correct reader must produce, computed here from the generated
rows (not by the reader), so tests compare against an independent expectation.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

# ----------------------------------------------------------------------------------- KuaiSAR

REC_HEADER = [
    "user_id",
    "item_id",
    "playing_time",
    "duration_ms",
    "time",
    "timestamp",
    "click",
    "forward",
    "like",
    "follow",
    "search",
    "search_item_related",
]
SRC_HEADER = [
    "user_id",
    "search_session_id",
    "search_session_time",
    "search_session_timestamp",
    "keyword",
    "search_source",
    "item_id",
    "click_cnt",
    "item_type",
]
ITEM_HEADER = [
    "item_id",
    "caption",
    "author_id",
    "item_type",
    "upload_time",
    "upload_type",
    "music_id",
    "first_level_category_id",
    "first_level_category_name",
    "second_level_category_id",
    "second_level_category_name",
    "third_level_category_id",
    "third_level_category_name",
    "fourth_level_category_id",
    "fourth_level_category_name",
    "first_level_category_name_en",
    "second_level_category_name_en",
    "third_level_category_name_en",
    "fourth_level_category_name_en",
]
USER_HEADER = ["user_id", "search_active_level", "rec_active_level", "onehot_feat1", "onehot_feat2"]

_CATE_NAMES = [("搞笑", "Funny"), ("美食", "Food"), ("游戏", "Game"), ("音乐", "Music"), ("体育", "Sports")]
_T0_MS = 1_684_742_000_000  # 2023-05-22, inside the KuaiSAR collection window
_BEIJING = dt.timezone(dt.timedelta(hours=8))


@dataclass
class KuaiSARFixture:
    root: Path
    search: list[tuple[int, int, int, str]] = field(default_factory=list)  # kept (user, item, ts, query)
    rec: list[tuple[int, int, int]] = field(default_factory=list)  # kept (user, item, ts)
    n_src_rows: int = 0
    n_rec_rows: int = 0
    n_src_unclicked: int = 0
    n_rec_unclicked: int = 0
    n_src_empty_keyword: int = 0
    # item id -> (title or None, author list, [l1, l2, l3, l4] lists)
    items: dict[int, tuple[str | None, list[str], list[list[str]]]] = field(default_factory=dict)
    missing_items: list[int] = field(default_factory=list)  # shown in search, absent from item file
    # user id -> {column: value as written} for every row of user_features.csv
    user_features: dict[int, dict[str, str]] = field(default_factory=dict)


def _human(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=_BEIJING).strftime("%Y-%m-%d %H:%M:%S")


def _write_csv(path: Path, header: list[str], rows: list[list[object]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


def write_kuaisar(root: Path, *, n_users: int = 12, n_items: int = 40, seed: int = 0) -> KuaiSARFixture:
    """Write the four KuaiSAR CSVs under ``root`` with the release's header and value formats."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    fx = KuaiSARFixture(root=root)
    users = sorted(rng.sample(range(1, 30_000), n_users))
    items = sorted(rng.sample(range(1, 500_000), n_items))

    item_rows: list[list[object]] = []
    for idx, item in enumerate(items):
        n_tok = rng.randint(0, 5)
        tokens = [rng.randint(1, 3_000_000) for _ in range(n_tok)]
        caption = "[" + ", ".join(map(str, tokens)) + "]"
        author = 0 if idx % 7 == 0 else rng.randint(1, 90_000)
        cats = [rng.randint(1, 40), rng.randint(41, 400) if idx % 3 else 0, 0 if idx % 4 else 777, 0]
        row: list[object] = [item, caption, author, "NORMAL", "2023-04-22", "LongImport", rng.randint(0, 9)]
        names_en = []
        for level, cat in enumerate(cats):
            zh, en = _CATE_NAMES[(cat + level) % len(_CATE_NAMES)] if cat else ("空", "empty")
            row += [cat, zh]
            names_en.append(en)
        row += names_en
        item_rows.append(row)
        fx.items[item] = (
            " ".join(map(str, tokens)) or None,
            [str(author)] if author else [],
            [[str(c)] if c else [] for c in cats],
        )
    _write_csv(root / "item_features.csv", ITEM_HEADER, item_rows)

    # Items only search shows (live streams, user cards): absent from item_features.csv.
    fx.missing_items = [900_000_001, 900_000_002]
    shown = items + fx.missing_items

    rec_rows: list[list[object]] = []
    src_rows: list[list[object]] = []
    session = 0
    for u_idx, user in enumerate(users):
        t = _T0_MS + u_idx * 3_600_000
        for _ in range(rng.randint(5, 12)):
            t += rng.randint(1_000, 600_000)
            item = rng.choice(items)
            click = rng.random() < 0.5
            duration = float(rng.randint(5_000, 90_000))
            rec_rows.append(
                [
                    user,
                    item,
                    float(rng.randint(0, 120_000)),
                    duration,
                    _human(t),
                    f"{float(t)}",
                    int(click),
                    0,
                    int(rng.random() < 0.1),
                    0,
                    0,
                    0,
                ]
            )
            if click:
                fx.rec.append((user, item, t))
            else:
                fx.n_rec_unclicked += 1
        for s_idx in range(rng.randint(1, 3)):
            session += 1
            t += rng.randint(1_000, 600_000)
            empty = u_idx == 0 and s_idx == 0  # one session whose keyword list is empty
            tokens = [] if empty else [rng.randint(1, 3_000_000) for _ in range(rng.randint(1, 4))]
            keyword = "[" + ", ".join(map(str, tokens)) + "]"
            source = rng.choice(["USER_INPUT", "QUERY_SUGGESTION", "HISTORY"])
            n_shown = rng.randint(2, 5)
            for pos in range(n_shown):
                item = rng.choice(shown)
                click = pos == 0 or rng.random() < 0.3  # at least one click per session
                src_rows.append(
                    [
                        user,
                        session,
                        _human(t),
                        t,
                        keyword,
                        source,
                        item,
                        int(click),
                        "LIVE" if item in fx.missing_items else "VIDEO",
                    ]
                )
                if not click:
                    fx.n_src_unclicked += 1
                elif empty:
                    fx.n_src_empty_keyword += 1
                else:
                    fx.search.append((user, item, t, " ".join(map(str, tokens))))
    fx.n_rec_rows, fx.n_src_rows = len(rec_rows), len(src_rows)
    _write_csv(root / "rec_inter.csv", REC_HEADER, rec_rows)
    _write_csv(root / "src_inter.csv", SRC_HEADER, src_rows)

    user_rows = [
        [u, rng.randint(1, 4), rng.randint(1, 4), rng.randint(0, 2), rng.randint(0, 7)] for u in users
    ]
    user_rows.append([29_999_999, 1, 1, 0, 0])  # a user without behaviours
    _write_csv(root / "user_features.csv", USER_HEADER, user_rows)
    for row in user_rows:
        fx.user_features[int(row[0])] = dict(zip(USER_HEADER[1:], map(str, row[1:]), strict=True))
    return fx


def edit_csv(path: Path, line: int, column: str, value: str) -> None:
    """Set ``column`` of the record on 1-based file ``line`` (header = line 1) to ``value``."""
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    rows[line - 1][rows[0].index(column)] = value
    with path.open("w", encoding="utf-8", newline="") as fh:
        csv.writer(fh).writerows(rows)


def drop_csv_column(path: Path, column: str) -> None:
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    j = rows[0].index(column)
    with path.open("w", encoding="utf-8", newline="") as fh:
        csv.writer(fh).writerows([r[:j] + r[j + 1 :] for r in rows])


def first_line_where(path: Path, column: str, predicate) -> int:
    """1-based line of the first record whose ``column`` satisfies ``predicate``."""
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        for i, row in enumerate(reader, start=2):
            if predicate(row[column]):
                return i
    raise LookupError(column)


# ------------------------------------------------------------------------------------ Amazon

_GENRES = [
    ["Movies & TV", "Genre for Featured Categories", "Comedy"],
    ["Movies & TV", "Genre for Featured Categories", "Science Fiction & Fantasy"],
    ["Movies & TV", "Movies"],
    ["Movies & TV", "TV", "Drama"],
    ["Movies & TV", "Studio Specials", "Warner Home Video", "All Titles"],
]
_BRANDS = ["Warner Home Video", "20th Century Fox", "Criterion Collection", "BBC", ""]
_WORD_TEXT = (
    "the lost island night of the living detective season complete collection star return "
    "galaxy murder mystery summer love story war classic edition remastered blu ray"
)
_WORDS = _WORD_TEXT.split()


@dataclass
class AmazonFixture:
    reviews: Path
    meta: Path
    rows: list[tuple[str, str, int]] = field(default_factory=list)  # every review (user, asin, time)
    meta_by_asin: dict[str, dict] = field(default_factory=dict)  # first meta record per asin
    no_meta: list[str] = field(default_factory=list)
    no_text: list[str] = field(default_factory=list)  # items with no title/category/description/brand


def _review_time(t: int) -> str:
    """The release's ``reviewTime`` form: zero-padded month, unpadded day (``"04 6, 2017"``)."""
    d = dt.datetime.fromtimestamp(t, tz=dt.timezone.utc)
    return f"{d:%m} {d.day}, {d.year}"


def _asin(rng: random.Random) -> str:
    return "B00" + "".join(rng.choice("0123456789ABCDEFGHJKLMNPQRSTUVWXYZ") for _ in range(7))


def _reviewer(rng: random.Random) -> str:
    return "A" + "".join(rng.choice("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(13))


def _write_jsonl_gz(path: Path, records: list[dict]) -> None:
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec) + "\n")


def write_amazon(
    root: Path, *, n_core_users: int = 8, n_core_items: int = 10, seed: int = 0
) -> AmazonFixture:
    """Write ``Movies_and_TV_5.json.gz`` and ``meta_Movies_and_TV.json.gz`` in the 2018 format.

    Besides a dense block that survives 5-core, it holds users and items below 5 interactions and
    a chain (an item that falls below 5 only after a sparse user is removed, and a user who falls
    below 5 only after a rare item is removed), so a single pass of filtering is not enough.
    """
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    fx = AmazonFixture(reviews=root / "Movies_and_TV_5.json.gz", meta=root / "meta_Movies_and_TV.json.gz")
    core_users = [_reviewer(rng) for _ in range(n_core_users)]
    core_items = [_asin(rng) for _ in range(n_core_items)]
    sparse_users = [_reviewer(rng) for _ in range(3)]
    rare_items = [_asin(rng) for _ in range(3)]
    chain_item, chain_user = _asin(rng), _reviewer(rng)

    pairs: list[tuple[str, str]] = []
    for u_idx, user in enumerate(core_users):
        pairs += [(user, core_items[(u_idx + k) % n_core_items]) for k in range(8)]
    for s_idx, user in enumerate(sparse_users):
        pairs += [(user, core_items[s_idx]), (user, rare_items[s_idx])]
    for r_idx, item in enumerate(rare_items):
        pairs.append((core_users[r_idx], item))
    # chain_item: 4 core users + 1 sparse user -> 5, then 4 once the sparse user is gone.
    pairs += [(u, chain_item) for u in core_users[:4]] + [(sparse_users[0], chain_item)]
    # chain_user: 4 core items + 1 rare item -> 5, then 4 once the rare item is gone.
    pairs += [(chain_user, it) for it in core_items[:4]] + [(chain_user, rare_items[0])]
    rng.shuffle(pairs)

    t0 = 1_252_800_000
    reviews = []
    for user, item in pairs:
        t = t0 + rng.randint(0, 3_000) * 86_400
        rec: dict = {
            "overall": float(rng.randint(1, 5)),
            "verified": rng.random() < 0.7,
            "reviewTime": _review_time(t),
            "reviewerID": user,
            "asin": item,
            "reviewerName": "Movie Fan",
            "reviewText": "Great " + rng.choice(_WORDS) + ", would watch again.",
            "summary": "Five Stars",
            "unixReviewTime": t,
        }
        if rng.random() < 0.3:
            rec["vote"] = str(rng.randint(2, 40))
            rec["style"] = {"Format:": " DVD"}
        reviews.append(rec)
        fx.rows.append((user, item, t))
    _write_jsonl_gz(fx.reviews, reviews)

    all_items = core_items + rare_items + [chain_item]
    fx.no_meta = [core_items[-1]]
    fx.no_text = [core_items[-2]]
    metas = []
    for idx, item in enumerate(all_items):
        if item in fx.no_meta:
            continue
        title_words = rng.sample(_WORDS, 3)
        rec = {
            "category": list(_GENRES[idx % len(_GENRES)]),
            "tech1": "",
            "description": [" ".join(rng.sample(_WORDS, 8)) + ".", ""],
            "fit": "",
            "title": " ".join(w.capitalize() for w in title_words) + " &amp; Friends",
            "also_buy": [_asin(rng)],
            "tech2": "",
            "brand": _BRANDS[idx % len(_BRANDS)],
            "feature": [],
            "rank": "123,456 in Movies & TV (",
            "also_view": [],
            "details": {},
            "main_cat": "Movies & TV",
            "similar_item": "",
            "date": "",
            "price": "$9.99",
            "asin": item,
            "imageURL": [f"https://images-na.ssl-images-amazon.com/images/I/{item}._SS40_.jpg"],
            "imageURLHighRes": [f"https://images-na.ssl-images-amazon.com/images/I/{item}.jpg"],
        }
        if idx == 1:
            rec["description"] = "A single <b>string</b> description about space."
            rec["category"] = [*rec["category"], "</span></span></span>"]
        if idx == 2:
            del rec["brand"]
        if item in fx.no_text:
            rec.update(category=[], description=[], title="", brand="")
        metas.append(rec)
        fx.meta_by_asin[item] = rec
    dup = dict(metas[0], title="A Later Duplicate Row")
    extra = dict(metas[1], asin=_asin(rng))  # a product nobody reviewed
    metas += [dup, extra]
    _write_jsonl_gz(fx.meta, metas)
    return fx


def gzip_lines(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return fh.read().splitlines()


def write_gzip_lines(path: Path, lines: list[str]) -> None:
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
