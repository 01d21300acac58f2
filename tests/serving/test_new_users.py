"""Users the model was not trained on: appended, scored (no id embedding, no profile: the ranker's
user index NEW_USER) exactly as the plain ranker scores them, and kept across a restart."""

from __future__ import annotations

import numpy as np
import torch
from fastapi.testclient import TestClient

from seminar.serving import ScoringService, load_histories, save_histories
from seminar.serving.app import create_app
from seminar.serving.ids import NEW_USER
from tests.serving.conftest import Trained, reference_batch, reference_positions, reference_ranker


def history_of(trained: Trained, user: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ds = trained.ds
    s, e = int(ds.offsets[user]), int(ds.offsets[user + 1])
    return np.asarray(ds.items[s:e]), np.asarray(ds.queries[s:e]), np.asarray(ds.timestamps[s:e])


def append(service: ScoringService, trained: Trained, raw_user: str, history) -> int:
    items, queries, stamps = history
    ids = trained.ids
    return service.append_columns(
        raw_user, [ids.items[i] for i in items], [ids.queries[q] for q in queries], stamps
    )


def test_a_new_user_is_scored_like_the_plain_ranker_with_no_user_vector(trained: Trained) -> None:
    service = ScoringService.load(trained.export)
    history = history_of(trained, 3)
    assert append(service, trained, "newcomer", history) == len(history[0])
    assert service.ids.user_row("newcomer") == len(trained.ids.users)  # a row after the training users
    targets = np.arange(1, 9)
    got = service.score_many("newcomer", [trained.ids.items[t] for t in targets], None)

    ranker = reference_ranker(trained)
    items, queries, stamps = history
    batch = reference_batch(NEW_USER, items, queries, stamps, targets, 1, int(stamps[-1]))
    expected = ranker.score_candidates(batch)[0]
    kept = reference_positions(ranker, batch)
    same = torch.tensor(
        [sorted(b.position for b in r.behaviours) == list(k) for r, k in zip(got, kept, strict=True)]
    )
    assert same.any()
    logits = torch.tensor([r.logit for r in got])
    assert torch.allclose(logits[same], expected[same], rtol=1e-4, atol=1e-5)
    # the same history under the training user's own row scores differently: the id embedding counts
    own = ScoringService.load(trained.export)
    append(own, trained, trained.ids.users[3], history)
    mine = own.score_many(trained.ids.users[3], [trained.ids.items[t] for t in targets])
    assert not np.allclose([r.logit for r in mine], logits.numpy())


def test_user_vector_of_a_new_user_is_zero(trained: Trained) -> None:
    ranker = reference_ranker(trained)
    with torch.no_grad():
        vectors = ranker.user_vector(torch.tensor([0, NEW_USER, 2]))
    assert torch.count_nonzero(vectors[1]) == 0
    assert torch.equal(vectors[[0, 2]], ranker.user_vector(torch.tensor([0, 2])))


def test_new_users_survive_a_restart(trained: Trained, tmp_path) -> None:
    before = ScoringService.load(trained.export)
    append(before, trained, "first-new", history_of(trained, 1))
    append(before, trained, trained.ids.users[0], history_of(trained, 0))
    append(before, trained, "second-new", history_of(trained, 2))
    path = tmp_path / "state.safetensors"
    assert save_histories(before, path) == 3
    after = ScoringService.load(trained.export)
    assert load_histories(after, path) == 3
    assert after.ids.new_users == ["first-new", "second-new"]
    for user in ("first-new", "second-new", trained.ids.users[0]):
        a, b = before.history(user), after.history(user)
        assert np.array_equal(a.items, b.items) and np.array_equal(a.timestamps, b.timestamps)
    item = trained.ids.items[5]
    assert before.score("second-new", item) == after.score("second-new", item)


def test_http_appends_and_scores_a_new_user(trained: Trained) -> None:
    client = TestClient(create_app(ScoringService.load(trained.export)), raise_server_exceptions=True)
    assert client.get("/users/someone-new").json()["length"] == 0
    behaviours = [{"item": trained.ids.items[i], "timestamp": 100 + i} for i in range(1, 6)]
    response = client.post("/users/someone-new/behaviours", json={"behaviours": behaviours})
    assert response.status_code == 200 and response.json()["length"] == 5
    scored = client.post("/score", json={"user": "someone-new", "items": [trained.ids.items[7]]})
    assert scored.status_code == 200, scored.text
    assert 0.0 < scored.json()["results"][0]["probability"] < 1.0
