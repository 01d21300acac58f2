"""Amazon 2018 reader: iterative k-core, whole-string attributes, synthetic queries, bad input."""

from __future__ import annotations

import gzip
import json
import zlib
from collections import Counter
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seminar.data.sources.amazon import k_core, read_amazon
from seminar.data.tables import DataError
from tests.data.fixtures_raw import AmazonFixture, gzip_lines, write_amazon, write_gzip_lines


@pytest.fixture
def fx(tmp_path: Path) -> AmazonFixture:
    return write_amazon(tmp_path, seed=5)


def naive_k_core(rows: list[tuple[str, str, int]], k: int) -> list[tuple[str, str, int]]:
    """Independent reference: drop under-k users and items one at a time until none is left."""
    rows = list(rows)
    while True:
        users = Counter(r[0] for r in rows)
        items = Counter(r[1] for r in rows)
        weak_u = {u for u, n in users.items() if n < k}
        weak_i = {i for i, n in items.items() if n < k}
        if not weak_u and not weak_i:
            return rows
        rows = [r for r in rows if r[0] not in weak_u and r[1] not in weak_i]


def test_k_core_is_exact_and_iterated(fx: AmazonFixture) -> None:
    t = read_amazon(fx.reviews, fx.meta, core=5)
    inter = t.interactions
    expected = naive_k_core(fx.rows, 5)
    assert sorted(inter.select("user", "item", "timestamp").rows()) == sorted(expected)
    # It really is a 5-core ...
    assert inter.group_by("user").len()["len"].min() >= 5
    assert inter.group_by("item").len()["len"].min() >= 5
    # ... which needed more than one pass (the fixture has a removal chain).
    assert t.params["kcore_rounds"] >= 3
    dropped = len(fx.rows) - inter.height
    assert dropped > 0
    assert t.skipped["Movies_and_TV_5.json.gz: removed by iterative 5-core filter"] == dropped
    assert t.skipped["meta_Movies_and_TV.json.gz: repeated asin record"] == 1
    assert t.params["n_users"] == inter["user"].n_unique()


@settings(max_examples=60, deadline=None)
@given(
    pairs=st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), max_size=80),
    core=st.integers(1, 4),
)
def test_k_core_matches_reference_on_random_logs(pairs: list[tuple[int, int]], core: int) -> None:
    rows = [(f"u{u}", f"i{i}", t) for t, (u, i) in enumerate(pairs)]
    schema = {"user": pl.String, "item": pl.String, "timestamp": pl.Int64}
    frame = pl.DataFrame(rows, schema=schema, orient="row")
    kept, _ = k_core(frame, core)
    assert kept.rows() == naive_k_core(rows, core)  # same rows, original order


def test_core_one_keeps_everything(fx: AmazonFixture) -> None:
    t = read_amazon(fx.reviews, fx.meta, core=1)
    assert t.interactions.height == len(fx.rows)
    with pytest.raises(ValueError, match="core"):
        read_amazon(fx.reviews, fx.meta, core=0)


def test_every_behaviour_is_a_search_with_a_query(fx: AmazonFixture) -> None:
    t = read_amazon(fx.reviews, fx.meta)
    inter = t.interactions
    assert t.synthetic_queries and t.text_kind == "text"
    assert inter.schema == pl.Schema(
        {"user": pl.String, "item": pl.String, "timestamp": pl.Int64, "query": pl.String}
    )
    assert inter["query"].null_count() == 0
    assert (inter["query"].str.strip_chars().str.len_chars() > 0).all()
    # One query per item, shared by all its behaviours.
    assert (inter.group_by("item").agg(pl.col("query").n_unique())["query"] == 1).all()
    q = dict(inter.select("item", "query").unique().iter_rows())
    for asin in fx.no_meta + fx.no_text:
        assert q[asin] == f"item {asin}"
    comedy = [a for a, m in fx.meta_by_asin.items() if m["category"][-1:] == ["Comedy"] and a in q]
    assert comedy and all(q[a].startswith("comedy ") for a in comedy)


def test_items_attributes_are_whole_strings(fx: AmazonFixture) -> None:
    t = read_amazon(fx.reviews, fx.meta)
    items = t.items
    assert t.attribute_fields == ["brand", "categories"]
    assert items.schema["brand"] == pl.List(pl.String)
    assert items.schema["categories"] == pl.List(pl.String)
    assert "description" not in items.columns
    assert set(items["item"].to_list()) == set(t.interactions["item"].to_list())
    for row in items.iter_rows(named=True):
        meta = fx.meta_by_asin.get(row["item"])
        if meta is None or row["item"] in fx.no_text:
            assert row["brand"] == [] and row["categories"] == [] and row["title"] is None
            continue
        brand = meta.get("brand", "")
        assert row["brand"] == ([brand] if brand else [])
        assert row["categories"] == [c for c in meta["category"] if not c.startswith("<")]
        assert all(len(v) > 1 for v in row["brand"] + row["categories"])
        assert row["title"] == meta["title"].replace("&amp;", "&")
    assert items["image_path"].null_count() == items.height


def test_image_dir_maps_existing_thumbnails(fx: AmazonFixture, tmp_path: Path) -> None:
    images = tmp_path / "thumbs"
    images.mkdir()
    first = read_amazon(fx.reviews, fx.meta).items["item"][0]
    (images / f"{first}.jpg").write_bytes(b"\xff\xd8\xff")
    t = read_amazon(fx.reviews, fx.meta, image_dir=images)
    paths = dict(t.items.select("item", "image_path").iter_rows())
    assert paths[first] == f"{first}.jpg"
    assert sum(p is not None for p in paths.values()) == 1
    assert t.image_root == images


def test_custom_query_generator(fx: AmazonFixture) -> None:
    def brand_or_asin(items: pl.DataFrame) -> pl.Series:
        return items.select(
            pl.when(pl.col("brand").list.len() > 0)
            .then(pl.col("brand").list.first())
            .otherwise(pl.col("item"))
        ).to_series()

    t = read_amazon(fx.reviews, fx.meta, query_generator=brand_or_asin)
    assert t.params["query_generator"] == "brand_or_asin"
    assert t.interactions["query"].null_count() == 0
    with pytest.raises(ValueError, match="empty"):
        read_amazon(fx.reviews, fx.meta, query_generator=lambda items: pl.Series([""] * items.height))


def _complete_lines(data: bytes) -> int:
    out = zlib.decompressobj(wbits=31).decompress(data)
    return out.count(b"\n")


def test_truncated_gzip_names_file_and_line(fx: AmazonFixture) -> None:
    data = fx.reviews.read_bytes()
    cut = data[: len(data) * 2 // 3]
    fx.reviews.write_bytes(cut)
    line = _complete_lines(cut) + 1
    with pytest.raises(DataError) as err:
        read_amazon(fx.reviews, fx.meta)
    msg = str(err.value)
    assert "Movies_and_TV_5.json.gz" in msg and f"line {line}:" in msg and "truncated" in msg


def test_truncated_meta_gzip(fx: AmazonFixture) -> None:
    data = fx.meta.read_bytes()
    fx.meta.write_bytes(data[:-9])  # loses only the gzip trailer
    with pytest.raises(DataError, match=r"meta_Movies_and_TV\.json\.gz: line \d+:"):
        read_amazon(fx.reviews, fx.meta)


@pytest.mark.parametrize(
    ("target", "line", "edit", "needle"),
    [
        ("reviews", 4, lambda s: s[: len(s) // 2], "malformed JSON"),
        ("reviews", 7, lambda s: s.replace('"unixReviewTime"', '"reviewTimeX"'), "'unixReviewTime'"),
        ("reviews", 2, lambda s: s.replace('"reviewerID"', '"user"'), "'reviewerID'"),
        ("reviews", 3, lambda s: json.dumps(dict(json.loads(s), unixReviewTime="soon")), "'unixReviewTime'"),
        ("reviews", 5, lambda s: "[1, 2, 3]", "JSON object"),
        ("meta", 3, lambda s: s.replace("{", "{{", 1), "malformed JSON"),
        ("meta", 2, lambda s: s.replace('"asin"', '"ASIN"'), "'asin'"),
    ],
)
def test_bad_json_line_names_file_and_line(
    fx: AmazonFixture, target: str, line: int, edit, needle: str
) -> None:
    path = fx.reviews if target == "reviews" else fx.meta
    lines = gzip_lines(path)
    lines[line - 1] = edit(lines[line - 1])
    write_gzip_lines(path, lines)
    with pytest.raises(DataError) as err:
        read_amazon(fx.reviews, fx.meta)
    msg = str(err.value)
    assert path.name in msg and f"line {line}:" in msg and needle in msg


def test_lenient_time_values_take_the_exact_parser(fx: AmazonFixture) -> None:
    lines = gzip_lines(fx.reviews)
    first, second = json.loads(lines[0]), json.loads(lines[1])
    first["unixReviewTime"] = float(first["unixReviewTime"])
    second["unixReviewTime"] = str(second["unixReviewTime"])
    lines[0], lines[1] = json.dumps(first), json.dumps(second)
    write_gzip_lines(fx.reviews, lines)
    t = read_amazon(fx.reviews, fx.meta, core=1)
    assert sorted(t.interactions.select("user", "item", "timestamp").rows()) == sorted(fx.rows)


def test_plain_jsonl_and_blank_lines_are_accepted(fx: AmazonFixture, tmp_path: Path) -> None:
    plain = tmp_path / "reviews.json"
    with gzip.open(fx.reviews, "rt", encoding="utf-8") as fh:
        plain.write_text(fh.read() + "\n\n", encoding="utf-8")
    a = read_amazon(plain, fx.meta).interactions
    b = read_amazon(fx.reviews, fx.meta).interactions
    assert a.equals(b)


def test_missing_file(fx: AmazonFixture, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.json\.gz"):
        read_amazon(tmp_path / "nope.json.gz", fx.meta)


def test_sim_category_is_the_most_specific_of_the_path(fx: AmazonFixture, tmp_path: Path) -> None:
    from seminar.data.build import build_dataset
    from seminar.data.schema import load_dataset
    from seminar.models.features import item_categories
    from tests.data.helpers import quiet_config

    tables = read_amazon(fx.reviews, fx.meta)
    ds = load_dataset(build_dataset(tables, tmp_path / "d", quiet_config(negatives=2)))
    vocab = dict(ds.table("attributes").select("attribute_id", "value").iter_rows())
    item_ids = dict(ds.table("items").select("raw_id", "item_id").iter_rows())
    categories = item_categories(ds)
    paths = {
        asin: [c for c in meta["category"] if not c.startswith("<")]
        for asin, meta in fx.meta_by_asin.items()
        if asin in item_ids
    }
    items_with = Counter(value for path in paths.values() for value in path)
    checked = 0
    for asin, path in paths.items():
        if path:  # the chosen level is on the item's path and as specific as its leaf
            chosen = vocab[int(categories[item_ids[asin]])]
            assert chosen in path and items_with[chosen] == items_with[path[-1]]
            checked += 1
    assert checked > 0 and items_with["Movies & TV"] > max(items_with[p[-1]] for p in paths.values() if p)
