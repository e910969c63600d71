"""``memos chat``: answer a question with a cube's memories, streamed as it is generated."""

from typing import TYPE_CHECKING, Annotated

import typer

from memos.cli import _render
from memos.cli._options import CubeOption
from memos.cli._session import open_memos

if TYPE_CHECKING:
    from memos import ChatReply, Handle
    from memos.core._types import ReplyStream


def chat(
    ctx: typer.Context,
    query: Annotated[str, typer.Argument(help="The question, in plain words.")],
    cube: CubeOption,
    user: Annotated[
        str | None, typer.Option("--user", "-u", help="Only memories of this user.")
    ] = None,
    k: Annotated[int, typer.Option("-k", help="How many memories to put in the prompt.")] = 5,
    max_new_tokens: Annotated[
        int, typer.Option("--max-new-tokens", help="The most tokens the answer may have.")
    ] = 128,
    no_kv: Annotated[
        bool,
        typer.Option(
            "--no-kv", help="Recompute the whole prompt even when a stored KV cache covers it."
        ),
    ] = False,
    adapter: Annotated[
        str | None,
        typer.Option(
            "--adapter",
            help="Answer through this LoRA adapter (`memos lora ls`). Default: the cube's "
            "attached one, if any.",
        ),
    ] = None,
    no_retrieve: Annotated[
        bool,
        typer.Option(
            "--no-retrieve",
            help="Put no memory in the prompt: the model (and its adapter) answers alone.",
        ),
    ] = False,
    system: Annotated[
        str | None,
        typer.Option(
            "--system",
            metavar="TEXT",
            help="Instructions of your own, put in the system message after the memories.",
        ),
    ] = None,
    stop: Annotated[
        list[str] | None,
        typer.Option(
            "--stop",
            metavar="TEXT",
            help="End the answer before this text (repeat for up to 4).",
        ),
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the whole reply as JSON once it is complete.")
    ] = False,
) -> None:
    """Answer a question with a cube's memories in the prompt, streaming the answer.

    Then the memories used, the KV cache that served the prompt if one did, and the LoRA
    adapter the answer came through if one did, go to stderr.
    """
    with open_memos(ctx, json_errors=json_out) as mos:
        stream = mos.chat_stream(
            query,
            cube=cube,
            user=user,
            k=k,
            max_new_tokens=max_new_tokens,
            use_kv=not no_kv,
            adapter=adapter,
            retrieve=not no_retrieve,
            system=system,
            stop=stop,
        )
        if json_out:
            stream.run()
        else:
            _echo(stream)
            summary = _summary(mos, cube, stream.reply)
    if json_out:
        _render.print_json(stream.reply.model_dump(mode="json"))
    else:
        typer.echo(summary, err=True)


def _summary(mos: "Handle", cube: str, reply: "ChatReply") -> str:
    """The memories and KV cache of the reply, then the adapter version it came through."""
    summary = _render.chat_summary(reply)
    if reply.adapter is None:
        return summary
    entry = {e.id: e for e in mos.lora.list(cube)}.get(reply.adapter)
    used = reply.adapter if entry is None else f"{entry.name} v{entry.version} ({entry.id})"
    return f"{summary}; adapter: {used}"


def _echo(stream: "ReplyStream") -> None:
    """The answer on stdout piece by piece, as it is generated (click flushes every echo)."""
    for piece in stream:
        typer.echo(piece, nl=False)
    typer.echo()
