"""One line per user (S3-Rec style sequence files) and the optional item-attributes JSON."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from seminar.cli import main
from seminar.data.schema import load_dataset
from seminar.data.sources.options import SequencesOptions
from seminar.data.sources.sequences import read_sequence_file
from seminar.data.tables import ITEM, QUERY, TIMESTAMP, USER, DataError
from seminar.reproduce.config import DatasetConfig

LINES = "1 10 11 12\n\n2 11 13\n  3\t12 10 14 11  \n"


def _write(tmp_path: Path, text: str, name: str = "Beauty.txt") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _json(tmp_path: Path, data: object, name: str = "attrs.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def test_positions_are_timestamps_and_there_are_no_queries(tmp_path: Path) -> None:
    path = _write(tmp_path, LINES)
    tables = read_sequence_file(path)
    inter = tables.interactions
    assert inter.columns == [USER, ITEM, TIMESTAMP, QUERY]
    assert inter.schema == {USER: pl.String, ITEM: pl.String, TIMESTAMP: pl.Int64, QUERY: pl.String}
    assert inter[USER].to_list() == ["1"] * 3 + ["2"] * 2 + ["3"] * 4
    assert inter[ITEM].to_list() == ["10", "11", "12", "11", "13", "12", "10", "14", "11"]
    assert inter[TIMESTAMP].to_list() == [0, 1, 2, 0, 1, 0, 1, 2, 3]
    assert inter[QUERY].null_count() == inter.height
    assert tables.items.columns == [ITEM] and tables.items[ITEM].to_list() == ["10", "11", "12", "13", "14"]
    assert tables.attribute_fields == [] and tables.raw_files == [path]
    assert tables.name == "sequences:Beauty" and tables.params["attributes"] is None


def test_attributes_json_becomes_one_multi_valued_field(tmp_path: Path) -> None:
    path = _write(tmp_path, LINES)
    attrs = _json(tmp_path, {"10": [3, 7], "11": [7, 7], "12": ["a", 3], "13": [], "99": [1]})
    tables = read_sequence_file(path, attrs)
    assert tables.attribute_fields == ["attribute"] and tables.raw_files == [path, attrs]
    assert tables.items.schema == {ITEM: pl.String, "attribute": pl.List(pl.String)}
    stored = dict(zip(tables.items[ITEM].to_list(), tables.items["attribute"].to_list(), strict=True))
    # "99" is in no sequence: not used; "14" is not in the JSON: no attributes, counted.
    assert stored == {"10": ["3", "7"], "11": ["7"], "12": ["a", "3"], "13": [], "14": []}
    assert tables.skipped == {"items not in the attributes JSON (kept with no attributes)": 1}


def test_a_separator_other_than_whitespace(tmp_path: Path) -> None:
    path = _write(tmp_path, "u1,a,b, c,\nu2,b,a\n", "s.csv")
    tables = read_sequence_file(path, separator=",")
    assert tables.interactions[ITEM].to_list() == ["a", "b", "c", "b", "a"]
    assert tables.params["separator"] == ","


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1 10 11\n\n2\n", r"Beauty\.txt: line 3: user '2' has no items"),
        ("1 10 11\n2 12\n1 13\n", r"Beauty\.txt: line 3: user '1' already has a line \(line 1\)"),
        ("\n  \n", r"Beauty\.txt: no user lines"),
    ],
)
def test_bad_lines_are_named(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        read_sequence_file(_write(tmp_path, text))


def test_missing_and_undecodable_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.txt: file not found"):
        read_sequence_file(tmp_path / "nope.txt")
    path = tmp_path / "latin.txt"
    path.write_bytes(b"1 10 11\n2 caf\xe9 12\n")
    with pytest.raises(DataError, match=r"latin\.txt: line 2: not UTF-8 text"):
        read_sequence_file(path)
    with pytest.raises(DataError, match=r"gone\.json: file not found"):
        read_sequence_file(_write(tmp_path, LINES), tmp_path / "gone.json")


def test_a_long_user_id_is_not_echoed_whole(tmp_path: Path) -> None:
    user = "x" * 5000
    with pytest.raises(DataError) as info:
        read_sequence_file(_write(tmp_path, f"{user} 1 2\n{user} 3\n"))
    assert "line 2" in str(info.value) and len(str(info.value)) < 300


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"10": [3], ', r"attrs\.json: line 1, column \d+: not valid JSON"),
        (
            "[[3], [7]]",
            r"attrs\.json: expected a JSON object mapping item ids to lists of attribute ids, got a list",
        ),
        ('{"10": [3], "11": 7}', r"attrs\.json: key '11': expected a list of attribute ids, got 7"),
        ('{"10": [3], "12": [1, null]}', r"attrs\.json: key '12': None is not an attribute id"),
        ('{"13": [[1, 2]]}', r"attrs\.json: key '13': \[1, 2\] is not an attribute id"),
        ('{"14": [true]}', r"attrs\.json: key '14': True is not an attribute id"),
        ('{"14": [" "]}', r"attrs\.json: key '14': ' ' is not an attribute id"),
    ],
)
def test_bad_attribute_json_is_named(tmp_path: Path, content: str, message: str) -> None:
    attrs = tmp_path / "attrs.json"
    attrs.write_text(content)
    with pytest.raises(DataError, match=message):
        read_sequence_file(_write(tmp_path, LINES), attrs)


def test_a_huge_bad_json_value_is_truncated(tmp_path: Path) -> None:
    attrs = _json(tmp_path, {"10": "y" * 10_000})
    with pytest.raises(DataError, match="key '10'") as info:
        read_sequence_file(_write(tmp_path, LINES), attrs)
    assert len(str(info.value)) < 300


def test_reproduce_config_accepts_the_source(tmp_path: Path) -> None:
    path = _write(tmp_path, LINES)
    config = DatasetConfig(name="beauty", source="sequences", options={"file": str(path)})
    assert config.options == SequencesOptions(file=path)
    assert config.build.text_encoder == "none"  # no text to encode


def _generated(tmp_path: Path, users: int = 30, length: int = 8, items: int = 40) -> tuple[Path, Path]:
    lines = [
        " ".join(str(v) for v in [u, *[1 + (u * 3 + 5 * k) % items for k in range(length)]])
        for u in range(1, users + 1)
    ]
    lines.append(f"{users + 1} 1 2")  # too short for the split: dropped by the build
    path = _write(tmp_path, "\n".join(lines) + "\n", "Toys.txt")
    attrs = _json(tmp_path, {str(i): [i % 4, 10 + i % 3] for i in range(1, items + 1) if i != 7})
    return path, attrs


def test_prepare_sequences_from_the_command_line(tmp_path: Path) -> None:
    path, attrs = _generated(tmp_path)
    out = tmp_path / "d"
    argv = ["prepare", "sequences", str(path), "--attributes", str(attrs), "--negatives", "5"]
    assert main([*argv, "--out", str(out), "--quiet"]) == 0
    ds = load_dataset(out)
    assert ds.n_users == 30 and ds.manifest["counts"]["behaviours"] == 30 * 8
    assert ds.manifest["counts"]["search_behaviours"] == 0
    assert ds.manifest["skipped"]["users with fewer than 3 behaviours"] == 1
    assert ds.manifest["attribute_fields"] == ["attribute"]
    assert set(ds.table("attributes")["value"].to_list()) == {"0", "1", "2", "3", "10", "11", "12"}
    assert ds.manifest["skipped"]["items not in the attributes JSON (kept with no attributes)"] == 1
    assert ds.test_negatives.shape == (30, 5)
    assert [r["path"] for r in ds.manifest["raw_inputs"]] == [str(path), str(attrs)]
    # Timestamps are positions: user 1's behaviours are 0..7 in line order.
    assert ds.timestamps[ds.offsets[0] : ds.offsets[1]].tolist() == list(range(8))
    # Same files and options: nothing to do.
    assert main([*argv, "--out", str(out), "--quiet"]) == 0


def test_prepare_sequences_bad_input_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, "1 10 11 12\n2 13 14 15\n1 16 17 18\n")
    out = tmp_path / "d"
    assert main(["prepare", "sequences", str(path), "--out", str(out), "--quiet"]) == 2
    assert "line 3: user '1' already has a line" in capsys.readouterr().err
    assert main(["prepare", "sequences", str(tmp_path / "no.txt"), "--out", str(out), "--quiet"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not out.exists()
