"""Request body limits: size (413) and a read timeout (408), enforced as the body arrives.

A 413 is only useful if the client can read it. Most clients send the whole body before they
read anything; closing the connection with part of the body still unread makes the kernel
answer with a reset, and the client sees "connection reset" instead of the 413. So, like
nginx's lingering close, the rest of the body is read and thrown away first, within bounds
(`LINGER_BYTES`, `LINGER_SECONDS`, and the per-read timeout), and only then answered.
"""

from __future__ import annotations

import asyncio
import time

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from crm_pipeline.api.problems import PROBLEM_JSON

DEFAULT_BODY_TIMEOUT_SECONDS = 10.0
# What may be read and discarded after the limit is passed, so the client reads the 413. It
# costs only the client's upload time (bounded below), not memory; 16 MiB covers a client that
# sends a few MB "blind", whatever the configured limit.
LINGER_BYTES = 16 * 1024 * 1024
LINGER_SECONDS = 30.0  # as nginx's lingering_time


class _BodyError(Exception):
    """The body broke a limit; raised into the app from `receive`, answered by the middleware."""


def _declared_body(scope: Scope) -> tuple[int | None, bool]:
    """(Content-Length, or None when absent or malformed; whether it expects `100 Continue`)."""
    declared: int | None = None
    expects_continue = False
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                declared = int(value)
            except ValueError:
                declared = None
        elif name == b"expect" and value.lower() == b"100-continue":
            expects_continue = True
    return declared, expects_continue


class _BodyGuard:
    """One request's `receive` and `send`, as the app sees them: the body counted and timed
    as it arrives, and, once it broke a limit, the app's own answer held back."""

    def __init__(self, receive: Receive, send: Send, max_bytes: int, timeout: float) -> None:
        self._receive = receive
        self._send = send
        self._max_bytes = max_bytes
        self._timeout = timeout
        self.received = 0
        self.complete = False  # the whole body arrived: later receives only wait for a disconnect
        self.failure: int | None = None  # 413 or 408 once the body broke a limit
        self.started = False  # the app's response has started

    async def receive(self) -> Message:
        """The next message, or `_BodyError` once the body is too large or too slow."""
        if self.failure is not None:
            raise _BodyError
        if self.complete:
            return await self._receive()
        try:
            async with asyncio.timeout(self._timeout):
                message = await self._receive()
        except TimeoutError:
            self.failure = 408
            raise _BodyError from None
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            self.complete = not message.get("more_body", False)
            if self.received > self._max_bytes:
                self.failure = 413
                raise _BodyError
        return message

    async def send(self, message: Message) -> None:
        """Pass the app's message on, unless the body broke a limit (then the answer is ours)."""
        if self.failure is not None:
            return
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)


class BodySizeLimit:
    """Answer 413 when a body exceeds `max_bytes` (declared Content-Length or streamed), and
    408 when the client stops sending its body for `body_timeout` seconds."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        body_timeout: float = DEFAULT_BODY_TIMEOUT_SECONDS,
        linger_bytes: int = LINGER_BYTES,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.body_timeout = body_timeout
        self.linger_bytes = linger_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared, expects_continue = _declared_body(scope)
        if declared is not None and declared > self.max_bytes:
            # Reading would make the server send `100 Continue` to a client that waits for it.
            if not expects_continue and declared <= self.linger_bytes:
                await self._discard_rest(receive)
            await self._too_large(send)
            return
        guard = _BodyGuard(receive, send, self.max_bytes, self.body_timeout)
        try:
            await self.app(scope, guard.receive, guard.send)
        except Exception:
            # The app may let our error through, or wrap it in one of its own.
            if guard.failure is None:
                raise
        if guard.failure is None or guard.started:
            return
        if guard.failure == 413:
            if not guard.complete:  # the last chunk may be the one that broke the limit
                await self._discard_rest(receive)
            await self._too_large(send)
        else:
            await _reject(
                send,
                408,
                "Request timeout",
                f"No body data arrived for {self.body_timeout:g} seconds.",
            )

    async def _discard_rest(self, receive: Receive) -> None:
        """Read and drop what is left of the body, within LINGER_BYTES and LINGER_SECONDS."""
        deadline = time.monotonic() + LINGER_SECONDS
        discarded = 0
        while discarded <= self.linger_bytes:
            timeout = min(self.body_timeout, deadline - time.monotonic())
            if timeout <= 0:
                return
            try:
                async with asyncio.timeout(timeout):
                    message = await receive()
            except TimeoutError:
                return
            if message["type"] != "http.request":
                return  # the client went away
            discarded += len(message.get("body", b""))
            if not message.get("more_body", False):
                return

    async def _too_large(self, send: Send) -> None:
        await _reject(send, 413, "Request body too large", f"The limit is {self.max_bytes} bytes.")


async def _reject(send: Send, status: int, title: str, detail: str) -> None:
    body = orjson.dumps({"type": "about:blank", "title": title, "status": status, "detail": detail})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", PROBLEM_JSON.encode()),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
