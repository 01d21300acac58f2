"""Saving and restoring the service's histories: a restart keeps what clients appended."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from seminar.cli import main
from seminar.serving import ScoringService, StateError, load_histories, save_histories
from seminar.serving.state import FORMAT
from tests.serving.conftest import Trained
from tests.serving.test_service import append_ids, synthetic_history


def filled(trained: Trained) -> ScoringService:
    service = ScoringService.load(trained.export)
    for user, n in ((0, 120), (3, 1), (5, 40)):
        append_ids(service, trained, user, *synthetic_history(trained, n, seed=user))
    return service


def test_restored_service_holds_the_same_histories_and_scores(trained: Trained, tmp_path: Path) -> None:
    before = filled(trained)
    assert save_histories(before, tmp_path / "state.safetensors") == 3
    after = ScoringService.load(trained.export)
    assert load_histories(after, tmp_path / "state.safetensors") == 3
    ids = trained.ids
    for user in (0, 3, 5, 7):
        one, two = before.history(ids.users[user]), after.history(ids.users[user])
        for name in ("codes", "items", "queries", "timestamps"):
            assert np.array_equal(getattr(one, name), getattr(two, name)), (user, name)
    targets = [ids.items[i] for i in (3, 4, 5)]
    assert before.score_many(ids.users[0], targets, ids.queries[2]) == after.score_many(
        ids.users[0], targets, ids.queries[2]
    )
    # appends continue after the restored history, and time order still holds across the restart
    last = int(after.history(ids.users[5]).timestamps[-1])
    assert after.append(ids.users[5], [{"item": ids.items[1], "timestamp": last}]) == 41
    with pytest.raises(ValueError, match="earlier than the latest stored behaviour"):
        after.append(ids.users[5], [{"item": ids.items[1], "timestamp": last - 1}])
    empty = ScoringService.load(trained.export)
    assert save_histories(empty, tmp_path / "empty.safetensors") == 0
    assert load_histories(ScoringService.load(trained.export), tmp_path / "empty.safetensors") == 0


def test_bad_snapshots_are_refused_and_nothing_is_stored(trained: Trained, tmp_path: Path) -> None:
    good = tmp_path / "state.safetensors"
    save_histories(filled(trained), good)
    arrays = load_file(str(good))

    with safe_open(str(good), "numpy") as handle:
        saved_metadata = dict(handle.metadata())

    def variant(name: str, metadata: dict | None = None, **changes: np.ndarray) -> Path:
        path = tmp_path / f"{name}.safetensors"
        save_file({**arrays, **changes}, str(path), metadata={**saved_metadata, **(metadata or {})})
        return path

    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:-20])
    stamps = arrays["timestamps"].copy()
    stamps[5] = stamps[4] - 1  # user 0 goes back in time
    cases = {
        truncated: "not a readable history snapshot",
        variant("other", {"export": "0" * 64}): "saved from another export",
        variant("format", {"format": "other/1"}): f"format 'other/1', expected '{FORMAT}'",
        variant("items", items=arrays["items"] + 10_000): "outside this export's maps",
        variant("users", users=arrays["users"] * 0): "user rows must be distinct",
        variant("time", timestamps=stamps): "go back in time",
        variant("offsets", offsets=arrays["offsets"][:-1]): "offsets do not describe",
        variant("dtype", items=arrays["items"].astype(np.int64)): "array 'items' missing or not",
    }
    for path, message in cases.items():
        service = ScoringService.load(trained.export)
        with pytest.raises(StateError, match=message):
            load_histories(service, path)
        assert service.stats()["users"] == 0, path  # all or nothing
    busy = filled(trained)
    with pytest.raises(StateError, match="already holds histories"):
        load_histories(busy, good)


def test_serve_restores_then_saves_its_state(
    trained: Trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import uvicorn

    state = tmp_path / "state.safetensors"
    save_histories(filled(trained), state)
    seen: list[int] = []

    def run(app, **kwargs) -> None:  # the server's lifetime: one more behaviour arrives, then a stop
        from fastapi.testclient import TestClient

        service = app.state.service
        seen.append(service.stats()["users"])
        ids = trained.ids
        last = int(service.history(ids.users[3]).timestamps[-1])
        with TestClient(app) as client:  # leaving it runs the app's shutdown, as a graceful stop does
            body = {"behaviours": [{"item": ids.items[2], "timestamp": last + 5}]}
            assert client.post(f"/users/{ids.users[3]}/behaviours", json=body).json()["length"] == 2

    monkeypatch.setattr(uvicorn, "run", run)
    assert main(["serve", str(trained.export), "--threads", "0", "--state", str(state)]) == 0
    assert seen == [3]
    err = capsys.readouterr().err
    assert "restored the histories of 3 users" in err and "saved the histories of 3 users" in err
    again = ScoringService.load(trained.export)
    load_histories(again, state)
    assert len(again.history(trained.ids.users[3])) == 2  # the appended behaviour was saved
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"garbage")
    assert main(["serve", str(trained.export), "--threads", "0", "--state", str(garbage)]) == 2
    assert "not a readable history snapshot" in capsys.readouterr().err
