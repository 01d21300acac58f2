"""Trainer and checkpoints on a tiny model and dataset: files, early stopping, exact resumption, DDP."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from seminar.data.build import BuildConfig, build_dataset
from seminar.data.schema import SeminarDataset, load_dataset
from seminar.data.sources.synthetic import SyntheticConfig, generate_synthetic
from seminar.data.split import SplitConfig
from seminar.train import CheckpointError, StaleRun, TrainConfig, Trainer, check_identities, verify_checkpoint
from seminar.train import checkpoint as ckpt
from seminar.train.checkpoint import capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint
from tests.train.ddp_worker import SimulatedCrash, TinyModel

WORKER = Path(__file__).with_name("ddp_worker.py")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("train") / "d"
    tables = generate_synthetic(SyntheticConfig(users=40, items=300, mean_length=30))
    build_dataset(
        tables, root, BuildConfig(text_encoder="none", progress=False, split=SplitConfig(negatives=20))
    )
    return root


@pytest.fixture(scope="module")
def ds(data_dir: Path) -> SeminarDataset:
    return load_dataset(data_dir)


def make_config(out_dir: Path, **overrides) -> TrainConfig:
    base = {
        "epochs": 3,
        "batch_size": 64,
        "eval_batch_size": 16,
        "max_length": 20,
        "train_negatives": 4,
        "progress": False,
        "early_stopping_patience": None,
        "out_dir": str(out_dir),
        "device": "cpu",
    }
    return TrainConfig(**{**base, **overrides})


def weights_of(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / ckpt.WEIGHTS))


def same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def records(out_dir: Path) -> list[dict]:
    lines = (out_dir / "metrics.jsonl").read_text().splitlines()
    out = [json.loads(line) for line in lines]
    for rec in out:
        rec.pop("seconds", None)
    return out


def scripted_validation(trainer: Trainer, values: list[float]) -> None:
    """Make validation return ``values`` in turn (test evaluation stays real)."""
    real = trainer.evaluate
    remaining = list(values)

    def evaluate(stage: str = "test", mode=None, *, record: bool = False) -> dict[str, float]:
        if stage == "valid":
            return {"ndcg@10": remaining.pop(0)}
        return real(stage, mode, record=record)

    trainer.evaluate = evaluate  # type: ignore[method-assign]


def test_fit_trains_logs_and_checkpoints(ds: SeminarDataset, tmp_path: Path) -> None:
    model = TinyModel(ds.n_items)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    summary = Trainer(model, ds, make_config(tmp_path / "run", epochs=2)).fit()
    recs = records(tmp_path / "run")
    assert [r["stage"] for r in recs] == ["epoch", "epoch", "test"]
    assert recs[1]["train"]["loss"] < recs[0]["train"]["loss"]
    assert set(recs[0]["train"]) == {"loss", "pos", "neg"}
    assert recs[0]["valid"]["users"] == ds.n_users
    check_identities(summary["test"])
    assert summary["test"] == recs[-1]["metrics"]
    assert summary["epochs_run"] == 2 and summary["monitor"] == "ndcg@10"
    for name in ("last", "best"):
        verify_checkpoint(tmp_path / "run" / name)
    assert not same_tensors(before, model.state_dict())
    assert same_tensors(model.state_dict(), weights_of(tmp_path / "run" / "best"))


def test_evaluate_every_mode_with_checked_identities(ds: SeminarDataset, tmp_path: Path) -> None:
    trainer = Trainer(TinyModel(ds.n_items), ds, make_config(tmp_path / "run"))
    trainer.model.train()
    for mode in ("recommendation", "search", "pair"):
        metrics = trainer.evaluate("test", mode)
        check_identities(metrics)
        assert 0 < metrics["users"] <= ds.n_users
        assert metrics == trainer.evaluate("test", mode)
    assert trainer.model.training
    assert trainer.evaluate("valid")["users"] == ds.n_users


def test_evaluation_without_a_trainer_equals_the_trainers(ds: SeminarDataset, tmp_path: Path) -> None:
    """rank_held_out (what `seminar evaluate` calls) gives the trainer's numbers, any batch size,
    and refuses a model that cannot score candidates."""
    from seminar.train.evaluation import EvalSettings, rank_held_out

    model = TinyModel(ds.n_items)
    trainer = Trainer(model, ds, make_config(tmp_path / "run"))
    for batch in (1, 7, 256):
        settings = EvalSettings(max_length=trainer.config.max_length, batch_size=batch)
        metrics = rank_held_out(model, ds, "test", "search", settings)
        assert metrics == pytest.approx(trainer.evaluate("test", "search"))
    with pytest.raises(TypeError, match="score_candidates"):
        rank_held_out(nn.Linear(2, 2), ds, "test", "search", EvalSettings(max_length=10))


def test_checkpoint_round_trip(ds: SeminarDataset, tmp_path: Path) -> None:
    model = TinyModel(ds.n_items, seed=3)
    state = {
        "progress": {"epoch": 2, "best_value": 0.25},
        "tensor": torch.arange(5),
        "rng": capture_rng_state(),
    }
    config = {"train": {"lr": 0.001}, "note": "x"}
    save_checkpoint(tmp_path / "last", model, state, config)
    expected = [torch.rand(3), torch.randn(2)]
    other = TinyModel(ds.n_items, seed=4)
    loaded_state, loaded_config = load_checkpoint(tmp_path / "last", other)
    assert same_tensors(model.state_dict(), other.state_dict())
    assert loaded_config == config
    assert loaded_state["progress"] == state["progress"]
    assert torch.equal(loaded_state["tensor"], state["tensor"])
    restore_rng_state(loaded_state["rng"])
    assert torch.equal(torch.rand(3), expected[0]) and torch.equal(torch.randn(2), expected[1])
    save_checkpoint(tmp_path / "last", other, state, {"second": True})
    assert load_checkpoint(tmp_path / "last", model)[1] == {"second": True}
    assert not list(tmp_path.glob(".last.*"))
    bigger = TinyModel(ds.n_items + 5, seed=3)  # another dataset: the embedding has more rows
    with pytest.raises(ValueError, match=r"last: the saved weights do not fit this model"):
        load_checkpoint(tmp_path / "last", bigger)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: _truncate(d / ckpt.WEIGHTS), "truncated"),
        (lambda d: _flip_byte(d / ckpt.WEIGHTS), "sha256"),
        (lambda d: _flip_byte(d / ckpt.STATE), "sha256"),
        (lambda d: (d / ckpt.CONFIG).write_text('{"train": {"lr": 1}}\n'), "bytes|sha256"),
        (lambda d: (d / ckpt.MARKER).unlink(), "never finished"),
        (lambda d: (d / ckpt.MARKER).write_text("{not json"), "unreadable"),
        (lambda d: (d / ckpt.STATE).unlink(), "missing"),
        (lambda d: __import__("shutil").rmtree(d), "no checkpoint"),
    ],
    ids=[
        "truncated",
        "weights-byte",
        "state-byte",
        "config-edit",
        "no-marker",
        "bad-marker",
        "no-state",
        "gone",
    ],
)
def test_damaged_checkpoint_is_refused(ds: SeminarDataset, tmp_path: Path, damage, message: str) -> None:
    save_checkpoint(tmp_path / "ck", TinyModel(ds.n_items, seed=1), {"epoch": 1}, {"a": 1})
    damage(tmp_path / "ck")
    model = TinyModel(ds.n_items, seed=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(tmp_path / "ck", model)
    assert same_tensors(before, model.state_dict())


def test_crash_while_saving_keeps_the_previous_checkpoint(
    ds: SeminarDataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = TinyModel(ds.n_items, seed=1)
    save_checkpoint(tmp_path / "last", first, {"epoch": 1}, {"v": 1})

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "write_json_atomic", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path / "last", TinyModel(ds.n_items, seed=2), {"epoch": 2}, {"v": 2})
    monkeypatch.undo()
    model = TinyModel(ds.n_items, seed=3)
    state, config = load_checkpoint(tmp_path / "last", model)
    assert state == {"epoch": 1} and config == {"v": 1}
    assert same_tensors(first.state_dict(), model.state_dict())


def test_crash_between_the_renames_of_a_swap_falls_back_to_the_previous_checkpoint(
    ds: SeminarDataset, tmp_path: Path
) -> None:
    model = TinyModel(ds.n_items, seed=1)
    save_checkpoint(tmp_path / "last", model, {"epoch": 1}, {"v": 1})
    (tmp_path / "last").rename(tmp_path / ".last.old-123")  # the old one moved aside, the new one not yet in
    other = TinyModel(ds.n_items, seed=2)
    assert load_checkpoint(tmp_path / "last", other)[0] == {"epoch": 1}
    assert same_tensors(model.state_dict(), other.state_dict())


def test_best_is_not_overwritten_by_a_worse_last(ds: SeminarDataset, tmp_path: Path) -> None:
    trainer = Trainer(TinyModel(ds.n_items), ds, make_config(tmp_path / "run"))
    scripted_validation(trainer, [0.5, 0.3, 0.2])
    summary = trainer.fit()
    run = tmp_path / "run"
    assert summary["best_epoch"] == 1 and summary["best_value"] == 0.5
    best_state = load_checkpoint(run / "best", TinyModel(ds.n_items))[0]
    last_state = load_checkpoint(run / "last", TinyModel(ds.n_items))[0]
    assert best_state["progress"]["epoch"] == 1 and last_state["progress"]["epoch"] == 3
    assert not same_tensors(weights_of(run / "best"), weights_of(run / "last"))
    assert same_tensors(trainer.model.state_dict(), weights_of(run / "best"))
    # The best checkpoint holds exactly the weights an independent one-epoch run ends with.
    Trainer(TinyModel(ds.n_items), ds, make_config(tmp_path / "one", epochs=1)).fit()
    assert same_tensors(weights_of(run / "best"), weights_of(tmp_path / "one" / "last"))
    assert [r["improved"] for r in records(run) if r["stage"] == "epoch"] == [True, False, False]


@pytest.mark.parametrize(
    ("values", "patience", "epochs_run", "best_epoch"),
    [
        ([0.5, 0.4, 0.45, 0.3, 0.9], 2, 3, 1),
        ([0.5, 0.4, 0.6, 0.5, 0.55, 0.9], 2, 5, 3),
        ([0.1, 0.2, 0.3], 1, 3, 3),
    ],
)
def test_early_stopping(
    ds: SeminarDataset, tmp_path: Path, values: list[float], patience: int, epochs_run: int, best_epoch: int
) -> None:
    config = make_config(tmp_path / "run", epochs=len(values), early_stopping_patience=patience)
    trainer = Trainer(TinyModel(ds.n_items), ds, config)
    scripted_validation(trainer, values)
    summary = trainer.fit()
    assert summary["epochs_run"] == epochs_run and summary["best_epoch"] == best_epoch
    assert summary["stopped_early"] == (epochs_run < len(values))
    assert len([r for r in records(tmp_path / "run") if r["stage"] == "epoch"]) == epochs_run


def test_a_run_stopped_early_goes_on_when_resumed_with_more_patience(
    ds: SeminarDataset, tmp_path: Path
) -> None:
    """Resumed with a larger patience, a run stopped early continues and ends as a run given that
    patience from the start (the same epochs, the same best, the same weights)."""
    values = [0.5, 0.4, 0.45, 0.6, 0.3]
    straight = Trainer(
        TinyModel(ds.n_items), ds, make_config(tmp_path / "a", epochs=5, early_stopping_patience=3)
    )
    scripted_validation(straight, values)
    expected = straight.fit()
    assert expected["epochs_run"] == 5 and expected["best_epoch"] == 4

    stopped = Trainer(
        TinyModel(ds.n_items), ds, make_config(tmp_path / "b", epochs=5, early_stopping_patience=2)
    )
    scripted_validation(stopped, values)
    assert stopped.fit()["stopped_early"]  # after epoch 3
    resumed = Trainer(
        TinyModel(ds.n_items), ds, make_config(tmp_path / "b", epochs=5, early_stopping_patience=3)
    )
    scripted_validation(resumed, values[3:])
    got = resumed.fit(resume=True)
    assert got["epochs_run"] == 5 and got["best_epoch"] == 4 and not got["stopped_early"]
    for name in ("last", "best"):
        assert same_tensors(weights_of(tmp_path / "a" / name), weights_of(tmp_path / "b" / name))


@pytest.mark.parametrize("interruption", ["crash-mid-epoch-2", "stopped-after-epoch-1"])
def test_resumed_run_equals_uninterrupted_run_bitwise(
    ds: SeminarDataset, tmp_path: Path, interruption: str
) -> None:
    reference = TinyModel(ds.n_items)
    expected = Trainer(reference, ds, make_config(tmp_path / "a")).fit()

    b = tmp_path / "b"
    crashing = TinyModel(ds.n_items)
    if interruption == "crash-mid-epoch-2":
        trainer = Trainer(crashing, ds, make_config(b))
        steps_per_epoch = math.ceil(len(trainer.train_samples) / 64)
        crashing.fail_after = steps_per_epoch + 3
        with pytest.raises(SimulatedCrash):
            trainer.fit()
    else:
        Trainer(crashing, ds, make_config(b, epochs=1)).fit()
    assert len([r for r in records(b) if r["stage"] == "epoch"]) == 1

    resumed = TinyModel(ds.n_items, seed=123)  # different initial weights: everything must come from last/
    got = Trainer(resumed, ds, make_config(b)).fit(resume=True)
    assert same_tensors(resumed.state_dict(), reference.state_dict())
    for name in ("last", "best"):
        assert same_tensors(weights_of(tmp_path / "a" / name), weights_of(b / name))
    assert records(b) == records(tmp_path / "a")
    assert got == expected


def test_resume_checks(ds: SeminarDataset, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint"):
        Trainer(TinyModel(ds.n_items), ds, make_config(tmp_path / "run")).fit(resume=True)
    Trainer(TinyModel(ds.n_items), ds, make_config(tmp_path / "run", epochs=1)).fit()
    with pytest.raises(FileExistsError, match="already holds a run"):
        Trainer(TinyModel(ds.n_items), ds, make_config(tmp_path / "run", epochs=1)).fit()
    with pytest.raises(ValueError, match="lr"):
        Trainer(TinyModel(ds.n_items), ds, make_config(tmp_path / "run", lr=0.01)).fit(resume=True)
    # A finished run resumed again trains nothing and reports the same.
    again = Trainer(TinyModel(ds.n_items, seed=5), ds, make_config(tmp_path / "run", epochs=1)).fit(
        resume=True
    )
    assert again["epochs_run"] == 1 and again["global_step"] > 0
    assert [r["stage"] for r in records(tmp_path / "run")] == ["epoch", "test"]


@dataclass
class TinyConfig:
    width: int = 8


def test_a_run_for_another_dataset_or_model_config_is_stale(ds: SeminarDataset, tmp_path: Path) -> None:
    model = TinyModel(ds.n_items)
    model.config = TinyConfig()
    Trainer(model, ds, make_config(tmp_path / "run", epochs=1)).fit()
    other_data = replace(ds, manifest={**ds.manifest, "params": {"note": "rebuilt from other files"}})
    with pytest.raises(StaleRun, match="is not the dataset the run was trained on"):
        Trainer(TinyModel(ds.n_items), other_data, make_config(tmp_path / "run", epochs=1)).fit(resume=True)
    wider = TinyModel(ds.n_items)
    wider.config = TinyConfig(width=16)
    with pytest.raises(StaleRun, match=r"model width: 8 -> 16"):
        Trainer(wider, ds, make_config(tmp_path / "run", epochs=1)).fit(resume=True)
    same_but_timed = replace(ds, manifest={**ds.manifest, "build_seconds": 123.0})
    twin = TinyModel(ds.n_items)
    twin.config = TinyConfig()
    resumed = Trainer(twin, same_but_timed, make_config(tmp_path / "run", epochs=1)).fit(resume=True)
    assert resumed["epochs_run"] == 1  # a rebuild of the same inputs is the same dataset


@dataclass
class TinyConfigWithDepth:
    """TinyConfig after a field was added: ``from_dict`` reads a run saved before it as depth 1."""

    width: int = 8
    depth: int = 1

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TinyConfigWithDepth:
        return cls(**values)


def test_a_field_added_since_the_run_was_saved_is_not_a_change(ds: SeminarDataset, tmp_path: Path) -> None:
    model = TinyModel(ds.n_items)
    model.config = TinyConfig()
    Trainer(model, ds, make_config(tmp_path / "run", epochs=1)).fit()
    deeper = TinyModel(ds.n_items)
    deeper.config = TinyConfigWithDepth(depth=2)
    with pytest.raises(StaleRun, match=r"model depth: 1 -> 2"):
        Trainer(deeper, ds, make_config(tmp_path / "run", epochs=1)).fit(resume=True)
    same = TinyModel(ds.n_items)
    same.config = TinyConfigWithDepth()
    resumed = Trainer(same, ds, make_config(tmp_path / "run", epochs=1)).fit(resume=True)
    assert resumed["epochs_run"] == 1


def test_resume_or_restart_moves_a_stale_run_aside(ds: SeminarDataset, tmp_path: Path) -> None:
    from seminar.experiment import resume_or_restart

    run = tmp_path / "run"

    def fit(data: SeminarDataset):
        config = make_config(run, epochs=1)
        return lambda resume: Trainer(TinyModel(ds.n_items), data, config).fit(resume=resume)

    resume_or_restart(run, fit(ds))
    first = (run / "metrics.jsonl").read_text()
    resume_or_restart(run, fit(ds))  # up to date: resumed, nothing trained again
    assert (run / "metrics.jsonl").read_text() == first and not (tmp_path / "run.stale").exists()
    other = replace(ds, manifest={**ds.manifest, "params": {"note": "another build"}})
    resume_or_restart(run, fit(other))
    assert (tmp_path / "run.stale" / "metrics.jsonl").read_text() == first
    assert [r["stage"] for r in records(run)] == ["epoch", "test"]


def test_resume_or_restart_starts_again_a_run_killed_before_its_first_checkpoint(
    ds: SeminarDataset, tmp_path: Path
) -> None:
    """As the demo resumes its runs: metrics line and best/ of epoch 1 written, last/ not."""
    from seminar.experiment import resume_or_restart

    def fit(run: Path):
        return lambda resume: Trainer(TinyModel(ds.n_items), ds, make_config(run, epochs=1)).fit(
            resume=resume
        )

    resume_or_restart(tmp_path / "a", fit(tmp_path / "a"))
    b = tmp_path / "b"
    resume_or_restart(b, fit(b))
    __import__("shutil").rmtree(b / "last")
    resume_or_restart(b, fit(b))  # would raise "already holds a run" if started fresh
    assert records(b) == records(tmp_path / "a") and (b / "last").exists()


def test_a_fine_tuning_restarted_on_resume_starts_from_the_pretrained_psu_again(
    ds: SeminarDataset, tmp_path: Path
) -> None:
    """`train --pretrained P --resume` on a run killed before its first checkpoint: nothing to resume,
    so the ranker starts again from the PSU's embeddings, exactly as the first attempt did."""
    from seminar.experiment import finetune, pretrain
    from seminar.models.psu import PretrainConfig
    from seminar.models.ranker import RankerConfig

    pretrain(ds, tmp_path / "psu", PretrainConfig(dim=8, heads=2), make_config(tmp_path / "psu", epochs=1))
    ranker = RankerConfig(model="seminar", dim=8, heads=2, top_k=4, fusion_lambda=0.5)

    def attempt(run: Path, resume: bool) -> dict:
        return finetune(
            ds, run, ranker, make_config(run, epochs=1), pretrained=tmp_path / "psu", resume=resume
        )

    expected = attempt(tmp_path / "a", resume=False)
    b = tmp_path / "b"
    attempt(b, resume=False)
    __import__("shutil").rmtree(b / "last")
    assert attempt(b, resume=True) == expected
    assert records(b) == records(tmp_path / "a")


class NaNLoss(TinyModel):
    def forward(self, batch):
        loss, parts = super().forward(batch)
        return loss * float("nan"), parts


class LossOnly(nn.Module):
    """A pretraining-style model: a loss, no candidate scoring."""

    def __init__(self, n_items: int) -> None:
        super().__init__()
        self.inner = TinyModel(n_items, dropout=0.0)

    def forward(self, batch):
        return self.inner(batch)


def test_non_finite_loss_raises(ds: SeminarDataset, tmp_path: Path) -> None:
    with pytest.raises(FloatingPointError, match="non-finite"):
        Trainer(NaNLoss(ds.n_items), ds, make_config(tmp_path / "run", log_every=5)).fit()


def test_model_without_scorer_is_monitored_by_training_loss(ds: SeminarDataset, tmp_path: Path) -> None:
    trainer = Trainer(LossOnly(ds.n_items), ds, make_config(tmp_path / "run", lr=0.05))
    summary = trainer.fit()
    epochs = [r for r in records(tmp_path / "run") if r["stage"] == "epoch"]
    losses = [r["train"]["loss"] for r in epochs]
    assert summary["monitor"] == "loss" and summary["test"] == {}
    assert summary["best_value"] == min(losses)
    assert summary["best_epoch"] == losses.index(min(losses)) + 1
    assert all(r["valid"] == {} for r in epochs)
    with pytest.raises(TypeError, match="score_candidates"):
        trainer.evaluate()


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="monitor"):
        TrainConfig(monitor="ndcg@7")
    with pytest.raises(ValueError, match="eval_mode"):
        TrainConfig(eval_mode="browse")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="patience"):
        TrainConfig(early_stopping_patience=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fit_on_cuda_with_bf16(ds: SeminarDataset, tmp_path: Path) -> None:
    model = TinyModel(ds.n_items)
    summary = Trainer(model, ds, make_config(tmp_path / "run", epochs=2, device="cuda", bf16=True)).fit()
    check_identities(summary["test"])
    assert all(torch.isfinite(v).all() for v in model.state_dict().values())
    assert next(model.parameters()).device.type == "cuda"
    resumed = TinyModel(ds.n_items, seed=9)
    again = Trainer(resumed, ds, make_config(tmp_path / "run", epochs=3, device="cuda")).fit(resume=True)
    assert again["epochs_run"] == 3


def test_ddp_two_processes_on_gloo(data_dir: Path, ds: SeminarDataset, tmp_path: Path) -> None:
    torchrun = Path(sys.executable).parent / "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    cmd = [
        str(torchrun),
        "--standalone",
        "--nproc_per_node=2",
        str(WORKER),
        str(data_dir),
        str(tmp_path),
        "2",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in reports] == [2, 2]
    assert reports[0]["summary"] == reports[1]["summary"]
    assert reports[0]["valid"] == reports[1]["valid"]
    assert reports[0]["weights"] == reports[1]["weights"]
    assert reports[0]["valid"]["users"] == ds.n_users  # shards cover every user exactly once
    run = tmp_path / "run"
    for name in ("last", "best"):
        verify_checkpoint(run / name)
    assert json.loads((run / "last" / ckpt.CONFIG).read_text())["world_size"] == 2
    assert [r["stage"] for r in records(run)] == ["epoch", "epoch", "test"]  # rank 0 alone wrote
    best = weights_of(run / "best")
    assert {k: v.sum().item() for k, v in best.items()} == reports[0]["weights"]


def test_a_run_killed_while_writing_its_first_checkpoints_restarts_on_resume(
    ds: SeminarDataset, tmp_path: Path
) -> None:
    """metrics.jsonl and best/ of epoch 1 written, last/ not: --resume starts the run again."""
    reference = TinyModel(ds.n_items)
    expected = Trainer(reference, ds, make_config(tmp_path / "a")).fit()

    b = tmp_path / "b"
    Trainer(TinyModel(ds.n_items), ds, make_config(b, epochs=1)).fit()
    __import__("shutil").rmtree(b / "last")  # killed after best/ and the metrics line, before last/
    with pytest.raises(FileExistsError, match="already holds a run"):
        Trainer(TinyModel(ds.n_items), ds, make_config(b)).fit()
    resumed = TinyModel(ds.n_items)
    got = Trainer(resumed, ds, make_config(b)).fit(resume=True)
    assert same_tensors(resumed.state_dict(), reference.state_dict())
    assert records(b) == records(tmp_path / "a")
    assert got == expected
