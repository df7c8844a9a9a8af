"""uvicorn's HTTP protocol, answering unparseable requests with the contract's error shape.

A request that is not valid HTTP/1.1 (an unknown method token, a malformed
``Content-Length``, a control character in a header, a request line the parser
refuses) never reaches the ASGI app: uvicorn's parser answers it on its own,
with ``400 text/plain``. Clients of this API parse every error as
``{"error": {...}}``, so this subclass keeps uvicorn's behaviour (a 400, then
the connection closed, since the rest of the stream cannot be trusted) and only
changes the body: ``400 bad_request`` in the one error shape, with a fresh
request id in the body and in ``X-Request-Id``. A request line and headers over
64 KiB in all (``HEAD_LIMIT``) get ``431 headers_too_large`` the same way:
uvicorn sets no such limit, so one header line of gigabytes was read into memory.
A request line and headers must also arrive within ``head_timeout()`` (20 s by
default) of the connection's opening or, later, the request's first byte, else ``408
request_timeout`` (a connection that sent nothing is just closed): uvicorn times
out idle connections only after an answer, so connections opened and left silent,
or fed a header a byte at a time, were held for ever. A body that does not come
with its head gets the same time, extended by a second per ``BODY_MIN_RATE``
bytes received, else 408; the route reading it then logs the request as that 408.

It also serves requests that ask to switch protocols (``Upgrade: websocket``,
``h2c``) as the plain HTTP/1.1 requests they also are: this API has no WebSocket
route, ``serve`` runs uvicorn with ``ws="none"``, and RFC 9110 (7.8) lets a server
ignore ``Upgrade``. Without this, uvicorn answered a WebSocket handshake with an
empty ``403 text/plain`` (or, with ``ws="none"``, logged two warnings about a
missing WebSocket library for every such request). httptools stops reading a
connection at an ``Upgrade`` head and skips its body, so such a request with a
body is refused (400), and one without is answered with ``Connection: close``.

``onehazel serve`` passes the class ``JsonErrorHttpToolsProtocol`` to uvicorn as its
``http`` protocol (``cli.serve``); it relies on uvicorn's internals, so pyproject.toml
bounds uvicorn to the versions it was checked with.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import deque
from typing import Any, cast

import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from onehazel.api.observability import incoming_request_id
from onehazel.config import Config
from onehazel.domain.errors import ApiError, BadRequest, HeadersTooLarge, RequestTimeout
from onehazel.services.ids import random_hex

log = logging.getLogger("onehazel")

# Set in a request's ASGI scope when its body was refused here: the ApiError class answered.
REFUSED = "onehazel.refused"

MALFORMED_HTTP_MESSAGE = "the request is not valid HTTP/1.1 and could not be read; the connection is closed"
# The request line and headers together; the parser keeps them in memory until they end.
HEAD_LIMIT = 64 * 1024
HEAD_TOO_LARGE_MESSAGE = (
    f"the request line and headers are over the {HEAD_LIMIT // 1024} KiB limit; the connection is closed"
)

HEAD_TIMEOUT_MESSAGE = "the request line and headers did not arrive in time; the connection is closed"
# A body has the head timeout, extended by a second for every BODY_MIN_RATE bytes received
# (Apache's mod_reqtimeout "body=20,MinRate=500"): slow links pass, a stalled body does not.
BODY_MIN_RATE = 500


def error_answer(error: ApiError, request_id: str, default_headers: list[tuple[bytes, bytes]]) -> bytes:
    """A whole HTTP response (status line, headers, the error's body) that closes the connection."""
    body = orjson.dumps(error.body(request_id))
    content = [STATUS_LINE[error.status]]
    for name, value in default_headers:
        content.extend([name, b": ", value, b"\r\n"])
    content.extend(
        [
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
            b"x-request-id: " + request_id.encode("ascii") + b"\r\n",
            b"connection: close\r\n",
            b"\r\n",
            body,
        ]
    )
    return b"".join(content)


class _Refused(Exception):
    """Raised in a parser callback: httptools stops and uvicorn calls ``send_400_response``,
    which answers with the refusal recorded in ``_refusal``."""


_Refusal = tuple[type[ApiError], str, str]  # the error answered, its message, the log line
_MALFORMED: _Refusal = (BadRequest, MALFORMED_HTTP_MESSAGE, "malformed HTTP request")
_TOO_LARGE: _Refusal = (HeadersTooLarge, HEAD_TOO_LARGE_MESSAGE, "request head too large")
_UPGRADE_WITH_BODY: _Refusal = (
    BadRequest,
    "a request with both an Upgrade header and a body is not served (the parser would skip the body); "
    "send it without Upgrade (curl: --http1.1); the connection is closed",
    "Upgrade request with a body",
)
_TIMED_OUT: _Refusal = (RequestTimeout, HEAD_TIMEOUT_MESSAGE, "request head timed out")
_BODY_TIMED_OUT: _Refusal = (
    RequestTimeout,
    f"the request body did not arrive in time (at least {BODY_MIN_RATE} bytes a second after the first "
    "seconds); the connection is closed",
    "request body timed out",
)


@functools.cache
def head_timeout() -> float:
    """ONEHAZEL_HEAD_TIMEOUT_SECONDS (``Config.head_timeout_seconds``; ``serve`` checked it)."""
    return Config.load().head_timeout_seconds()


class JsonErrorHttpToolsProtocol(HttpToolsProtocol):
    _awaiting_head = False  # a request has begun and its line and headers have not all come
    _head_bytes = 0  # bytes received while it was so (or while trailers were)
    _in_trailers = False  # after a chunked body's last chunk: trailer fields, counted as a head
    _began = _completed = _body_read = False  # in this read: a request began, one completed, body
    _body_open = False  # the newest request's head is in and its body has not all come
    _refusal: _Refusal = _MALFORMED
    _head_timer: asyncio.TimerHandle | None = None
    _body_timer: asyncio.TimerHandle | None = None
    _body_of: object = None  # the request (uvicorn's cycle) whose body the body timer waits for
    _body_since = _body_last = 0.0  # when it started to wait; when a body byte last came
    _body_bytes = 0
    _after_answers: bytes | None = None  # a refusal to write once the answers under way are

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()  # uvicorn times out idle connections only after an answer

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        self._disarm_body_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """As uvicorn's, but a request line and headers (or a chunked body's trailers) over
        ``HEAD_LIMIT`` bytes are refused (431), also while they are still arriving: the
        parser would keep all of them in memory; and a timer watches a connection that
        waits for a head or a body.

        While a head is incomplete, a read is counted whole if it is all head (the head
        went on from an earlier read) or starts with it (a client waits for each answer
        before sending the next request); with pipelined requests, a read in which one
        request completed and the next began is not counted, nor is the read in which
        trailers start. ``on_headers_complete`` then measures a head exactly."""
        if self._after_answers is not None:
            return  # refused: the rest of the stream is not read (body of _refuse)
        self._began = self._completed = self._body_read = False
        trailing = self._in_trailers
        super().data_received(data)
        if self.transport.is_closing():
            return
        head = self._awaiting_head and not (self._began and self._completed)
        if head or (trailing and self._in_trailers and not self._body_read):
            self._head_bytes += len(data)
        if self._head_bytes > HEAD_LIMIT:
            self._refuse(_TOO_LARGE)
        elif self._body_open:
            if self._body_of is not self.cycle:  # a body that did not come with its head
                self._body_of = self.cycle
                self._body_since = self._body_last = self.loop.time()
                if self._body_timer is None:
                    self._body_timer = self.loop.call_later(head_timeout(), self._body_timed_out)
        elif (
            self._head_timer is None
            and self.timeout_keep_alive_task is None
            and not self._awaiting_head
            and (self.cycle is None or self.cycle.response_complete)
        ):
            # Bytes that began no request (a CRLF between requests): uvicorn's data_received
            # cancelled its keep-alive timer, and arms it again only after an answer.
            self._arm_head_timer()

    def _disarm_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _body_timed_out(self) -> None:
        """A body (answered or not) must keep coming: at ``BODY_MIN_RATE`` on average after
        the first ``head_timeout()`` seconds, and never silent for that long; else 408 (or,
        if it was answered already, the connection is closed). Its clock starts again while
        the request waits behind another one or uvicorn holds reading (the app is behind)."""
        self._body_timer = None
        if self.transport.is_closing() or self._body_of is not self.cycle or not self._body_open:
            return
        now = self.loop.time()
        if self.pipeline or self.flow.read_paused:
            self._body_since = self._body_last = now
        timeout = head_timeout()
        earned = self._body_since + timeout + self._body_bytes / BODY_MIN_RATE
        deadline = min(earned, self._body_last + timeout)
        if now < deadline:
            self._body_timer = self.loop.call_later(deadline - now, self._body_timed_out)
        else:
            self._refuse(_BODY_TIMED_OUT)

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(head_timeout(), self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        """No complete request line and headers within the timeout: a partial head gets
        408; a connection that sent no request is closed (nothing was asked)."""
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self._arm_head_timer()  # pipelined: reading waits on the answer in progress
        elif self._awaiting_head:
            self._refuse(_TIMED_OUT)
        else:
            self.transport.close()

    def on_message_begin(self) -> None:
        self._awaiting_head, self._head_bytes, self._began = True, 0, True
        self._arm_head_timer()
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._awaiting_head = False
        self._disarm_head_timer()
        if len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers) > HEAD_LIMIT:
            self._refusal = _TOO_LARGE
            raise _Refused
        upgrade = self.parser.should_upgrade()
        if upgrade and any(
            name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0")
            for name, value in self.headers
        ):
            self._refusal = _UPGRADE_WITH_BODY
            raise _Refused
        self._body_open, self._body_bytes = True, 0
        super().on_headers_complete()
        if upgrade:
            # No upgrade is done (ws="none") and the request is served as HTTP/1.1, but the
            # parser has stopped reading this connection: close it after the answer, so a
            # request sent behind this one fails at once instead of waiting unanswered.
            self.cycle.keep_alive = False

    def on_chunk_header(self) -> None:
        self._in_trailers = True  # until the chunk's data: the last chunk has none
        self._head_bytes = 0

    def on_body(self, body: bytes) -> None:
        self._in_trailers, self._body_read = False, True
        self._body_bytes += len(body)
        self._body_last = self.loop.time()
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._completed, self._in_trailers, self._body_open = True, False, False
        self._disarm_body_timer()  # (else each request whose body came apart left one for 20 s)
        answered = self.cycle is not None and self.cycle.response_complete
        super().on_message_complete()
        if answered and not self.pipeline and self.timeout_keep_alive_task is None:
            # Answered before its body ended: uvicorn armed its keep-alive timer at the
            # answer, and the body's bytes cancelled it. The connection is idle now.
            self._disarm_head_timer()
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )

    def send_400_response(self, msg: str) -> None:
        refusal, self._refusal = self._refusal, _MALFORMED
        self._refuse(refusal)

    def _refuse(self, refusal: _Refusal) -> None:
        """Answer ``refusal`` and close. When an earlier request's answer is under way or
        queued (pipelining), the refusal waits until those answers are written (an error
        written now would land inside one); when the failing bytes are the rest of a body
        already answered, the connection is just closed (it would answer twice)."""
        error_class, message, logged = refusal
        error = error_class(message)
        cycle, queued = self.cycle, bool(self.pipeline)
        own_body = cycle is not None and self._body_open and not queued and not cycle.response_started
        new_request = not queued and (cycle is None or (not self._body_open and cycle.response_complete))
        request_id = "req_" + random_hex(12)
        if own_body:
            # The app reads (or is about to read) this body: it sees the connection go, and
            # logs and counts the request with this status and id (body.read_body).
            scope = cast(dict[str, Any], cycle.scope)
            request_id = str(scope.get("request_id") or incoming_request_id(scope))
            scope["request_id"], scope[REFUSED] = request_id, error_class
        log.warning(logged, extra={"fields": {"requestId": request_id, "status": error.status}})
        answer = error_answer(error, request_id, self.server_state.default_headers)
        answered = cycle is not None and self._body_open and not queued and cycle.response_started
        if own_body or new_request:
            self.transport.write(answer)
        elif not (answered and cycle is not None and cycle.response_complete):
            if queued and self._body_open:  # the failing request waits in the queue: drop it
                self.pipeline = deque(entry for entry in self.pipeline if entry[0] is not cycle)
            self._after_answers = b"" if answered else answer  # (its own answer is its answer)
            self.flow.pause_reading()
            return
        self.transport.close()

    def on_response_complete(self) -> None:
        waiting = len(self.pipeline)
        super().on_response_complete()
        if self._after_answers is not None and not waiting and not self.transport.is_closing():
            self.transport.write(self._after_answers)  # every earlier answer is written now
            self.transport.close()

    def _unsupported_upgrade_warning(self) -> None:
        """Called by uvicorn for an ``Upgrade`` it will not do; the request is served as HTTP/1.1."""
