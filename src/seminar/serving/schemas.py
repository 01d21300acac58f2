"""Request and response models of the HTTP API; they are what /openapi.json documents.

Requests forbid unknown fields, so a misspelt key is a 422 naming it rather than silently ignored.
Raw ids may be sent as strings or integers (compared by their decimal text).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_APPEND = 100_000
MAX_CANDIDATES = 1_000
MAX_K = 10_000
# Defaults of the configurable limits (`seminar serve` flags, ``app.Limits``); docs/serving.md explains.
MAX_BODY_BYTES = 16 * 2**20  # a full MAX_APPEND request with ~100-character queries still fits
MAX_SCORE_ROWS = 1_000_000  # items × k per /score: the ESU and head run over that many behaviours
MAX_LISTED_BEHAVIOURS = 100_000  # items × k per /score when behaviours are listed (~15 MB of JSON)
MAX_HISTORY = 100_000  # behaviours kept per user by `seminar serve`; the oldest are dropped
GSU_MODES = ("exact", "pq")  # the serving GSU: every behaviour scored exactly, or ADC over PQ codes


def _id_text(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


RawId = Annotated[str, BeforeValidator(_id_text), Field(min_length=1, description="raw id as in the dataset")]
Timestamp = Annotated[
    int, Field(strict=True, ge=INT64_MIN, le=INT64_MAX, description="integer, source time unit (seconds)")
]
Query = Annotated[
    str | None, Field(description="the search query; null or blank for a recommendation behaviour")
]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BehaviourIn(Request):
    item: RawId
    query: Query = None
    timestamp: Timestamp


class AppendRequest(Request):
    behaviours: list[BehaviourIn] = Field(
        min_length=1, max_length=MAX_APPEND, description="oldest first; timestamps non-decreasing"
    )


class AppendResponse(BaseModel):
    user: str
    appended: int
    length: int
    dropped: int = Field(
        default=0, description="oldest behaviours dropped by this append to stay within the history cap"
    )


class ScoreRequest(Request):
    user: RawId
    items: list[RawId] = Field(min_length=1, max_length=MAX_CANDIDATES, description="candidate items")
    query: Query = None
    k: int | None = Field(
        default=None, strict=True, ge=1, le=MAX_K, description="behaviours kept by the GSU (default: K)"
    )
    timestamp: Timestamp | None = Field(
        default=None, description="time of the request (default: latest behaviour)"
    )
    include_behaviours: bool = Field(default=True, description="list the kept behaviours of each candidate")


class KeptBehaviourOut(BaseModel):
    position: int
    item: str
    query: str | None
    timestamp: int
    adc_score: float | None = Field(description="the behaviour's ADC score (null with the exact GSU)")
    exact_score: float


class ScoreOut(BaseModel):
    item: str
    probability: float
    logit: float
    behaviours: list[KeptBehaviourOut]


class ScoreResponse(BaseModel):
    user: str
    query: str | None
    k: int
    selected_by: str = Field(
        description="'exact': every behaviour scored with exact keys; 'pq-rerank': ADC shortlist "
        "re-ranked with exact keys; 'pq': ADC only; '+recent' when the model also keeps its last "
        "R behaviours ('recent': only those)"
    )
    results: list[ScoreOut]


class UserOut(BaseModel):
    user: str
    length: int
    first_timestamp: int | None
    last_timestamp: int | None
    used_bytes: int = Field(description="codes + item/query ids + timestamps of the stored behaviours")
    allocated_bytes: int = Field(description="bytes the user's arrays hold, spare capacity included")


class HealthOut(BaseModel):
    status: str
    model: str
    top_k: int
    gsu: str
    rerank_factor: int
    code_bytes_per_behaviour: int
    users: int
    behaviours: int
    allocated_bytes: int


class ErrorOut(BaseModel):
    error: str
    detail: list[dict[str, Any]] | None = None
