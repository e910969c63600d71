"""``memos jobs`` and ``memos worker``: queue background jobs (training an adapter, re-encoding
a cube) and run them, in this process or in as many worker processes as the store has."""

import json
import logging
import signal
import threading
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer

from memos.cli import _render
from memos.cli._options import CubeOption, JsonFlag, ReasonOption, UserOption
from memos.cli._session import open_local, open_memos, reporting
from memos.errors import InvalidInput

if TYPE_CHECKING:
    from memos import Job

jobs_app = typer.Typer(
    help="Queue background jobs (consolidate, retrain, refit, reencode) and follow them; "
    "`memos worker` runs them.",
    no_args_is_help=True,
)
JobId = Annotated[str, typer.Argument(help="The job's id, as `memos jobs submit` prints it.")]


@jobs_app.command("submit")
def submit(
    ctx: typer.Context,
    kind: Annotated[str, typer.Argument(help="consolidate, retrain, refit or reencode.")],
    cube: CubeOption,
    params: Annotated[
        str,
        typer.Option(
            "--params",
            "-p",
            help='The job\'s parameters as JSON, e.g. \'{"codec": "fp16"}\' for reencode.',
        ),
    ] = "{}",
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait until a worker has finished the job.")
    ] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds --wait waits.")] = 600.0,
    user: UserOption = None,
    reason: ReasonOption = None,
    json_out: JsonFlag = False,
) -> None:
    """Queue a job on a cube and print its id (the job is stored before this returns)."""
    with open_memos(ctx, json_errors=json_out) as mos:
        job = mos.jobs.submit(cube, kind, _parsed(params), user=user, reason=reason)
        if wait:
            job = mos.jobs.wait(job.id, timeout=timeout)
    _print_job(job, json_out=json_out, brief=not wait)


@jobs_app.command("ls")
def list_(
    ctx: typer.Context,
    cube: Annotated[
        str | None, typer.Option("--cube", "-c", help="Only this cube's (default: every cube's).")
    ] = None,
    state: Annotated[
        str | None,
        typer.Option(
            "--state", help="Only jobs in this state: queued, running, done, failed, cancelled."
        ),
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """List jobs, oldest first."""
    with open_memos(ctx, json_errors=json_out) as mos:
        jobs = mos.jobs.list(cube, state=state)
    if json_out:
        _render.print_json(_render.dumps(jobs))
    else:
        _render.jobs(jobs)


@jobs_app.command("show")
def show(ctx: typer.Context, job_id: JobId, json_out: JsonFlag = False) -> None:
    """Show where a job stands: its state, attempts, worker, result or failure."""
    with open_memos(ctx, json_errors=json_out) as mos:
        job = mos.jobs.get(job_id)
    _print_job(job, json_out=json_out, brief=False)


@jobs_app.command("cancel")
def cancel(ctx: typer.Context, job_id: JobId, json_out: JsonFlag = False) -> None:
    """Cancel a job no worker has taken yet (a running job is never interrupted)."""
    with open_memos(ctx, json_errors=json_out) as mos:
        job = mos.jobs.cancel(job_id)
    if json_out:
        _render.print_json(job.model_dump(mode="json"))
    else:
        typer.echo(f"cancelled job {job.id} ({job.kind.value} on {job.cube})")


@jobs_app.command("wait")
def wait_(
    ctx: typer.Context,
    job_id: JobId,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait at most.")] = 600.0,
    json_out: JsonFlag = False,
) -> None:
    """Wait until a worker has finished a job, then show it; exits 1 if it failed or is still
    unfinished when the timeout runs out."""
    with open_memos(ctx, json_errors=json_out) as mos:
        job = mos.jobs.wait(job_id, timeout=timeout)
    _print_job(job, json_out=json_out, brief=False)
    if job.state != "done":
        raise typer.Exit(1)


def worker(
    ctx: typer.Context,
    lease: Annotated[
        float,
        typer.Option(
            "--lease",
            help="Seconds a job stays this worker's without a renewal; "
            "after a crash, the job is run again that much later.",
        ),
    ] = 60.0,
    poll: Annotated[
        float, typer.Option("--poll", help="Seconds between looks at an empty queue.")
    ] = 0.5,
    once: Annotated[
        bool, typer.Option("--once", help="Run the jobs queued now, then exit.")
    ] = False,
    name: Annotated[
        str | None, typer.Option("--name", help="The worker's name (default: host-pid-random).")
    ] = None,
    tick_interval: Annotated[
        float,
        typer.Option(
            "--tick-interval",
            help="Seconds between the scheduler's ticks, which queue its migrations as jobs "
            "(0: no ticks; --once never ticks).",
        ),
    ] = 60.0,
) -> None:
    """Run queued background jobs until interrupted (SIGINT/SIGTERM finish the job in hand)."""
    from memos.schedulers import Ticker, Worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if tick_interval < 0:
        raise InvalidInput("--tick-interval is 0 or more seconds", field="tick_interval")
    with open_local(ctx, "`memos worker`") as mos, reporting():
        runner = Worker(mos, name=name, lease_s=lease)
        typer.echo(f"worker {runner.name} on {mos.store.url}", err=True)
        if once:
            finished = 0
            while runner.run_once() is not None:
                finished += 1
        else:
            stop = _stop_on_signals()
            if tick_interval > 0:
                ticker = Ticker(mos, interval_s=tick_interval)
                threading.Thread(target=ticker.run, args=(stop,), daemon=True).start()
            finished = runner.run(stop, poll_s=poll)
    typer.echo(f"worker {runner.name} finished {finished} jobs", err=True)


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handle(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, handle)
    return stop


def _parsed(params: str) -> Any:
    try:
        return json.loads(params)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"--params is not JSON: {exc}", field="params") from None


def _print_job(job: "Job", *, json_out: bool, brief: bool) -> None:
    if json_out:
        _render.print_json(job.model_dump(mode="json"))
    elif brief:
        typer.echo(job.id)
    else:
        _render.job(job)
