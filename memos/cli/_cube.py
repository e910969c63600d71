"""``memos cube``: create, list and inspect cubes, and change how their vectors are encoded."""

from typing import TYPE_CHECKING, Annotated

import typer

from memos.cli import _render
from memos.cli._options import JsonFlag, ReasonOption, UserOption
from memos.cli._session import open_memos

if TYPE_CHECKING:
    from memos import CubeInfo

cube_app = typer.Typer(
    help="Create, list and inspect cubes, the named containers memories live in.",
    no_args_is_help=True,
)

CODEC_HELP = (
    "How vectors are held in RAM: fp32 (exact), fp16, int8, fp8, pca{k}+fp8 such as "
    "pca192+fp8, or ivf{nlist}+sq8 (partitioned, for large cubes). int8 and pca codecs are "
    "fitted to the cube's vectors once it holds 1000; ivf once it holds 39 per list."
)


@cube_app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The new cube's name.")],
    owner: Annotated[
        str | None,
        typer.Option(
            "--owner",
            "-o",
            help="The principal who owns the cube. Default: the namespace's principal for "
            "NAMESPACE:NAME, else local (the key's principal over --url).",
        ),
    ] = None,
    embedder: Annotated[
        str | None,
        typer.Option(
            "--embedder",
            help="Embedding model: all-MiniLM-L6-v2 (the default) or hash-<dim> for a fast, "
            "deterministic test embedder.",
        ),
    ] = None,
    codec: Annotated[
        str | None,
        typer.Option("--codec", help=CODEC_HELP + " Default: pca{dim/2-4}+fp8 (8x smaller)."),
    ] = None,
    kv_dtype: Annotated[
        str,
        typer.Option(
            "--kv-dtype",
            help="How the cube's KV caches are stored: fp32 (exact), bf16 (half the size) or "
            "int8 (a quarter); `memos kv build --dtype` overrides it per cache.",
        ),
    ] = "fp32",
) -> None:
    """Create a cube (and the data dir, if it does not exist yet)."""
    with open_memos(ctx, create=True) as mos:
        info = mos.create_cube(name, owner=owner, embedder=embedder, codec=codec, kv_dtype=kv_dtype)
    typer.echo(
        f"created cube {info.name!r} (owner {info.owner}, embedder {info.embedder}, "
        f"{info.dim}-d, {info.codec}, KV caches {info.kv_dtype})"
    )


@cube_app.command("list")
def list_(ctx: typer.Context, json_out: JsonFlag = False) -> None:
    """List the cubes in the data dir."""
    with open_memos(ctx, json_errors=json_out) as mos:
        infos = mos.list_cubes()
    if json_out:
        _render.print_json(_render.dumps(infos))
    else:
        _render.cubes(infos)


@cube_app.command("reencode")
def reencode(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The cube to re-encode.")],
    codec: Annotated[str, typer.Option("--codec", help=CODEC_HELP)],
    user: UserOption = None,
    reason: ReasonOption = None,
) -> None:
    """Switch a cube to another codec; the index is rebuilt from the full-precision vectors."""
    with open_memos(ctx) as mos:
        info = mos.reencode(name, codec=codec, user=user, reason=reason)
    typer.echo(_configured("re-encoded", info))


@cube_app.command("refit")
def refit(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The cube whose codec to fit again.")],
    user: UserOption = None,
    reason: ReasonOption = None,
) -> None:
    """Fit an int8 or pca codec again to the cube's current vectors and re-encode them."""
    with open_memos(ctx) as mos:
        info = mos.refit(name, user=user, reason=reason)
    typer.echo(_configured("refitted", info))


@cube_app.command("stats")
def stats(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The cube to describe.")],
    json_out: JsonFlag = False,
) -> None:
    """Items, codec and version, and bytes per vector in RAM and on disk."""
    with open_memos(ctx, json_errors=json_out) as mos:
        result = mos.cube_stats(name)
    if json_out:
        _render.print_json(result.model_dump(mode="json"))
    else:
        _render.cube_stats(result)


def _configured(done: str, info: "CubeInfo") -> str:
    from memos.codecs import make_codec

    fit_min = make_codec(info.codec).fit_min
    if info.codec_state is not None:
        state = f", fitted state {info.codec_state[:12]}"
    elif fit_min:
        state = f", exact fp32 until it holds {fit_min} memories"
    else:
        state = ""
    return f"{done} cube {info.name!r}: codec {info.codec} version {info.codec_version}{state}"


@cube_app.command("grant")
def grant(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The cube to share.")],
    principal: Annotated[str, typer.Argument(help="Who gets access (an API key's principal).")],
    access: Annotated[
        str, typer.Option("--access", "-a", help="read, or write (read and change).")
    ] = "read",
    reason: ReasonOption = None,
) -> None:
    """Let a principal read (or read and change) a cube; one `grant` event."""
    with open_memos(ctx) as mos:
        info = mos.grant(name, principal, access, reason=reason)
    typer.echo(f"granted {access} on cube {info.name!r} to {principal}")


@cube_app.command("revoke")
def revoke(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The shared cube.")],
    principal: Annotated[str, typer.Argument(help="Whose grant to take away.")],
    reason: ReasonOption = None,
) -> None:
    """Take a principal's grant on a cube away; one `revoke` event."""
    with open_memos(ctx) as mos:
        info = mos.revoke(name, principal, reason=reason)
    typer.echo(f"revoked {principal}'s access to cube {info.name!r}")
