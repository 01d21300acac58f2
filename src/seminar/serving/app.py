"""The HTTP API over a :class:`ScoringService` (FastAPI).

Bad input is always a 4xx with a JSON body ``{"error": message}`` (plus ``detail`` for schema
violations): 404 for a user the model does not know, 409 for a state conflict (timestamps before
the stored history, scoring a user with no behaviours), 422 for everything else. Endpoints are
plain functions: FastAPI runs them in its thread pool, and the service is thread-safe.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from seminar import __version__
from seminar.serving.errors import ServingError
from seminar.serving.schemas import (
    AppendRequest,
    AppendResponse,
    ErrorOut,
    HealthOut,
    ScoreRequest,
    ScoreResponse,
    UserOut,
)
from seminar.serving.service import ScoringService

ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "unknown user"},
    409: {"model": ErrorOut, "description": "conflicts with the stored history"},
    422: {"model": ErrorOut, "description": "invalid request"},
}


def _location(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc)


def create_app(service: ScoringService, on_shutdown: Callable[[], None] | None = None) -> FastAPI:
    """An app serving ``service``; ``app.state.service`` holds it.

    ``on_shutdown`` runs when the server stops gracefully (e.g. saving the histories): inside the
    app's lifespan, because uvicorn re-raises a caught Ctrl-C or SIGTERM once it has shut down.
    """

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        if on_shutdown is not None:
            on_shutdown()

    app = FastAPI(
        title="seminar scoring",
        version=__version__,
        description="CTR scores over lifelong (query, item) histories held as PQ codes (SEMINAR).",
        lifespan=lifespan,
    )
    app.state.service = service

    @app.exception_handler(ServingError)
    def _serving_error(_: Request, exc: ServingError) -> JSONResponse:
        return JSONResponse(status_code=exc.status, content={"error": str(exc)})

    @app.exception_handler(StarletteHTTPException)
    def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            status_code=exc.status_code, content={"error": str(exc.detail)}, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        detail = [{"loc": _location(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
        summary = "; ".join(f"{d['loc']}: {d['msg']}" for d in detail[:5]) or "malformed request"
        return JSONResponse(
            status_code=422, content={"error": f"invalid request: {summary}", "detail": detail}
        )

    @app.get("/health", response_model=HealthOut)
    def health() -> HealthOut:
        """Liveness and what is loaded."""
        stats = service.stats()
        return HealthOut(
            status="ok",
            model=service.export.manifest["model"]["config"]["model"],
            top_k=service.default_k,
            rerank_factor=service.rerank_factor,
            code_bytes_per_behaviour=service.tables.code_width,
            users=stats["users"],
            behaviours=stats["behaviours"],
            allocated_bytes=stats["allocated_bytes"],
        )

    @app.post("/users/{user}/behaviours", response_model=AppendResponse, responses=ERRORS)
    def append(user: str, body: AppendRequest) -> AppendResponse:
        """Append behaviours (oldest first) to a user's lifelong history; all or nothing."""
        b = body.behaviours
        length = service.append_columns(
            user, [x.item for x in b], [x.query for x in b], [x.timestamp for x in b]
        )
        return AppendResponse(user=user, appended=len(b), length=length)

    @app.get("/users/{user}", response_model=UserOut, responses=ERRORS)
    def user_info(user: str) -> UserOut:
        """Length, time span and memory of a user's stored history."""
        info = service.user_info(user)
        return UserOut(
            user=info.user,
            length=info.length,
            first_timestamp=info.first_timestamp,
            last_timestamp=info.last_timestamp,
            used_bytes=info.used_bytes,
            allocated_bytes=info.allocated_bytes,
        )

    @app.post("/score", response_model=ScoreResponse, responses=ERRORS)
    def score(body: ScoreRequest) -> JSONResponse:
        """CTR probability of each candidate item (under one query) and the K behaviours it used."""
        k = body.k or service.default_k
        results = service.score_many(
            body.user, body.items, body.query, k, body.timestamp, include_behaviours=body.include_behaviours
        )
        # Built as plain JSON: re-validating K behaviours per candidate through the response model
        # cost more than the scoring itself; the shape is the documented ScoreResponse.
        content = {
            "user": body.user,
            "query": results[0].query,
            "k": k,
            "selected_by": results[0].selected_by,
            "results": [
                {
                    "item": r.item,
                    "probability": r.probability,
                    "logit": r.logit,
                    "behaviours": [vars(b) for b in r.behaviours],
                }
                for r in results
            ],
        }
        return JSONResponse(content)

    return app
