"""Mean ± std over seeds, table rows and Markdown on cells whose values are known."""

from __future__ import annotations

import math

import pytest

from seminar.reproduce.aggregate import FinishedCell, collect, summarise
from seminar.reproduce.cells import make_spec, plan_cells
from seminar.reproduce.config import PSU_TASKS, parse_config
from seminar.reproduce.tables import generated_query_note, grid_table_markdown, sweep_markdown

CONFIG = {
    "datasets": [{"name": "d", "source": "ml-100k"}],
    "models": [
        {"name": "TWIN", "model": "twin"},
        {"name": "SEMINAR", "model": "seminar", "pretrain": "all"},
        {"name": "SEMINAR w. align only", "model": "seminar", "pretrain": ["align"]},
    ],
    "seeds": [0, 1, 2],
    "modes": ["recommendation"],
    "sweeps": {"fusion_lambda": [0.5, 0.9]},
}
TWIN_NDCG = [0.1, 0.2, 0.4]


def finished_cells() -> list[FinishedCell]:
    config = parse_config(CONFIG)
    out = []
    for cell in plan_cells(config):
        if cell.variant == "TWIN":
            value = TWIN_NDCG[cell.seed]
        else:
            value = 0.3 + 0.01 * cell.seed + (0.1 if cell.value == 0.9 else 0.0)
        metrics = {"ndcg@10": value, "mrr": value / 2, "users": 100.0}
        if cell.seed < 2:  # a metric only some seeds report is left out
            metrics["auc"] = 0.7
        out.append(FinishedCell(cell, {"recommendation": metrics}))
    return out


def test_summarise_is_mean_and_population_std() -> None:
    stat = summarise(TWIN_NDCG)
    assert stat.mean == pytest.approx(0.7 / 3)
    assert stat.std == pytest.approx(math.sqrt(sum((v - 0.7 / 3) ** 2 for v in TWIN_NDCG) / 3))
    assert stat.n == 3
    assert summarise([0.25]).std == 0.0
    with pytest.raises(ValueError):
        summarise([])


def test_tables_hold_mean_and_std_per_variant() -> None:
    config = parse_config(CONFIG)
    collected = collect(config, finished_cells())
    rows = collected["table2"]["d"]["recommendation"]
    assert [r["model"] for r in rows] == ["TWIN", "SEMINAR"]
    twin = rows[0]
    assert twin["seeds"] == 3
    assert twin["metrics"]["ndcg@10"]["mean"] == pytest.approx(0.233333333)
    assert twin["metrics"]["ndcg@10"]["std"] == pytest.approx(0.124721913)
    assert twin["metrics"]["mrr"]["mean"] == pytest.approx(0.116666667)
    assert "auc" not in twin["metrics"] and "users" not in twin["metrics"]
    ablation = collected["table3"]["d"]["recommendation"]
    assert [(r["model"], r["pretraining"]) for r in ablation] == [
        ("SEMINAR", "all (next pair + alignment + q-i relevance)"),
        ("SEMINAR w. align only", "alignment only"),
    ]
    markdown = grid_table_markdown(collected["table2"], ["model", "seeds"], ["ndcg@10", "hr@10", "mrr"])
    assert "| TWIN | 3 | 100 | 0.2333 ± 0.1247 | 0.1167 ± 0.0624 |" in markdown
    assert "hr@10" not in markdown  # no cell has it
    assert "Only" not in markdown  # 100 test users: not flagged


def test_rows_show_their_gap_to_a_finished_oracle() -> None:
    models = [{"name": "truth", "model": "oracle"}, *CONFIG["models"]]
    config = parse_config({**CONFIG, "models": models})
    cells = finished_cells()
    oracle = [
        FinishedCell(c, {"recommendation": {"ndcg@10": 0.5, "mrr": 0.4, "users": 100.0}})
        for c in plan_cells(config)
        if c.variant == "truth" and c.sweep is None
    ]
    collected = collect(config, cells + oracle)
    markdown = grid_table_markdown(collected["table2"], ["model", "seeds"], ["ndcg@10", "mrr"])
    assert "| model | seeds | users | ndcg@10 | mrr | gap to the oracle (ndcg@10) |" in markdown
    assert "| truth | 3 | 100 | 0.5000 ± 0.0000 | 0.4000 ± 0.0000 | 0.0000 |" in markdown
    assert "| TWIN | 3 | 100 | 0.2333 ± 0.1247 | 0.1167 ± 0.0624 | 0.2667 |" in markdown
    assert "| SEMINAR | 3 | 100 | 0.3100 ± 0.0082 | 0.1550 ± 0.0041 | 0.1900 |" in markdown
    # without a finished oracle row (or without the metric) there is no gap column
    without = collect(config, cells)
    assert "gap" not in grid_table_markdown(without["table2"], ["model", "seeds"], ["ndcg@10"])
    assert "gap" not in grid_table_markdown(collected["table2"], ["model", "seeds"], ["hr@10"])
    assert "gap to the oracle (mrr)" in grid_table_markdown(collected["table2"], ["model", "seeds"], ["mrr"])


def test_one_seed_shows_no_spread_and_few_users_are_flagged() -> None:
    config = parse_config({**CONFIG, "seeds": [0]})
    few = [
        FinishedCell(f.cell, {"recommendation": {**f.metrics["recommendation"], "users": 8.0}})
        for f in finished_cells()
        if f.cell.seed == 0
    ]
    collected = collect(config, few)
    markdown = grid_table_markdown(collected["table2"], ["model", "seeds"], ["ndcg@10", "mrr"])
    assert "| TWIN | 1 | 8 (few) | 0.1000 | 0.0500 |" in markdown
    assert "±" not in markdown
    assert "**Only 8 test users in this mode**" in markdown


def test_a_mode_without_test_users_says_so() -> None:
    config = parse_config(CONFIG)
    empty = [FinishedCell(f.cell, {"recommendation": {"users": 0}}) for f in finished_cells()]
    markdown = grid_table_markdown(collect(config, empty)["table2"], ["model", "seeds"], ["ndcg@10"])
    assert "no test user in this mode" in markdown


def test_table3_says_which_pretraining_tasks_were_switched_off() -> None:
    config = parse_config(CONFIG)
    why = "needs two item channels; this dataset has one (attributes)"
    cells = [
        FinishedCell(f.cell, f.metrics, dropped_tasks={"align": why} if f.cell.variant == "SEMINAR" else {})
        for f in finished_cells()
    ]
    ablation = collect(config, cells)["table3"]["d"]["recommendation"]
    assert ablation[0]["pretraining"] == (
        f"all (next pair + alignment + q-i relevance); alignment switched off: {why}"
    )
    assert ablation[1]["pretraining"] == "alignment only"


def test_sweep_points_follow_values_and_reuse_grid_cells() -> None:
    config = parse_config(CONFIG)
    points = collect(config, finished_cells())["sweeps"]["fusion_lambda"]["points"]["d"]["recommendation"]
    assert [p["value"] for p in points] == [0.5, 0.9]
    assert points[0]["metrics"]["ndcg@10"]["mean"] == pytest.approx(0.31)
    assert points[1]["metrics"]["ndcg@10"]["mean"] == pytest.approx(0.41)
    sweep = collect(config, finished_cells())["sweeps"]["fusion_lambda"]
    assert "| 0.9 | 3 | 100 | 0.4100 ± 0.0082 |" in sweep_markdown(sweep, "λ", ["ndcg@10"])


def test_missing_cells_show_as_fewer_seeds() -> None:
    config = parse_config(CONFIG)
    partial = [f for f in finished_cells() if not (f.cell.variant == "TWIN" and f.cell.seed == 2)]
    twin = collect(config, partial)["table2"]["d"]["recommendation"][0]
    assert twin["seeds"] == 2 and twin["metrics"]["ndcg@10"]["mean"] == pytest.approx(0.15)
    nothing = collect(config, [])["table2"]["d"]["recommendation"][0]
    assert nothing["seeds"] == 0 and nothing["metrics"] == {}
    assert "–" in grid_table_markdown({"d": {"recommendation": [twin, nothing]}}, ["model"], ["ndcg@10"])


def test_zero_pretraining_epochs_is_the_run_without_pretraining() -> None:
    assert make_spec("d", "seminar", ("align",), 0, 0.5, 1) == make_spec("d", "seminar", None, 3, 0.5, 1)
    assert make_spec("d", "seminar", ("align",), 2, 0.5, 1).key == "seminar-psu-align-e2-lambda0.5"


def test_pretraining_labels_name_the_tasks_left_out() -> None:
    from seminar.reproduce.aggregate import pretraining_label

    assert pretraining_label(None) == "none"
    assert pretraining_label(["relevance"]) == "q-i relevance only"
    assert pretraining_label(["next_pair", "relevance"]) == "next pair + q-i relevance (no alignment)"
    assert pretraining_label(list(PSU_TASKS)) == "all (next pair + alignment + q-i relevance)"


def test_search_mode_on_generated_queries_is_marked() -> None:
    config = parse_config({**CONFIG, "modes": ["recommendation", "search"]})
    cells = [
        FinishedCell(f.cell, {**f.metrics, "search": f.metrics["recommendation"]}) for f in finished_cells()
    ]
    table = collect(config, cells)["table2"]
    note = generated_query_note({"synthetic_queries": True, "split": {"negatives": 99}})
    assert note is not None and "drawn from all items" in note
    markdown = grid_table_markdown(table, ["model", "seeds"], ["ndcg@10"], {("d", "search"): note})
    search = markdown.split("#### d, search mode")[1]
    recommendation = markdown.split("#### d, search mode")[0]
    assert note in search and note not in recommendation
    category = generated_query_note({"synthetic_queries": True, "split": {"eval_negatives": "category"}})
    assert category is not None and "own category" in category
    query = generated_query_note({"synthetic_queries": True, "split": {"eval_negatives": "query"}})
    assert query is not None and "clicked under the same query" in query
    assert generated_query_note({"synthetic_queries": False}) is None


def test_the_settings_line_says_how_runs_stop() -> None:
    from seminar.reproduce.report import _settings_markdown

    assert "(patience 3, best by validation" in _settings_markdown(parse_config(CONFIG))
    never = parse_config({**CONFIG, "training": {"patience": None}})
    assert "(no early stop, best by validation" in _settings_markdown(never)
