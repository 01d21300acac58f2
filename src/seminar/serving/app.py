"""The HTTP API over a :class:`ScoringService` (FastAPI).

Bad input is always a 4xx with a JSON body ``{"error": message}`` (plus ``detail`` for schema
violations): 409 for a state conflict (timestamps before the stored history, scoring a user with
no behaviours), 422 for everything else. A user the model was not trained on is served like any
other once it has behaviours (no id embedding, no profile: its history speaks for it). Endpoints are
plain functions: FastAPI runs them in its thread pool, and the service is thread-safe.

What one request may cost is bounded (:class:`Limits`): a body over ``max_body_bytes`` is a 413
before it is parsed, and a ``/score`` asking for more than ``max_score_rows`` (items × k) scored
behaviours, or listing more than ``max_listed_behaviours``, is a 422. The history cap lives in the
sequence store (``ScoringService(max_history=...)``). There is no authentication (docs/serving.md).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from seminar import __version__
from seminar.serving.errors import ServingError
from seminar.serving.schemas import (
    MAX_BODY_BYTES,
    MAX_LISTED_BEHAVIOURS,
    MAX_SCORE_ROWS,
    AppendRequest,
    AppendResponse,
    ErrorOut,
    HealthOut,
    ScoreRequest,
    ScoreResponse,
    UserOut,
)
from seminar.serving.service import ScoringService
from seminar.serving.store import dropped_by_last_extend

logger = logging.getLogger(__name__)

ERRORS: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorOut, "description": "conflicts with the stored history"},
    422: {"model": ErrorOut, "description": "invalid request, or over a /score limit"},
}
POST_ERRORS = {**ERRORS, 413: {"model": ErrorOut, "description": "request body over the size limit"}}


@dataclass(frozen=True)
class Limits:
    """What one request may cost (the defaults are `seminar serve`'s; docs/serving.md)."""

    max_body_bytes: int = MAX_BODY_BYTES
    max_score_rows: int = MAX_SCORE_ROWS  # items × k scored per /score
    max_listed_behaviours: int = MAX_LISTED_BEHAVIOURS  # items × k listed when include_behaviours

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_score_rows", "max_listed_behaviours"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}")


def _size(n: int) -> str:
    return f"{n / 2**20:g} MiB ({n} bytes)" if n >= 2**20 else f"{n} bytes"


class _BodyTooLarge(StarletteHTTPException):
    def __init__(self, limit: int, size: str) -> None:
        super().__init__(
            413,
            f"request body too large: {size}, over this server's limit of {_size(limit)}; "
            "send smaller requests (e.g. split an append)",
            headers={"connection": "close"},  # the unread rest of the body is not worth waiting for
        )


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` is a 413, never parsed.

    A declared Content-Length over the limit is refused before a byte of the body is read; a body
    without one (chunked) is counted as it arrives and refused at the first chunk over the limit, so
    at most ``max_bytes`` plus one chunk is ever held.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await _refuse(_BodyTooLarge(self.max_bytes, f"Content-Length {declared}"), scope, receive, send)
            return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:  # FastAPI re-raises an HTTPException met reading a body
                    raise _BodyTooLarge(self.max_bytes, f"at least {received} bytes received")
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except _BodyTooLarge as exc:  # only if no exception handler answered it (e.g. a plain route)
            if started:
                raise
            await _refuse(exc, scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server rejects a malformed header; counting still applies
    return None


async def _refuse(exc: StarletteHTTPException, scope: Scope, receive: Receive, send: Send) -> None:
    response = JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)
    await response(scope, receive, send)


class _PeriodicSave:
    """Runs ``save`` every ``seconds`` in a daemon thread until :meth:`stop`.

    A failure (full disk, removed folder) is logged and the save runs again at the next tick: a
    lost snapshot must never take the server, and every history it holds, down with it.
    """

    def __init__(self, save: Callable[[], None], seconds: float) -> None:
        self._save, self._seconds = save, seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="seminar-periodic-save", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._seconds):
            try:
                self._save()
            except Exception:
                logger.exception("periodic save failed; retrying in %g s", self._seconds)

    def stop(self) -> None:
        """Stop ticking; waits for a save in flight, so that a final save afterwards is the last."""
        self._stop.set()
        self._thread.join()


def _location(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc)


def create_app(
    service: ScoringService,
    on_shutdown: Callable[[], None] | None = None,
    *,
    limits: Limits | None = None,
    periodic: Callable[[], None] | None = None,
    every_s: float = 0.0,
) -> FastAPI:
    """An app serving ``service``; ``app.state.service`` and ``app.state.limits`` hold them.

    ``on_shutdown`` runs when the server stops gracefully (e.g. saving the histories): inside the
    app's lifespan, because uvicorn re-raises a caught Ctrl-C or SIGTERM once it has shut down.
    ``periodic`` (e.g. the same save) runs every ``every_s`` seconds in a background thread while
    serving (0: never), so a killed server loses at most that much.
    """
    limits = Limits() if limits is None else limits

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        ticker = _PeriodicSave(periodic, every_s) if periodic is not None and every_s > 0 else None
        yield
        if ticker is not None:
            ticker.stop()
        if on_shutdown is not None:
            on_shutdown()

    app = FastAPI(
        title="seminar scoring",
        version=__version__,
        description="CTR scores over lifelong (query, item) histories held as PQ codes (SEMINAR).",
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.limits = limits
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)

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
            gsu=service.gsu,
            rerank_factor=service.rerank_factor,
            code_bytes_per_behaviour=service.tables.code_width,
            users=stats["users"],
            behaviours=stats["behaviours"],
            allocated_bytes=stats["allocated_bytes"],
        )

    @app.post("/users/{user}/behaviours", response_model=AppendResponse, responses=POST_ERRORS)
    def append(user: str, body: AppendRequest) -> AppendResponse:
        """Append behaviours (oldest first) to a user's lifelong history; all or nothing.

        Past the history cap the oldest behaviours are dropped; ``dropped`` says how many.
        """
        b = body.behaviours
        length = service.append_columns(
            user, [x.item for x in b], [x.query for x in b], [x.timestamp for x in b]
        )
        # the store records it in this thread, which ran the append: exact under concurrency
        return AppendResponse(user=user, appended=len(b), length=length, dropped=dropped_by_last_extend())

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

    @app.post("/score", response_model=ScoreResponse, responses=POST_ERRORS)
    def score(body: ScoreRequest) -> JSONResponse:
        """CTR probability of each candidate item (under one query) and the K behaviours it used."""
        k = body.k or service.default_k
        _check_score_size(len(body.items), k, body.include_behaviours, limits)
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
                    "behaviours": [b.as_json() for b in r.behaviours],
                }
                for r in results
            ],
        }
        return JSONResponse(content)

    return app


def _check_score_size(items: int, k: int, listed: bool, limits: Limits) -> None:
    """Refuse a /score whose cost (items × k, as asked: known before any work) is over a limit."""
    rows = items * k
    if rows > limits.max_score_rows:
        raise ServingError(
            f"{items} items × k = {k} asks for {rows:,} scored behaviours, over this server's limit of "
            f"{limits.max_score_rows:,} per request; send fewer items or a smaller k"
        )
    if listed and rows > limits.max_listed_behaviours:
        raise ServingError(
            f"{items} items × k = {k} would list {rows:,} kept behaviours, over this server's limit of "
            f"{limits.max_listed_behaviours:,} per response; set include_behaviours to false, or send "
            "fewer items or a smaller k"
        )
