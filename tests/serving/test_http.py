"""The HTTP API: endpoints, scores equal to the Python API, and a JSON 4xx (never a 500) for bad input."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from seminar.serving import ScoringService
from seminar.serving.app import create_app
from tests.serving.conftest import TOP_K, Trained


@pytest.fixture
def client(trained: Trained) -> TestClient:
    return TestClient(create_app(ScoringService.load(trained.export)), raise_server_exceptions=True)


def behaviours(trained: Trained, n: int, start: int = 100) -> list[dict]:
    ids = trained.ids
    return [
        {
            "item": ids.items[1 + i % 30],
            "query": ids.queries[2 + i % 5] if i % 2 else None,
            "timestamp": start + i,
        }
        for i in range(n)
    ]


def error_of(response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert isinstance(body["error"], str) and body["error"]
    return body["error"]


def test_append_score_and_inspect(client: TestClient, trained: Trained) -> None:
    ids = trained.ids
    user = ids.users[3]
    assert client.get("/health").json()["users"] == 0
    response = client.post(f"/users/{user}/behaviours", json={"behaviours": behaviours(trained, 40)})
    assert response.status_code == 200 and response.json() == {
        "user": user,
        "appended": 40,
        "length": 40,
        "dropped": 0,
    }
    more = client.post(f"/users/{user}/behaviours", json={"behaviours": behaviours(trained, 5, start=500)})
    assert more.json()["length"] == 45
    info = client.get(f"/users/{user}").json()
    assert info["length"] == 45 and info["first_timestamp"] == 100 and info["last_timestamp"] == 504
    assert info["used_bytes"] == 45 * (client.app.state.service.tables.code_width + 16)
    candidates = [ids.items[7], ids.items[8], ids.items[9]]
    body = {"user": user, "items": candidates, "query": ids.queries[3]}
    scored = client.post("/score", json=body).json()
    assert scored["k"] == TOP_K and scored["selected_by"] == "exact" and scored["query"] == ids.queries[3]
    service: ScoringService = client.app.state.service
    expected = service.score_many(user, candidates, ids.queries[3])
    for got, want in zip(scored["results"], expected, strict=True):
        assert got["item"] == want.item and got["probability"] == pytest.approx(want.probability)
        assert [b["position"] for b in got["behaviours"]] == [b.position for b in want.behaviours]
        assert len(got["behaviours"]) == TOP_K
    short = client.post("/score", json={**body, "k": 2, "include_behaviours": False}).json()
    assert short["k"] == 2 and short["results"][0]["behaviours"] == []
    # the synthetic dataset's raw item ids are numbers: a client may send them as JSON integers
    numeric = client.post("/score", json={**body, "items": [int(ids.items[7])]}).json()
    # one candidate instead of three: the same score up to float rounding of the batch shape
    first = scored["results"][0]["probability"]
    assert numeric["results"][0]["probability"] == pytest.approx(first, rel=1e-6)
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["users"] == 1 and health["behaviours"] == 45
    assert health["gsu"] == "exact" and health["code_bytes_per_behaviour"] == 0  # ids only


def test_every_bad_input_is_a_clear_4xx(client: TestClient, trained: Trained) -> None:
    ids = trained.ids
    user = ids.users[0]
    good = behaviours(trained, 3)
    url = f"/users/{user}/behaviours"
    assert client.post(url, json={"behaviours": good}).status_code == 200
    item = ids.items[1]
    cases = [
        # (method, path, json or raw content, status, message fragment)
        ("post", url, {"behaviours": [{"item": "no-such-item", "timestamp": 900}]}, 422, "no-such-item"),
        ("post", url, None, 422, "body"),
        ("post", url, {}, 422, "behaviours"),
        ("post", url, {"behaviours": []}, 422, "behaviours"),
        ("post", url, {"behaviours": [{"item": item, "timestamp": "soon"}]}, 422, "timestamp"),
        ("post", url, {"behaviours": [{"item": item, "timestamp": 2**70}]}, 422, "timestamp"),
        ("post", url, {"behaviours": [{"item": item, "timestamp": 1000.5}]}, 422, "timestamp"),
        ("post", url, {"behaviours": [{"item": item, "timestamp": True}]}, 422, "timestamp"),
        ("post", url, {"behaviours": [{"item": item, "query": 5, "timestamp": 1000}]}, 422, "query"),
        ("post", url, [{"item": item, "timestamp": 1000}], 422, "body"),
        ("post", url, {"behaviours": [{"item": item}]}, 422, "timestamp"),
        ("post", url, {"behaviours": [{"item": item, "timestamp": 1000, "colour": "red"}]}, 422, "colour"),
        ("post", url, {"behaviours": [{"item": [1], "timestamp": 1000}]}, 422, "item"),
        ("post", url, b"{not json", 422, "JSON"),
        (
            "post",
            url,
            {"behaviours": [{"item": item, "timestamp": 1001}, {"item": item, "timestamp": 1000}]},
            422,
            "non-decreasing",
        ),
        ("post", url, {"behaviours": [{"item": item, "timestamp": 5}]}, 409, "earlier than the latest"),
        (
            "post",
            url,
            {"behaviours": [{"item": item, "query": "never seen", "timestamp": 999}]},
            422,
            "never seen",
        ),
        ("post", "/score", {"user": "nobody", "items": [item]}, 409, "no behaviours yet"),  # seen nowhere
        ("post", "/score", {"user": ids.users[1], "items": [item]}, 409, "no behaviours yet"),
        ("post", "/score", {"user": user, "items": ["no-such-item"]}, 422, "no-such-item"),
        ("post", "/score", {"user": user, "items": []}, 422, "items"),
        ("post", "/score", {"user": user, "items": [item], "k": 0}, 422, "k"),
        ("post", "/score", {"user": user, "items": [item], "k": -2}, 422, "k"),
        ("post", "/score", {"user": user, "items": [item], "k": "many"}, 422, "k"),
        ("post", "/score", {"user": user, "items": item}, 422, "items"),
        ("post", "/score", {"user": user, "items": [item], "query": "never seen"}, 422, "never seen"),
        ("post", "/score", {"items": [item]}, 422, "user"),
        ("post", "/score", None, 422, "body"),
        ("get", "/no-such-endpoint", None, 404, "Not Found"),
        ("delete", "/score", None, 405, "Method Not Allowed"),
    ]
    for method, path, payload, status, fragment in cases:
        if isinstance(payload, bytes):
            response = client.request(
                method, path, content=payload, headers={"content-type": "application/json"}
            )
        else:
            response = client.request(method, path, json=payload)
        message = error_of(response, status)
        assert fragment in message, (path, payload, message)
    assert client.get(f"/users/{user}").json()["length"] == 3  # nothing was stored by a refused request
    assert client.get("/users/" + ids.users[1]).json()["length"] == 0


def test_openapi_documents_the_endpoints(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    assert {"/health", "/score", "/users/{user}", "/users/{user}/behaviours"} <= set(paths)
    assert "post" in paths["/score"] and "post" in paths["/users/{user}/behaviours"]
    components = schema["components"]["schemas"]
    assert {"AppendRequest", "BehaviourIn", "ScoreRequest", "ScoreResponse", "UserOut", "ErrorOut"} <= set(
        components
    )
    assert {"409", "413", "422"} <= set(paths["/score"]["post"]["responses"])
    assert components["ScoreRequest"]["properties"]["k"]["anyOf"][0]["minimum"] == 1
    assert client.get("/docs").status_code == 200
