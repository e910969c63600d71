"""``memos lora``: train, list, attach, export, import, retrain, roll back and delete LoRA
adapters (parametric memory): a cube's memories learned into the language model's weights."""

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from memos.cli import _render
from memos.cli._options import CubeOption, JsonFlag, ReasonOption, UserOption
from memos.cli._session import open_memos
from memos.errors import InvalidInput

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from memos import Event
    from memos.parametric import AdapterEntry

lora_app = typer.Typer(
    help="Train, list, attach, export and roll back LoRA adapters: a cube's memories learned "
    "into the model's weights, so chat can recall them with no memory in the prompt.",
    no_args_is_help=True,
)

AdapterName = Annotated[str, typer.Argument(help="The adapter's name, as `memos lora ls` shows.")]
VersionOption = Annotated[
    int | None, typer.Option("--version", help="This version of the adapter (default: latest).")
]
EntryJson = Annotated[bool, typer.Option("--json", help="Print the new version as JSON.")]


@lora_app.command("consolidate")
def consolidate(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The adapter to train a new version of.")],
    cube: CubeOption,
    item: Annotated[
        list[str] | None,
        typer.Option("--item", "-i", help="A memory to learn; repeat for several."),
    ] = None,
    query: Annotated[
        str | None,
        typer.Option("--query", "-q", help="Learn the memories best matching this instead."),
    ] = None,
    k: Annotated[
        int, typer.Option("-k", help="How many memories a --query consolidation learns.")
    ] = 20,
    steps: Annotated[
        int | None, typer.Option("--steps", help="The most training steps (default 40).")
    ] = None,
    lr: Annotated[
        float | None, typer.Option("--lr", help="The learning rate (default 0.002).")
    ] = None,
    rank: Annotated[int | None, typer.Option("--rank", help="The LoRA rank (default 8).")] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="The random seed of training (default 0).")
    ] = None,
    density: Annotated[
        float | None,
        typer.Option(
            "--density",
            help="Store the adapter ComPEFT-compressed, keeping this fraction of its entries, "
            "when that keeps its recall (default 0.5).",
        ),
    ] = None,
    fp32: Annotated[
        bool, typer.Option("--fp32", help="Store the adapter uncompressed (fp32).")
    ] = False,
    user: UserOption = None,
    reason: ReasonOption = None,
    json_out: EntryJson = False,
) -> None:
    """Train a new version of adapter NAME on memories (--item ID... or --query).

    A progress bar on stderr follows the training loss; then one line sums the new version
    up (or, with --json, the version's entry). One adapter_build event.
    """
    recipe = _recipe(steps, lr, rank, seed)
    with open_memos(ctx, json_errors=json_out) as mos, _training_bar() as bar:
        entry = mos.lora.consolidate(
            cube, item or None, name=name, query=query, k=k, recipe=recipe,
            density=_stored_density(density, fp32), user=user, reason=reason, progress=bar,
        )  # fmt: skip
    _print_trained("consolidated", entry, json_out=json_out)


@lora_app.command("ls")
def ls(
    ctx: typer.Context,
    cube: CubeOption,
    name: Annotated[
        str | None, typer.Option("--name", "-n", help="Only the versions of this adapter.")
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """List a cube's adapter versions, oldest first."""
    with open_memos(ctx, json_errors=json_out) as mos:
        entries = mos.lora.list(cube, name)
    if json_out:
        _render.print_json(_render.dumps(entries))
    else:
        _print_entries(entries)


@lora_app.command("show")
def show(
    ctx: typer.Context,
    name: AdapterName,
    cube: CubeOption,
    version: VersionOption = None,
    json_out: JsonFlag = False,
) -> None:
    """Show one adapter version: its base model, LoRA settings, storage, sources, metrics."""
    with open_memos(ctx, json_errors=json_out) as mos:
        entry = mos.lora.show(cube, name, version)
    if json_out:
        _render.print_json(entry.model_dump(mode="json"))
    else:
        _print_entry(entry)


@lora_app.command("attach")
def attach(
    ctx: typer.Context,
    cube: CubeOption,
    name: Annotated[
        str | None, typer.Argument(help="The adapter chat on the cube should use by default.")
    ] = None,
    none: Annotated[
        bool, typer.Option("--none", help="Detach: chat uses no adapter unless one is named.")
    ] = False,
    user: UserOption = None,
    reason: ReasonOption = None,
) -> None:
    """Make adapter NAME the one chat on the cube answers through (--none: no adapter).

    One adapter_attach event.
    """
    with open_memos(ctx) as mos:
        info = mos.lora.attach(cube, _attached(name, none=none), user=user, reason=reason)
    if info.default_adapter is None:
        typer.echo(f"detached cube {info.name!r}: chat uses no adapter unless one is named")
    else:
        typer.echo(
            f"attached {info.default_adapter} to cube {info.name!r}: chat answers through it"
        )


@lora_app.command("export")
def export(
    ctx: typer.Context,
    name: AdapterName,
    directory: Annotated[Path, typer.Argument(help="A new or empty directory to write.")],
    cube: CubeOption,
    version: VersionOption = None,
) -> None:
    """Write an adapter version as a peft adapter directory (fp32 safetensors)."""
    with open_memos(ctx) as mos:
        entry = mos.lora.show(cube, name, version)
        written = mos.lora.export(cube, name, directory, version=entry.version)
    typer.echo(f"exported {entry.name} v{entry.version} of cube {entry.cube!r} to {written}")


@lora_app.command("import")
def import_(
    ctx: typer.Context,
    directory: Annotated[
        Path,
        typer.Argument(
            help="A peft adapter directory: adapter_config.json and adapter_model.safetensors."
        ),
    ],
    cube: CubeOption,
    name: Annotated[str, typer.Option("--name", "-n", help="The adapter to import it as.")],
    density: Annotated[
        float | None,
        typer.Option(
            "--density",
            help="Store it ComPEFT-compressed, keeping this fraction of its entries "
            "(default: uncompressed fp32).",
        ),
    ] = None,
    user: UserOption = None,
    reason: ReasonOption = None,
    json_out: EntryJson = False,
) -> None:
    """Import a peft LoRA adapter directory as a new version of an adapter."""
    with open_memos(ctx, json_errors=json_out) as mos:
        entry = mos.lora.import_adapter(
            cube, directory, name=name, density=_checked_density(density), user=user,
            reason=reason,
        )  # fmt: skip
    _print_version(
        entry,
        f"imported {entry.name} v{entry.version} ({entry.id}) into cube {entry.cube!r}: "
        f"{entry.manifest.parameters} parameters, {_storage(entry)}, {entry.size} bytes",
        json_out=json_out,
    )


@lora_app.command("retrain")
def retrain(
    ctx: typer.Context,
    name: AdapterName,
    cube: CubeOption,
    user: UserOption = None,
    reason: ReasonOption = None,
    json_out: EntryJson = False,
) -> None:
    """Train a new version of adapter NAME on its latest version's sources as they are now.

    A deleted memory is left out, an updated one is learned as it reads now, so a stale
    adapter is usable again. Same recipe and storage as the latest version.
    """
    with open_memos(ctx, json_errors=json_out) as mos, _training_bar() as bar:
        entry = mos.lora.retrain(cube, name, user=user, reason=reason, progress=bar)
    _print_trained("retrained", entry, json_out=json_out)


@lora_app.command("rollback")
def rollback(
    ctx: typer.Context,
    name: AdapterName,
    cube: CubeOption,
    to_version: Annotated[
        int, typer.Option("--to-version", help="The version whose weights to restore.")
    ],
    user: UserOption = None,
    reason: ReasonOption = None,
    json_out: EntryJson = False,
) -> None:
    """Restore an older version's weights as a new version of adapter NAME."""
    with open_memos(ctx, json_errors=json_out) as mos:
        entry = mos.lora.rollback(cube, name, to_version=to_version, user=user, reason=reason)
    stale = " (stale: a memory it learned has changed since)" if entry.stale else ""
    _print_version(
        entry,
        f"rolled back {entry.name} to v{to_version}: new version v{entry.version} "
        f"({entry.id}) in cube {entry.cube!r}{stale}",
        json_out=json_out,
    )


@lora_app.command("rm")
def rm(
    ctx: typer.Context,
    name: AdapterName,
    cube: CubeOption,
    user: UserOption = None,
    reason: ReasonOption = None,
) -> None:
    """Delete every version of adapter NAME (one adapter_drop event each), detaching it."""
    with open_memos(ctx) as mos:
        events = mos.lora.delete(cube, name, user=user, reason=reason)
    typer.echo(_deleted_line(name, cube, events))


# helpers ----------------------------------------------------------------------------------


@contextmanager
def _training_bar() -> Iterator["_TrainingBar"]:
    bar = _TrainingBar()
    try:
        yield bar
    finally:
        bar.close()


class _TrainingBar:
    """The ``progress`` callback of training: a rich bar on stderr, started at the first step
    so that a command failing before it trains prints only its error."""

    def __init__(self) -> None:
        self._progress: Progress | None = None
        self._task: TaskID  # set with the bar

    def __call__(self, step: int, max_steps: int, loss: float) -> None:
        if self._progress is None:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self._progress = Progress(
                TextColumn("training"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]:.4f}"),
                TimeElapsedColumn(),
                console=Console(stderr=True, highlight=False),
            )
            self._progress.start()
            self._task = self._progress.add_task("training", total=max_steps, loss=loss)
        self._progress.update(self._task, completed=step, total=max_steps, loss=loss)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()


def _recipe(
    steps: int | None, lr: float | None, rank: int | None, seed: int | None
) -> dict[str, Any]:
    """The training recipe fields given on the command line; the others keep their defaults."""
    given = {"max_steps": steps, "learning_rate": lr, "rank": rank, "seed": seed}
    return {field: value for field, value in given.items() if value is not None}


def _checked_density(density: float | None) -> float | None:
    # checked before a model is loaded or trained, not when the adapter is finally stored
    if density is not None and not 0.0 < density <= 1.0:
        raise InvalidInput(f"--density must be in (0, 1], not {density}", field="density")
    return density


def _stored_density(density: float | None, fp32: bool) -> float | None:
    """What consolidate stores at: ``--fp32`` is None, no option the SDK's default."""
    if fp32:
        if density is not None:
            raise InvalidInput("give --density or --fp32, not both", field="density")
        return None
    if density is None:
        from memos.parametric._manifest import DEFAULT_DENSITY

        return DEFAULT_DENSITY
    return _checked_density(density)


def _attached(name: str | None, *, none: bool) -> str | None:
    if (name is None) == (not none):
        raise InvalidInput("name the adapter to attach, or give --none to detach (one of them)")
    return name


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _metric(entry: "AdapterEntry", key: str) -> float:
    value = entry.manifest.metrics.get(key, 0.0)
    return float(value)


def _storage(entry: "AdapterEntry") -> str:
    """How a version is stored; when compression was asked for but lost recall, says so."""
    manifest = entry.manifest
    if manifest.storage == "compeft":
        return f"compeft at density {manifest.density:g}"
    if "compressed_recall" not in manifest.metrics:
        return "fp32"
    return f"fp32 (compressed, its recall fell to {_metric(entry, 'compressed_recall'):.2f})"


def _print_version(entry: "AdapterEntry", line: str, *, json_out: bool) -> None:
    """A command's new version: one line, or with ``--json`` the whole entry."""
    if json_out:
        _render.print_json(entry.model_dump(mode="json"))
    else:
        typer.echo(line)


def _print_trained(verb: str, entry: "AdapterEntry", *, json_out: bool) -> None:
    _print_version(
        entry,
        f"{verb} {entry.name} v{entry.version} ({entry.id}) in cube {entry.cube!r}: "
        f"{_count(len(entry.sources), 'memory', 'memories')}, "
        f"{_count(int(_metric(entry, 'steps')), 'step', 'steps')}, "
        f"{_metric(entry, 'seconds'):.1f} s, recall {_metric(entry, 'recall'):.2f}, "
        f"{_storage(entry)}, {entry.size} bytes",
        json_out=json_out,
    )


def _deleted_line(name: str, cube: str, events: Sequence["Event"]) -> str:
    from memos import EventOp

    versions = sum(1 for event in events if event.op == EventOp.ADAPTER_DROP)
    detached = ", and detached it" if len(events) > versions else ""
    first, last = events[0].seq, events[-1].seq
    span = f"event {first}" if first == last else f"events {first}-{last}"
    counted = _count(versions, "version", "versions")
    return f"deleted {name} from cube {cube!r}: {counted}{detached} ({span})"


def _print_entries(entries: Sequence["AdapterEntry"]) -> None:
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    columns = ("name", "version", "origin", "stale", "storage", "bytes", "parameters")
    for column in (*columns, "sources", "created"):
        table.add_column(column, no_wrap=True)
    for entry in entries:
        table.add_row(
            entry.name,
            str(entry.version),
            entry.manifest.origin,
            "yes" if entry.stale else "no",
            entry.manifest.storage,
            str(entry.size),
            str(entry.manifest.parameters),
            str(len(entry.sources)),
            _render.when(entry.created_at),
        )
    _render.console().print(table if entries else "no adapters")


def _print_entry(entry: "AdapterEntry") -> None:
    from rich.table import Table

    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    for field, value in _entry_rows(entry).items():
        table.add_row(field, value)
    _render.console().print(table)


def _entry_rows(entry: "AdapterEntry") -> dict[str, str]:
    manifest, lora = entry.manifest, entry.manifest.lora
    origin: str = manifest.origin
    if manifest.from_version is not None:
        origin += f" of v{manifest.from_version}"
    stale = "yes: a memory it learned has changed; retrain or roll back" if entry.stale else "no"
    sources = ", ".join(f"{s.item_id} v{s.version}" for s in entry.sources)
    return {
        "name": entry.name,
        "version": str(entry.version),
        "id": entry.id,
        "cube": entry.cube,
        "origin": origin,
        "stale": stale,
        "created": _render.when(entry.created_at),
        "base model": f"{manifest.base_model_name} ({manifest.base_model.short})",
        "lora": f"r={lora.r}, alpha={lora.lora_alpha} on {', '.join(lora.target_modules)}",
        "parameters": str(manifest.parameters),
        "storage": f"{_storage(entry)}, {entry.size} bytes",
        "sources": f"{len(entry.sources)}: {sources}" if sources else "none",
        "recipe": _pairs(manifest.recipe or {}),
        "metrics": _pairs(manifest.metrics),
    }


def _pairs(values: dict[str, Any]) -> str:
    def one(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)

    return ", ".join(f"{key}={one(value)}" for key, value in values.items()) or "-"
