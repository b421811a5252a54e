"""A cap on request bodies, as one plain ASGI middleware any ukedge server can put first.

Every body a server's JSON API takes is small; without a cap one request (unauthenticated, on
routes such as the controller's enrolment) could make the server hold whatever a client sends.
Bodies announced larger (``Content-Length``) are refused unread; streamed ones as soon as they
pass the limit. ``error`` renders the refusal in the server's own error shape.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["BodyLimit"]


class BodyLimit:
    """Refuses request bodies over ``limit`` bytes with 413 (body: ``error(message)``)."""

    def __init__(self, app: ASGIApp, *, limit: int, error: Callable[[str], bytes]) -> None:
        self.app = app
        self.limit = limit
        self.error = error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await self._refuse(send)
                return
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.limit:
                await self._refuse(send)
                return
            if not message.get("more_body", False):
                break
        buffered = iter(messages)

        async def replay() -> Message:
            return next(buffered, None) or await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send) -> None:
        body = self.error(f"request body over {self.limit} bytes; send less at once")
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})
