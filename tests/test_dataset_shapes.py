"""Every command on every common dataset shape: attributes only, text only, queries without text,
no queries at all, and no timestamps (the file's order is the time order).

Each test generates a tiny CSV dataset of its shape and runs the whole pipeline on it: `prepare`,
`pretrain`, `train`, `evaluate`, `export`, the HTTP app `serve` runs, and `reproduce`.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from seminar.cli import main
from seminar.reproduce import run_reproduce
from seminar.serving import ScoringService
from seminar.serving.app import create_app

WORDS = ("red", "blue", "boots", "shirt", "lamp", "desk", "green", "cup")
N_USERS, N_ITEMS, PER_USER = 40, 60, 12


@dataclass(frozen=True)
class Shape:
    name: str
    title: bool  # items have a title (the text channel)
    attributes: bool  # items have attribute values
    queries: bool  # some behaviours are searches
    timestamps: bool
    dropped: tuple[str, ...]  # PSU tasks the shape cannot support

    def prepare_args(self, root: Path) -> list[str]:
        args = ["--interactions", str(root / "inter.csv"), "--items", str(root / "items.csv")]
        if self.title:
            args += ["--title-col", "title", "--text-encoder", "hashing:32"]
        else:
            args += ["--text-encoder", "hashing:32" if self.queries else "none"]
        if self.attributes:
            args += ["--attribute-cols", "tags"]
        if self.queries:
            args += ["--query-col", "query"]
        args += ["--time-col", "timestamp" if self.timestamps else "none"]
        return args


SHAPES = [
    Shape("attributes only", title=False, attributes=True, queries=False, timestamps=True,
          dropped=("align", "relevance")),
    Shape("text only", title=True, attributes=False, queries=False, timestamps=True, dropped=("relevance",)),
    Shape("queries without text", title=False, attributes=True, queries=True, timestamps=True,
          dropped=("align",)),
    Shape("no queries", title=True, attributes=True, queries=False, timestamps=True, dropped=("relevance",)),
    Shape("no timestamps", title=True, attributes=True, queries=True, timestamps=False, dropped=()),
]  # fmt: skip


def write_shape(shape: Shape, root: Path) -> None:
    rng = random.Random(0)
    header = (
        ["user", "item"] + (["timestamp"] if shape.timestamps else []) + (["query"] if shape.queries else [])
    )
    rows = []
    for u in range(N_USERS):
        for k in range(PER_USER):
            item = (u * 7 + k * 3 + rng.randrange(4)) % N_ITEMS
            row = [f"u{u}", f"i{item}"]
            if shape.timestamps:
                row.append(str(1000 + 10 * k))
            if shape.queries:
                row.append(WORDS[item % len(WORDS)] if k % 2 else "")
            rows.append(",".join(row))
    (root / "inter.csv").write_text(",".join(header) + "\n" + "\n".join(rows) + "\n")
    columns = ["item"] + (["title"] if shape.title else []) + (["tags"] if shape.attributes else [])
    items = []
    for i in range(N_ITEMS):
        row = [f"i{i}"]
        if shape.title:
            row.append(f"{WORDS[i % len(WORDS)]} thing {i}")
        if shape.attributes:
            row.append(f"t{i % 5}|c{i % 3}")
        items.append(",".join(row))
    (root / "items.csv").write_text(",".join(columns) + "\n" + "\n".join(items) + "\n")


SMALL = ["--epochs", "1", "--dim", "16", "--heads", "2", "--quiet"]


@pytest.mark.parametrize("shape", SHAPES, ids=[s.name for s in SHAPES])
def test_every_command_runs_on_the_shape(
    shape: Shape, tmp_path: Path, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
) -> None:
    write_shape(shape, tmp_path)
    data, psu, run, export = (tmp_path / n for n in ("data", "psu", "run", "export"))
    prepare = ["prepare", "tables", *shape.prepare_args(tmp_path), "--negatives", "10", "--quiet"]
    assert main([*prepare, "--out", str(data)]) == 0

    assert main(["pretrain", "--data", str(data), "--out", str(psu), *SMALL]) == 0
    for task in shape.dropped:
        assert f"PSU task {task} switched off" in caplog.text
    saved = json.loads((psu / "best" / "config.json").read_text())["model_config"]
    assert [t for t in ("next_pair", "align", "relevance") if not saved[t]] == list(shape.dropped)

    train = ["train", "--data", str(data), "--out", str(run), "--pretrained", str(psu)]
    assert main([*train, "--max-length", "20", "--top-k", "5", "--no-user-id", *SMALL]) == 0
    assert json.loads((run / "best" / "config.json").read_text())["model_config"]["user_id"] is False

    capsys.readouterr()
    evaluate = ["evaluate", "--data", str(data), "--run", str(run), "--modes", "recommendation", "search"]
    assert main([*evaluate, "--json", "--quiet"]) == 0
    rows = {r["mode"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["recommendation"]["users"] == N_USERS and 0 < rows["recommendation"]["ndcg@10"] <= 1
    if shape.queries:
        assert rows["search"]["users"] > 0 and "ndcg@10" in rows["search"]
    else:  # no test behaviour is a search: nothing to rank, and no made-up number
        assert rows["search"] == {"model": "run", "gsu": "exact", "mode": "search", "users": 0}

    assert main(["export", "--data", str(data), "--run", str(run), "--out", str(export)]) == 0
    client = TestClient(create_app(ScoringService.load(export)), raise_server_exceptions=True)
    appended = [{"item": "i1", "timestamp": 10_000}, {"item": "i2", "timestamp": 10_001}]
    query = "red" if shape.queries else None
    by_user = {}
    for user in ("u3", "a-user-absent-from-training"):
        assert client.post(f"/users/{user}/behaviours", json={"behaviours": appended}).status_code == 200
        body = {"user": user, "items": [f"i{i}" for i in range(5)], "query": query}
        scored = client.post("/score", json=body)
        assert scored.status_code == 200, scored.text
        by_user[user] = [r["probability"] for r in scored.json()["results"]]
        assert len(by_user[user]) == 5 and all(math.isfinite(s) and 0 <= s <= 1 for s in by_user[user])
    # no user id embedding and no profile: a new user with the same history scores the same
    assert by_user["u3"] == by_user["a-user-absent-from-training"]

    config = {
        "name": "shape",
        "datasets": [
            {
                "name": "shape",
                "source": "tables",
                "options": {
                    "interactions": str(tmp_path / "inter.csv"),
                    "items": str(tmp_path / "items.csv"),
                    "time_col": "timestamp" if shape.timestamps else None,
                    "title_col": "title" if shape.title else None,
                    "query_col": "query" if shape.queries else None,
                    "attribute_cols": ["tags"] if shape.attributes else [],
                },
                "build": {"text_encoder": "hashing:16", "negatives": 10},
            }
        ],
        "models": [
            {"name": "SEMINAR", "model": "seminar", "pretrain": "all"},
            {"name": "SEMINAR w/o pretraining", "model": "seminar"},
        ],
        "seeds": [0],
        "training": {"max_length": 10, "top_k": 4, "dim": 8, "heads": 2, "epochs": 1, "pretrain_epochs": 1},
    }
    report = tmp_path / "report"
    run_reproduce(config, report, retrieval=False, progress=False)
    table3 = (report / "table3.md").read_text()
    for task in shape.dropped:
        label = {"align": "alignment", "relevance": "q-i relevance"}[task]
        assert f"{label} switched off" in table3
    if not shape.dropped:
        assert "switched off" not in table3
    assert "±" not in table3  # one seed: no spread


def test_no_feasible_pretraining_task_is_exit_2_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    shape = SHAPES[0]  # attributes only: neither alignment nor relevance can run
    write_shape(shape, tmp_path)
    data = tmp_path / "data"
    prepare = ["prepare", "tables", *shape.prepare_args(tmp_path), "--negatives", "10", "--quiet"]
    assert main([*prepare, "--out", str(data)]) == 0
    psu = tmp_path / "psu"
    code = main(["pretrain", "--data", str(data), "--out", str(psu), "--no-next-pair", *SMALL])
    assert code == 2
    assert "no PSU pretraining task can run" in capsys.readouterr().err
    assert not psu.exists()

    config = tmp_path / "grid.yaml"
    config.write_text(
        "datasets:\n"
        f"  - {{name: attrs, source: tables, options: {{interactions: {tmp_path / 'inter.csv'}, "
        f"items: {tmp_path / 'items.csv'}, attribute_cols: [tags]}}, build: {{negatives: 10}}}}\n"
        "models:\n"
        "  - {name: recency, model: recency}\n"
        "  - {name: SEMINAR w. align only, model: seminar, pretrain: [align]}\n"
        "training: {max_length: 10, top_k: 4, dim: 8, heads: 2, epochs: 1, pretrain_epochs: 1}\n"
    )
    report = tmp_path / "report"
    assert main(["reproduce", str(config), "--out", str(report), "--skip-retrieval", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "'SEMINAR w. align only'" in err and "align needs two item channels" in err
    assert not (report / "runs").exists()  # refused before any training, the baseline's included
