"""The `seminar` command end to end, in a subprocess like a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from seminar.cli import main

PREPARE_SYNTHETIC = (
    "prepare",
    "synthetic",
    "--users",
    "30",
    "--items",
    "300",
    "--mean-length",
    "20",
    "--negatives",
    "10",
    "--out",
)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "seminar.cli", *args], capture_output=True, text=True, timeout=300
    )


def test_help_lists_commands() -> None:
    out = run("--help")
    assert out.returncode == 0
    for command in ("prepare", "data", "demo"):
        assert command in out.stdout


def test_building_the_parser_leaves_torch_and_the_retrieval_libraries_unloaded() -> None:
    """Every command builds the whole parser: torch (about 2 s of imports) loads only when a command
    runs, and the retrieval grid's libraries (faiss, the RQ-VAE's vector-quantize-pytorch) only when a
    retrieval command does; `seminar --help` and a usage error stay quick."""
    probe = (
        "import sys; from seminar.cli import build_parser; build_parser(); "
        "heavy = ('torch', 'faiss', 'vector_quantize_pytorch', 'matplotlib'); "
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_prepare_synthetic_then_info_json(tmp_path: Path) -> None:
    out = run(*PREPARE_SYNTHETIC, str(tmp_path / "d"), "--quiet")
    assert out.returncode == 0, out.stderr
    assert "behaviours" in out.stdout and "search share" in out.stdout
    info = run("data", "info", str(tmp_path / "d"), "--json")
    summary = json.loads(info.stdout)
    assert summary["users"] == 30
    assert 0.2 < summary["search_share"] < 0.4
    again = run(*PREPARE_SYNTHETIC, str(tmp_path / "d"), "--quiet")
    assert "up to date" in again.stdout


def test_prepare_tables_from_csv(tmp_path: Path) -> None:
    inter = tmp_path / "clicks.csv"
    inter.write_text(
        "uid,sku,ts,q\n"
        + "\n".join(
            f"u{u},s{(3 * u + k) % 20},{k},{'boots' if k % 2 else ''}" for u in range(6) for k in range(6)
        )
        + "\n"
    )
    items = tmp_path / "items.csv"
    items.write_text("sku,name,tags\n" + "\n".join(f"s{i},Thing {i},a|b" for i in range(20)) + "\n")
    users = tmp_path / "users.csv"
    users.write_text("uid,age,city\n" + "\n".join(f"u{u},{20 + u},c{u}" for u in range(5)) + "\n")
    code = main(
        [
            "prepare",
            "tables",
            "--interactions",
            str(inter),
            "--items",
            str(items),
            "--user-col",
            "uid",
            "--item-col",
            "sku",
            "--time-col",
            "ts",
            "--query-col",
            "q",
            "--title-col",
            "name",
            "--attribute-cols",
            "tags",
            "--users",
            str(users),
            "--user-features",
            "age",
            "--text-encoder",
            "hashing:16",
            "--negatives",
            "5",
            "--out",
            str(tmp_path / "d"),
            "--quiet",
        ]
    )
    assert code == 0
    manifest = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert manifest["counts"]["search_behaviours"] == 18
    assert manifest["vectors"]["item_text"]["dim"] == 16
    assert manifest["user_fields"] == ["age"] and manifest["counts"]["user_attributes"] == 5
    assert manifest["skipped"]["users without features (kept with none)"] == 1  # u5
    assert manifest["raw_inputs"][-1]["path"] == str(users)


def test_bad_input_is_a_clear_error_not_a_traceback(tmp_path: Path) -> None:
    inter = tmp_path / "clicks.csv"
    inter.write_text("user,item,timestamp\na,x,1\na,y,later\n")
    out = run("prepare", "tables", "--interactions", str(inter), "--out", str(tmp_path / "d"), "--quiet")
    assert out.returncode == 2
    assert "clicks.csv" in out.stderr and "line 3" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "d").exists()


def test_bad_prepare_options_are_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "d")
    assert main(["prepare", "ml-100k", "--query-fraction", "2", "--out", out, "--quiet"]) == 2
    assert "--query-fraction: must lie in [0, 1], got 2.0" in capsys.readouterr().err
    missing = tmp_path / "nowhere.csv"
    assert main(["prepare", "tables", "--interactions", str(missing), "--out", out, "--quiet"]) == 2
    assert f"interactions: {missing} does not exist" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_prepare_never_replaces_a_folder_it_did_not_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    inter = inputs / "clicks.csv"
    inter.write_text(
        "user,item,timestamp\n" + "".join(f"u{u},i{(u + k) % 9},{k}\n" for u in range(6) for k in range(6))
    )
    prepare = [
        "prepare",
        "tables",
        "--interactions",
        str(inter),
        "--text-encoder",
        "none",
        "--negatives",
        "2",
    ]
    for force in ([], ["--force"]):  # the inputs' own folder as --out: refused, nothing deleted
        assert main([*prepare, "--out", str(inputs), "--quiet", *force]) == 2
        assert "is not empty and holds no dataset" in capsys.readouterr().err
        assert sorted(p.name for p in inputs.iterdir()) == ["clicks.csv"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([*prepare, "--out", str(empty), "--quiet"]) == 0  # an empty folder is fine
    assert main([*prepare, "--out", str(empty), "--quiet", "--force"]) == 0  # so is its own dataset
    assert (empty / "manifest.json").is_file()
    assert not list(tmp_path.glob(".*.old-*")) and not list(tmp_path.glob(".*.partial-*"))


def test_info_on_a_non_dataset(tmp_path: Path) -> None:
    out = run("data", "info", str(tmp_path))
    assert out.returncode == 2 and "not a prepared dataset" in out.stderr


@pytest.mark.slow
def test_demo_runs(tmp_path: Path) -> None:
    out = run("demo", "--out", str(tmp_path / "run"), "--quiet")
    assert out.returncode == 0, out.stderr
    assert "ml-100k" in out.stdout and "100,000" in out.stdout


@pytest.mark.parametrize(
    ("command", "bad", "message"),
    [
        ("train", ["--top-k", "0"], "argument --top-k: must be ≥ 1, got 0"),
        ("train", ["--lr", "nan"], "argument --lr: 'nan' is not a finite number"),
        ("train", ["--device", "tpu"], "argument --device: 'tpu'"),
        ("train", ["--batch-size", "0"], "argument --batch-size: must be ≥ 1"),
        ("train", ["--dropout", "1"], "argument --dropout: must lie in [0, 1)"),
        ("pretrain", ["--fusion-lambda", "-0.5"], "argument --fusion-lambda: must lie in [0, 1]"),
        ("pretrain", ["--temperature", "inf"], "argument --temperature: 'inf' is not a finite number"),
        ("prepare", ["--negatives", "x"], "argument --negatives: 'x' is not a number"),
        ("evaluate", ["--device", "tpu"], "argument --device: 'tpu'"),
    ],
)
def test_bad_values_are_usage_errors_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, bad: list[str], message: str
) -> None:
    out = tmp_path / "out"
    if command == "prepare":
        args = ["prepare", "synthetic", "--users", "5", "--out", str(out), *bad]
    elif command == "evaluate":
        args = ["evaluate", "--data", str(tmp_path / "missing"), "--run", str(out), *bad]
    else:
        args = [command, "--data", str(tmp_path / "missing"), "--out", str(out), *bad]
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (["--negatives", "-1"], "--negatives: must be >= 1, got -1"),
        (["--min-behaviours", "2"], "--min-behaviours: must be >= 3"),
        (["--seed", "-1"], "--seed: must be >= 0, got -1"),
        (["--text-encoder", "bogus"], "--text-encoder: unknown encoder 'bogus'"),
        (["--image-encoder", "minilm"], "--image-encoder: use clip:CHECKPOINT_DIR or none"),
    ],
)
def test_build_options_refused_by_their_own_check_are_exit_2_before_the_source_is_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: list[str], message: str
) -> None:
    """The prepare flags are typed from BuildOptions and bounded by its check: one place."""
    out = tmp_path / "out"
    missing = tmp_path / "no-such-dir"  # reading it would fail with another message
    assert main(["prepare", "kuaisar", str(missing), "--out", str(out), *bad]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_flags_valid_alone_but_not_together_are_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "d"
    assert main([*PREPARE_SYNTHETIC, str(out), "--quiet"]) == 0
    run_dir = tmp_path / "run"
    args = [
        "train",
        "--data",
        str(out),
        "--out",
        str(run_dir),
        "--model",
        "sasrec",
        "--heads",
        "3",
        "--quiet",
    ]
    assert main(args) == 2
    assert "SASRec needs dim divisible by heads" in capsys.readouterr().err
    assert not run_dir.exists()
    train = ["train", "--data", str(out), "--out", str(run_dir), "--quiet"]
    assert main([*train, "--top-k", "10", "--recent", "11"]) == 2
    assert "recent must lie in [0, top_k=10]" in capsys.readouterr().err
    assert not run_dir.exists()
    assert main([*train, "--model", "itemknn", "--knn-span", "1"]) == 2
    err = capsys.readouterr().err
    assert "knn_span" in err and "must be >= 2" in err
    assert not run_dir.exists()


def test_prepare_flags_and_a_reproduce_build_section_give_the_same_build() -> None:
    """Every build option is a `prepare` flag, and both routes reach BuildConfig through BuildOptions."""
    from dataclasses import fields

    from seminar.cli import build_parser
    from seminar.data.sources.options import BuildOptions
    from seminar.reproduce.config import parse_config

    values = {
        "text_encoder": "hashing:32",
        "negatives": 7,
        "sampling": "popularity",
        "eval_negatives": "category",
        "seed": 3,
        "min_behaviours": 5,
        "max_behaviours": 100,
        "cache_dir": "vectors",
    }
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in values.items()]
    args = build_parser().parse_args(["prepare", "ml-100k", "--out", "data", *flags])
    from_flags = BuildOptions(**{f.name: getattr(args, f.name) for f in fields(BuildOptions)})
    dataset = {"name": "d", "source": "ml-100k", "build": values}
    grid = {"datasets": [dataset], "models": [{"name": "P", "model": "popularity"}]}
    from_yaml = parse_config(grid).datasets[0].build
    assert from_flags == from_yaml
    config = from_flags.build_config(progress=False)
    assert config == from_yaml.build_config(progress=False)
    split = config.split
    assert (split.negatives, split.eval_negatives, split.seed) == (7, "category", 3)
    assert config.max_behaviours == 100
    assert config.text_encoder == "hashing:32" and str(config.cache_dir) == "vectors"


@pytest.mark.parametrize(
    "source", ["ml-100k", "recbole", "tables", "sequences", "kuaisar", "amazon", "lifelong"]
)
def test_every_source_option_is_an_argument_of_its_prepare_command_with_the_same_default(source: str) -> None:
    """`seminar prepare SOURCE` is generated from the source's options dataclass: every field is an
    argument, its default is the field's, and a list option takes a comma list."""
    from dataclasses import MISSING, fields

    from seminar.cli import build_parser
    from seminar.data.sources.options import SOURCE_OPTIONS

    cls = SOURCE_OPTIONS[source]
    required = {
        f.name: Path(f"/x/{f.name}")
        for f in fields(cls)
        if f.default is MISSING and f.default_factory is MISSING
    }
    argv = ["prepare", source, "--out", "d"]
    for f in fields(cls):
        if f.name in required:
            argv += (
                [str(required[f.name])]
                if f.metadata.get("positional")
                else [f"--{f.name.replace('_', '-')}", str(required[f.name])]
            )
    args = build_parser().parse_args(argv)
    from_args = cls(**{f.name: getattr(args, f.name) for f in fields(cls)})
    assert from_args == cls(**required)
    if source == "tables":
        args = build_parser().parse_args([*argv, "--attribute-cols", "genre, year", "--time-col", "none"])
        assert args.attribute_cols == ["genre", "year"] and args.time_col == "none"
    if source == "lifelong":
        args = build_parser().parse_args([*argv, "--broad-query-share", "0.5", "--fine-topics", "16"])
        assert (args.broad_query_share, args.fine_topics) == (0.5, 16)


def test_pq_flags_are_generated_from_pq_gsu_config_and_bounded_by_it() -> None:
    from seminar.cli import build_parser
    from seminar.cli_types import pq_config_from_args
    from seminar.errors import ConfigError
    from seminar.retrieval.gsu import PQGsuConfig

    base = ["evaluate", "--data", "d", "--run", "r"]
    assert pq_config_from_args(build_parser().parse_args(base)) == PQGsuConfig()
    args = build_parser().parse_args([*base, "--pq-sub", "8", "--rerank-factor", "0", "--pq-iter", "3"])
    assert pq_config_from_args(args) == PQGsuConfig(n_sub=8, rerank_factor=0, n_iter=3)
    with pytest.raises(ConfigError, match="--pq-centroids: must be ≥ 1"):
        pq_config_from_args(build_parser().parse_args([*base, "--pq-centroids", "0"]))
