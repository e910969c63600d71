"""Chat through any OpenAI-compatible server: vLLM, Ollama, llama.cpp, a hosted API, or another
``memos serve``.

:class:`OpenAICompatible` is a :class:`memos.llm.TextChatModel`: it sends the chat's messages to
``POST {base_url}/chat/completions`` (streamed, greedy, ``max_tokens``) and reads the answer's
pieces from the server-sent events as they arrive, and the token counts from the last event
when the server sends them (``stream_options.include_usage``). It only exchanges text, so KV
caches and LoRA adapters stay the local model's.

Failures are typed: an unreachable server, a timeout or a 5xx answer is
:class:`memos.errors.ModelUnavailable`; a 4xx answer (a wrong key, an unknown model) or a stream
that is not OpenAI's wire format is :class:`memos.errors.UpstreamError`. Each names the URL
(without any password in it) and never the key.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import ConfigDict, ValidationError

from memos.core._http import Client, Response, TransportError
from memos.core._model import Model
from memos.core._sse import event_data
from memos.errors import InvalidInput, ModelUnavailable, UpstreamError
from memos.llm._backend import ChatMessage, TokenUsage

DEFAULT_TIMEOUT_S = 120.0
# how long a connection may take to open, at most (the answer itself may take ``timeout``)
_CONNECT_TIMEOUT_S = 10.0
# how much of a refusal's body is read, and how much of its message an error repeats
_ERROR_BODY_BYTES = 64 * 1024
_ERROR_MESSAGE_CHARS = 300


class OpenAICompatible:
    """A chat model behind an OpenAI-compatible API at ``base_url`` (the part before
    ``/chat/completions``, e.g. ``http://localhost:11434/v1``), answering as ``model``.

    ``api_key`` goes in ``Authorization: Bearer`` (none: no header); ``timeout`` is how long, in
    seconds, to wait for the server's next bytes. One instance may serve many threads; ``close``
    lets go of its connections."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        if not isinstance(model, str) or not model.strip():
            raise InvalidInput("an upstream model needs a model name")
        if not timeout > 0:
            raise InvalidInput(f"timeout must be a positive number of seconds, not {timeout!r}")
        self.base_url = _checked_url(base_url)
        self.name = model
        self.url = shown_url(self.base_url)  # what errors and logs name
        headers = {} if not api_key else {"Authorization": f"Bearer {api_key}"}
        self._client = Client(
            self.base_url,
            headers=headers,
            timeout=timeout,
            connect_timeout=min(timeout, _CONNECT_TIMEOUT_S),
        )

    def __repr__(self) -> str:  # never the key
        return f"OpenAICompatible({self.url!r}, {self.name!r})"

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> OpenAICompatible:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def stream_chat(
        self, messages: Sequence[ChatMessage], *, max_new_tokens: int, stop: Sequence[str] = ()
    ) -> UpstreamStream:
        """The answer to ``messages`` as it streams in. The request is sent and its status
        checked here, so a refusal is raised before any piece."""
        body = {
            "model": self.name,
            "messages": [dict(message) for message in messages],
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": 0,
            "max_tokens": max_new_tokens,
            **({"stop": list(stop)} if stop else {}),
        }
        try:
            response = self._client.request(
                "POST",
                "/chat/completions",
                content=json.dumps(body).encode(),
                headers={"Content-Type": "application/json"},
                stream=True,
            )
        except TransportError as exc:
            raise ModelUnavailable(
                f"the upstream model at {self.url} cannot be reached: {exc.kind}",
                url=self.url,
            ) from exc
        if not response.is_success:
            raise _refusal(response, self.url)
        return UpstreamStream(response, self.url)


class UpstreamStream:
    """The text pieces of one upstream answer; ``usage`` once they are exhausted (``None`` when
    the server sent no counts). The connection is let go of at the end of the stream, or when
    the stream is dropped unread."""

    def __init__(self, response: Response, url: str) -> None:
        self._response = response
        self._url = url
        self._usage: TokenUsage | None = None
        weakref.finalize(self, response.close)

    @property
    def usage(self) -> TokenUsage | None:
        return self._usage

    def __iter__(self) -> Iterator[str]:
        finished = False
        try:
            for data in event_data(self._response.iter_lines(), last_unterminated=True):
                if data.strip() == "[DONE]":
                    finished = True
                    break
                chunk = self._chunk(data)
                if chunk.usage is not None:
                    self._usage = chunk.usage.counts()
                for choice in chunk.choices:
                    if choice.delta is not None and choice.delta.content:
                        yield choice.delta.content
                    finished = finished or choice.finish_reason is not None
        except TransportError as exc:
            raise ModelUnavailable(
                f"the answer from the upstream model at {self._url} broke off: {exc.kind}",
                url=self._url,
            ) from exc
        finally:
            self._response.close()
        if not finished:
            raise UpstreamError(
                f"the answer from the upstream model at {self._url} ended before it was complete",
                url=self._url,
            )

    def _chunk(self, data: str) -> _Chunk:
        try:
            chunk = _Chunk.model_validate_json(data)
        except ValidationError as exc:
            raise UpstreamError(
                f"the upstream model at {self._url} sent an event that is not a chat completion "
                f"chunk: {_clipped(data)}",
                url=self._url,
            ) from exc
        if chunk.error is not None:
            message = _message_of({"error": chunk.error}) or "no message"
            raise UpstreamError(
                f"the upstream model at {self._url} failed while answering: {message}",
                url=self._url,
            )
        return chunk


def shown_url(url: str) -> str:
    """``url`` without the user and password it may carry."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _checked_url(base_url: str) -> str:
    parts = urlsplit(base_url) if isinstance(base_url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(
            "an upstream model's URL is http(s)://host[:port][/path], e.g. http://localhost:8000/v1"
        )
    return base_url.rstrip("/")


def _refusal(response: Response, url: str) -> ModelUnavailable:
    """The typed error of a non-2xx answer: 5xx, the upstream failed (it may answer later);
    anything else, it refused this request."""
    body = response.read_at_most(_ERROR_BODY_BYTES)
    status = response.status
    message = _message_of(_json_or_none(body)) or _clipped(body.decode("utf-8", "replace"))
    said = f"{status} {response.reason}" + (f": {message}" if message else "")
    if status >= 500:
        return ModelUnavailable(
            f"the upstream model at {url} failed: {said}", url=url, upstream_status=status
        )
    hint = " (check the upstream's API key)" if status in (401, 403) else ""
    return UpstreamError(
        f"the upstream model at {url} refused the chat: {said}{hint}",
        url=url,
        upstream_status=status,
    )


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


def _message_of(body: Any) -> str:
    """The message of an error body in OpenAI's shape (``{"error": {"message": ...}}``), in
    MemOS's envelope (the same, with a ``code``), or FastAPI's (``{"detail": ...}``)."""
    if not isinstance(body, dict):
        return ""
    error = body.get("error", body.get("detail"))
    if isinstance(error, dict):
        error = error.get("message")
    return _clipped(error) if isinstance(error, str) else ""


def _clipped(text: str) -> str:
    text = " ".join(text.split())
    if len(text) <= _ERROR_MESSAGE_CHARS:
        return text
    return text[: _ERROR_MESSAGE_CHARS - 1] + "…"


# OpenAI's chat completion chunk, the fields read here (servers add their own) ------------------


class _Lenient(Model):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _Delta(_Lenient):
    content: str | None = None


class _Choice(_Lenient):
    delta: _Delta | None = None
    finish_reason: str | None = None


class _PromptDetails(_Lenient):
    cached_tokens: int | None = None


class _Usage(_Lenient):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_tokens_details: _PromptDetails | None = None

    def counts(self) -> TokenUsage:
        details = self.prompt_tokens_details
        cached = 0 if details is None or details.cached_tokens is None else details.cached_tokens
        return TokenUsage(self.prompt_tokens, self.completion_tokens, cached)


class _Chunk(_Lenient):
    choices: tuple[_Choice, ...] = ()
    usage: _Usage | None = None
    error: dict[str, Any] | str | None = None


def configured_upstream(
    url: str | None, model: str | None, *, api_key: str | None, local_model: object = None
) -> OpenAICompatible | None:
    """The upstream a configuration names (``--llm-url`` and ``--llm-model``: both or
    neither, and not beside a ``local_model``), or ``None``."""
    if url is None and model is None:
        return None
    if url is None or model is None:
        raise InvalidInput("an upstream model needs both --llm-url and --llm-model")
    if local_model is not None:
        raise InvalidInput(
            "--model (a local model) and --llm-url (an upstream one) exclude each other: "
            "chat goes through one model"
        )
    return OpenAICompatible(url, model, api_key=api_key)
