"""Serving limits: request body size, /score cost, per-user history cap, and a state file that is
checked at start and saved periodically (docs/serving.md, "Limits and security")."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from seminar.cli import main
from seminar.serving import ScoringService, load_histories
from seminar.serving.app import Limits, create_app
from seminar.serving.store import MIN_CAPACITY, SequenceStore, UserSequence, dropped_by_last_extend
from tests.serving.conftest import TOP_K, Trained
from tests.serving.test_http import behaviours, error_of

WIDTH = 3


# ---------------------------------------------------------------------------------------- store


def rows(start: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """n behaviours numbered start, start + 1, ...: every column carries the number."""
    x = np.arange(start, start + n)
    return np.repeat((x % 256).astype(np.uint8)[:, None], WIDTH, 1), x.astype(np.int32), x.astype(np.int32), x


def test_capped_sequence_keeps_the_newest_and_reports_what_it_dropped() -> None:
    sequence = UserSequence(WIDTH, max_length=10)
    assert sequence.extend(*rows(0, 6)) == 0 and dropped_by_last_extend() == 0
    assert sequence.extend(*rows(6, 7)) == 3 and dropped_by_last_extend() == 3
    view = sequence.snapshot()
    assert view.timestamps.tolist() == list(range(3, 13)) and view.items.tolist() == list(range(3, 13))
    assert view.codes.flags.c_contiguous and view.codes[:, 0].tolist() == list(range(3, 13))
    assert sequence.last_timestamp == 12
    # one append longer than the cap: the stored ten and the append's oldest five give way
    assert sequence.extend(*rows(13, 15)) == 15
    assert sequence.snapshot().timestamps.tolist() == list(range(18, 28))
    assert sequence.used_bytes == 10 * (WIDTH + 16)


def test_uncapped_sequence_is_unchanged() -> None:
    sequence = UserSequence(WIDTH)
    assert sequence.extend(*rows(0, 1000)) == 0
    assert sequence.capacity == 1000  # one bulk append allocates exactly
    sequence.extend(*rows(1000, 1))
    assert sequence.capacity == 1500 and len(sequence.snapshot()) == 1001


def test_capped_appends_stay_amortised_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    cap, n = 1000, 20_000
    copied = [0]
    relocate = UserSequence._relocate

    def counting(self: UserSequence, start: int, keep: int, needed: int) -> None:
        copied[0] += keep
        relocate(self, start, keep, needed)

    monkeypatch.setattr(UserSequence, "_relocate", counting)
    sequence = UserSequence(WIDTH, max_length=cap)
    dropped = 0
    for start in range(0, n, 7):
        dropped += sequence.extend(*rows(start, min(7, n - start)))
        assert sequence.capacity <= cap + max(cap // 2, MIN_CAPACITY)
    assert dropped == n - cap and sequence.length == cap
    assert sequence.snapshot().timestamps.tolist() == list(range(n - cap, n))
    assert copied[0] <= 3 * n  # each behaviour is copied a bounded number of times, not O(cap) per append


def test_snapshots_stay_valid_while_the_cap_drops_and_relocates() -> None:
    sequence = UserSequence(WIDTH, max_length=50)
    sequence.extend(*rows(0, 50))
    before = sequence.snapshot()
    expected = before.timestamps.copy()
    for start in range(50, 500, 3):
        sequence.extend(*rows(start, 3))
    assert np.array_equal(before.timestamps, expected) and np.array_equal(before.items, expected)
    assert sequence.snapshot().timestamps.tolist() == list(range(450, 500))


def test_store_cap_applies_to_new_and_stored_histories() -> None:
    store = SequenceStore(WIDTH)
    store.get_or_create(0).extend(*rows(0, 30))
    store.max_history = 8  # the stored history keeps its newest eight, and releases the rest
    held = store.get(0)
    assert held is not None and held.snapshot().timestamps.tolist() == list(range(22, 30))
    assert held.capacity == 8
    assert store.get_or_create(1).extend(*rows(0, 9)) == 1
    store.max_history = None
    assert store.get_or_create(1).extend(*rows(9, 5)) == 0 and store.total_behaviours() == 8 + 13
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="max_history"):
            store.max_history = bad  # type: ignore[assignment]


def test_dropped_count_is_per_thread() -> None:
    sequence = UserSequence(WIDTH, max_length=5)
    sequence.extend(*rows(0, 9))
    seen: list[int] = []
    thread = threading.Thread(target=lambda: seen.append(dropped_by_last_extend()))
    thread.start()
    thread.join()
    assert seen == [0] and dropped_by_last_extend() == 4


# ------------------------------------------------------------------------------------- HTTP


def make_client(trained: Trained, **limits: int) -> TestClient:
    return TestClient(create_app(ScoringService.load(trained.export), limits=Limits(**limits)))


def test_history_cap_over_http_drops_the_oldest(trained: Trained) -> None:
    client = make_client(trained)
    service: ScoringService = client.app.state.service
    service.store.max_history = 5
    user, url = trained.ids.users[2], f"/users/{trained.ids.users[2]}/behaviours"
    first = client.post(url, json={"behaviours": behaviours(trained, 3)}).json()
    assert first == {"user": user, "appended": 3, "length": 3, "dropped": 0}
    second = client.post(url, json={"behaviours": behaviours(trained, 4, start=200)}).json()
    assert second == {"user": user, "appended": 4, "length": 5, "dropped": 2}
    info = client.get(f"/users/{user}").json()
    assert info["length"] == 5 and info["first_timestamp"] == 102 and info["last_timestamp"] == 203
    scored = client.post("/score", json={"user": user, "items": [trained.ids.items[3]]}).json()
    assert all(0 <= b["position"] < 5 for b in scored["results"][0]["behaviours"])


def test_oversized_body_is_refused_before_the_handler(
    trained: Trained, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = make_client(trained, max_body_bytes=2000)
    service: ScoringService = client.app.state.service
    calls: list[Any] = []
    append = service.append_columns
    monkeypatch.setattr(service, "append_columns", lambda *a: calls.append(a) or append(*a))
    url = f"/users/{trained.ids.users[1]}/behaviours"
    small = client.post(url, json={"behaviours": behaviours(trained, 5)})
    assert small.status_code == 200 and len(calls) == 1
    big = {"behaviours": behaviours(trained, 200, start=1000)}
    message = error_of(client.post(url, json=big), 413)
    assert "request body too large" in message and "Content-Length" in message and "2000 bytes" in message
    # chunked (no Content-Length): counted as it arrives
    import json

    payload = json.dumps(big).encode()
    chunks = (payload[i : i + 500] for i in range(0, len(payload), 500))
    chunked = client.post(url, content=chunks, headers={"content-type": "application/json"})
    assert "request body too large" in error_of(chunked, 413)
    schema_too_big = client.post("/score", content=b"x" * 2001, headers={"content-type": "application/json"})
    assert error_of(schema_too_big, 413)
    assert len(calls) == 1 and client.get(f"/users/{trained.ids.users[1]}").json()["length"] == 5


def asgi_call(app: Any, headers: list[tuple[bytes, bytes]], chunks: list[bytes]) -> tuple[int, bytes, int]:
    """Run one POST through the ASGI app; returns (status, body, how many receive() calls were made)."""
    messages = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)
    ]
    reads = [0]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        reads[0] += 1
        if reads[0] > len(messages):
            return {"type": "http.disconnect"}
        return messages[reads[0] - 1]

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/score",
        "raw_path": b"/score",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), *headers],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 8000),
    }
    asyncio.run(app(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, body, reads[0]


def test_declared_length_is_refused_without_reading_the_body(trained: Trained) -> None:
    app = create_app(ScoringService.load(trained.export), limits=Limits(max_body_bytes=1000))
    status, body, reads = asgi_call(app, [(b"content-length", str(10**9).encode())], [b"{}"])
    assert status == 413 and b"Content-Length 1000000000" in body
    assert reads == 0  # not a byte of the body was read, let alone parsed


def test_chunked_body_stops_being_read_at_the_limit(trained: Trained) -> None:
    app = create_app(ScoringService.load(trained.export), limits=Limits(max_body_bytes=1000))
    status, body, reads = asgi_call(app, [], [b" " * 400] * 10)
    assert status == 413 and b"at least 1200 bytes received" in body
    assert reads == 3  # the fourth to tenth chunks were never read
    ok_status, _, _ = asgi_call(app, [], [b" " * 400, b"{}"])
    assert ok_status == 422  # under the limit: reaches validation as usual


def test_score_caps(trained: Trained) -> None:
    client = make_client(trained, max_score_rows=100, max_listed_behaviours=20)
    ids = trained.ids
    user = ids.users[4]
    client.post(f"/users/{user}/behaviours", json={"behaviours": behaviours(trained, 60)})
    items = [ids.items[i] for i in (3, 4, 5)]
    listed = error_of(client.post("/score", json={"user": user, "items": items, "k": 10}), 422)
    assert "would list 30 kept behaviours" in listed and "include_behaviours to false" in listed
    quiet = client.post("/score", json={"user": user, "items": items, "k": 10, "include_behaviours": False})
    assert quiet.status_code == 200 and all(r["behaviours"] == [] for r in quiet.json()["results"])
    body = {"user": user, "items": items, "k": 34, "include_behaviours": False}
    scored = error_of(client.post("/score", json=body), 422)
    assert "3 items × k = 34 asks for 102 scored behaviours" in scored and "limit of 100" in scored
    many = [ids.items[1 + i] for i in range(26)]  # the default k counts too: 26 × K
    assert TOP_K * 26 > 100
    assert "scored behaviours" in error_of(client.post("/score", json={"user": user, "items": many}), 422)
    assert client.post("/score", json={"user": user, "items": items[:1], "k": 20}).status_code == 200
    assert client.get(f"/users/{user}").json()["length"] == 60
    assert "413" in client.get("/openapi.json").json()["paths"]["/score"]["post"]["responses"]


# ---------------------------------------------------------------------------------- periodic save


def wait_for(condition: Any, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def test_periodic_save_writes_while_serving_and_survives_failures(
    trained: Trained, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from seminar.serving import save_histories

    service = ScoringService.load(trained.export)
    state = tmp_path / "state.safetensors"
    attempts = [0]

    def save() -> None:
        attempts[0] += 1
        if attempts[0] <= 2:
            raise OSError(28, "No space left on device")
        save_histories(service, state)

    caplog.set_level(logging.ERROR, logger="seminar.serving.app")
    with TestClient(create_app(service, periodic=save, every_s=0.05)) as client:
        user = trained.ids.users[6]
        client.post(f"/users/{user}/behaviours", json={"behaviours": behaviours(trained, 7)})
        assert wait_for(state.exists), "no periodic save within 10 s"
        assert client.get("/health").json()["status"] == "ok"  # the failed saves did not stop it
    assert "periodic save failed" in caplog.text and "No space left" in caplog.text
    restored = ScoringService.load(trained.export)
    load_histories(restored, state)
    assert len(restored.history(user)) == 7
    stopped_at = attempts[0]
    time.sleep(0.2)
    assert attempts[0] == stopped_at  # the thread stopped with the app


# ------------------------------------------------------------------------------------------- CLI


def forbid_serving(monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    def fail(*_: Any, **__: Any) -> None:
        pytest.fail("uvicorn.run was reached")

    monkeypatch.setattr(uvicorn, "run", fail)
    monkeypatch.setattr(ScoringService, "load", classmethod(lambda *_, **__: pytest.fail("export loaded")))


def test_unwritable_state_exits_2_before_serving(
    trained: Trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    forbid_serving(monkeypatch)
    serve = ["serve", str(trained.export), "--threads", "0", "--state"]
    assert main([*serve, str(tmp_path / "missing" / "state.safetensors")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main([*serve, str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    assert main([*serve, str(tmp_path / "file" / "state.safetensors")]) == 2
    assert "is not a folder" in capsys.readouterr().err

    import tempfile

    def denied(*_: Any, **__: Any) -> Any:  # a read-only folder (tests may run as root, who may write anyway)
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", denied)
    assert main([*serve, str(tmp_path / "state.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "cannot write in" in err and "Permission denied" in err


def test_serve_flags_reach_the_app(
    trained: Trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import uvicorn

    state = tmp_path / "state.safetensors"
    seen: dict[str, Any] = {}

    def run(app: Any, **_: Any) -> None:
        service: ScoringService = app.state.service
        seen.update(limits=app.state.limits, cap=service.store.max_history)
        with TestClient(app) as client:
            user = trained.ids.users[3]
            out = client.post(f"/users/{user}/behaviours", json={"behaviours": behaviours(trained, 9)}).json()
            seen["dropped"] = out["dropped"]
            seen["saved"] = wait_for(state.exists)

    monkeypatch.setattr(uvicorn, "run", run)
    flags = ["--max-history", "7", "--max-body-mb", "0.5", "--max-score-rows", "500"]
    flags += ["--max-listed-behaviours", "50", "--save-every", "0.05", "--state", str(state)]
    assert main(["serve", str(trained.export), "--threads", "0", *flags]) == 0
    assert seen["limits"] == Limits(max_body_bytes=2**19, max_score_rows=500, max_listed_behaviours=50)
    assert seen["cap"] == 7 and seen["dropped"] == 2 and seen["saved"]
    assert "saved the histories of 1 users" in capsys.readouterr().err
    # defaults: 16 MiB, 1 000 000 scored, 100 000 listed, 100 000 per user; a restart honours a lower cap
    seen.clear()
    monkeypatch.setattr(uvicorn, "run", lambda app, **_: seen.update(app=app))
    assert main(["serve", str(trained.export), "--threads", "0", "--state", str(state)]) == 0
    assert seen["app"].state.limits == Limits() and seen["app"].state.service.store.max_history == 100_000
    assert (
        main(["serve", str(trained.export), "--threads", "0", "--max-history", "4", "--state", str(state)])
        == 0
    )
    assert len(seen["app"].state.service.history(trained.ids.users[3])) == 4
