"""``memos jobs`` and ``memos worker`` through the real command."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from test_cli import Cli, assert_error, cli

from memos import HashEmbedder, MemOS
from memos.cli._session import ExitCode

__all__ = ["cli"]  # the fixture shared with test_cli
MEMOS = Path(sys.executable).parent / "memos"


def _cube(data_dir: Path) -> None:
    with MemOS.open(data_dir, embedder=HashEmbedder(64)) as mos:
        mos.create_cube("notes", embedder="hash-64")
        mos.add_many([f"fact {n} about the harbour" for n in range(40)], cube="notes")


def test_submit_run_and_show_a_job(cli: Cli, data_dir: Path) -> None:
    _cube(data_dir)
    submitted = cli("jobs", "submit", "reencode", "-c", "notes", "-p", '{"codec": "fp16"}',
                    "-r", "smaller index")  # fmt: skip
    assert submitted.code == 0, submitted.err
    job_id = submitted.out.strip()
    assert job_id.startswith("job-")
    listed = cli("jobs", "ls", "-c", "notes", "--json").json()
    assert [(j["id"], j["state"]) for j in listed] == [(job_id, "queued")]
    ran = cli("worker", "--once")
    assert ran.code == 0, ran.err
    assert "finished 1 jobs" in ran.err
    shown = cli("jobs", "show", job_id, "--json").json()
    assert (shown["state"], shown["result"]["codec"]) == ("done", "fp16")
    assert f"[{job_id}] smaller index" in cli("log", "-c", "notes").out
    text = cli("jobs", "show", job_id).out
    assert "state:     done" in text
    assert '"op": "reencode"' in text
    waited = cli("jobs", "wait", job_id, "--json")
    assert waited.code == 0
    assert waited.json()["id"] == job_id
    assert_error(cli("jobs", "cancel", job_id), ExitCode.CONFLICT, "is done, not queued")


def test_cancel_a_queued_job(cli: Cli, data_dir: Path) -> None:
    _cube(data_dir)
    job_id = cli("jobs", "submit", "reencode", "-c", "notes", "-p", '{"codec": "fp16"}').out
    cancelled = cli("jobs", "cancel", job_id.strip())
    assert cancelled.code == 0, cancelled.err
    assert cancelled.out.strip() == f"cancelled job {job_id.strip()} (reencode on notes)"
    assert "finished 0 jobs" in cli("worker", "--once").err
    assert cli("jobs", "show", job_id.strip(), "--json").json()["state"] == "cancelled"
    listed = cli("jobs", "ls", "--state", "cancelled", "--json").json()  # every cube's
    assert [j["id"] for j in listed] == [job_id.strip()]
    assert cli("jobs", "ls", "--state", "queued", "--json").json() == []
    assert_error(
        cli("jobs", "ls", "--state", "finished"), ExitCode.INVALID_INPUT, "unknown job state"
    )


def test_bad_jobs_are_one_line_errors(cli: Cli, data_dir: Path) -> None:
    _cube(data_dir)
    assert_error(cli("jobs", "submit", "reencode", "-c", "notes", "-p", "codec=fp16"),
                 ExitCode.INVALID_INPUT, "--params is not JSON")  # fmt: skip
    assert_error(cli("jobs", "submit", "defrag", "-c", "notes"), ExitCode.INVALID_INPUT,
                 "unknown job kind")  # fmt: skip
    assert_error(cli("jobs", "submit", "refit", "-c", "nowhere"), ExitCode.NOT_FOUND)
    assert_error(cli("jobs", "show", "job-000000000000000000000000"), ExitCode.NOT_FOUND)
    assert_error(cli("jobs", "show", "42"), ExitCode.INVALID_INPUT, "bad job id")
    assert cli("jobs", "ls", "-c", "notes", "--json").json() == []


def test_wait_fails_on_a_job_nobody_runs(cli: Cli, data_dir: Path) -> None:
    _cube(data_dir)
    job_id = cli("jobs", "submit", "reencode", "-c", "notes", "-p", '{"codec": "fp16"}').out
    waited = cli("jobs", "wait", job_id.strip(), "--timeout", "0.2")
    assert waited.code == 1
    assert "state:     queued" in waited.out


def test_a_worker_stops_on_sigterm(data_dir: Path) -> None:
    _cube(data_dir)
    worker = subprocess.Popen(
        [str(MEMOS), "--data-dir", str(data_dir), "worker", "--poll", "0.05"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert worker.stderr is not None
        assert worker.stderr.readline().startswith("worker ")  # it is running
        with MemOS.open(data_dir, embedder=HashEmbedder(64)) as mos:
            job = mos.jobs.submit("notes", "reencode", {"codec": "fp16"})
            assert mos.jobs.wait(job.id, timeout=60, poll_s=0.05).state == "done"
        time.sleep(0.1)
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 0, err
    assert "finished 1 jobs" in err
