"""Background jobs: queue one on a cube (answered 202 at once: a worker runs it later), list a
cube's jobs, read or cancel one. ``memos worker`` processes sharing the store run them."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from memos import Job, JobState
from memos.core._jobs import ConsolidateParams, ReencodeParams, RefitParams, RetrainParams

from ._deps import Caller
from ._errors import COMMON_ERRORS

router = APIRouter(prefix="/v1", tags=["jobs"], responses=COMMON_ERRORS)


class _JobBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user: str | None = None
    reason: str | None = None


class ConsolidateJob(_JobBody):
    """Train a new version of an adapter on memories (as ``POST .../adapters``)."""

    kind: Literal["consolidate"]
    params: ConsolidateParams


class RetrainJob(_JobBody):
    """Retrain an adapter on the current versions of its sources."""

    kind: Literal["retrain"]
    params: RetrainParams


class RefitJob(_JobBody):
    """Fit the cube's codec again to its current vectors."""

    kind: Literal["refit"]
    params: RefitParams = Field(default_factory=RefitParams)


class ReencodeJob(_JobBody):
    """Switch the cube to another codec."""

    kind: Literal["reencode"]
    params: ReencodeParams


JobCreate = Annotated[
    ConsolidateJob | RetrainJob | RefitJob | ReencodeJob, Field(discriminator="kind")
]
JobId = Annotated[str, Path(pattern=r"^job-[0-9a-f]{24}$")]


@router.post("/cubes/{cube}/jobs", status_code=202)
def submit_job(cube: str, body: JobCreate, mos: Caller) -> Job:
    return mos.submit_job(
        cube, body.kind, body.params.model_dump(), user=body.user, reason=body.reason
    )


StateQuery = Annotated[JobState | None, Query(description="only the jobs in this state")]


@router.get("/cubes/{cube}/jobs")
def list_jobs(cube: str, mos: Caller, state: StateQuery = None) -> list[Job]:
    """The cube's jobs, oldest first."""
    return mos.list_jobs(cube, state=state)


@router.get("/jobs")
def list_all_jobs(mos: Caller, state: StateQuery = None) -> list[Job]:
    """The jobs of every cube the caller may read, oldest first."""
    return mos.list_jobs(state=state)
