"""uvicorn's HTTP protocol, answering unparseable requests with the contract's error shape.

A request that is not valid HTTP/1.1 (an unknown method token, a malformed
``Content-Length``, a control character in a header, a request line the parser
refuses) never reaches the ASGI app: uvicorn's parser answers it on its own,
with ``400 text/plain``. Clients of this API parse every error as
``{"error": {...}}``, so this subclass keeps uvicorn's behaviour (a 400, then
the connection closed, since the rest of the stream cannot be trusted) and only
changes the body: ``400 bad_request`` in the one error shape, with a fresh
request id in the body and in ``X-Request-Id``.

It also serves requests that ask to switch protocols (``Upgrade: websocket``,
``h2c``) as the plain HTTP/1.1 requests they also are: this API has no WebSocket
route, ``serve`` runs uvicorn with ``ws="none"``, and RFC 9110 (7.8) lets a server
ignore ``Upgrade``. Without this, uvicorn answered a WebSocket handshake with an
empty ``403 text/plain`` (or, with ``ws="none"``, logged two warnings about a
missing WebSocket library for every such request).

``onehazel serve`` passes ``onehazel.api.http_protocol:JsonErrorHttpToolsProtocol``
to uvicorn as its ``http`` protocol (``cli.serve``).
"""

from __future__ import annotations

import logging

import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from onehazel.services.ids import random_hex

log = logging.getLogger("onehazel")

MALFORMED_HTTP_MESSAGE = "the request is not valid HTTP/1.1 and could not be read; the connection is closed"


def malformed_http_answer(request_id: str, default_headers: list[tuple[bytes, bytes]]) -> bytes:
    """The whole HTTP response for an unparseable request (status line, headers, JSON body)."""
    body = orjson.dumps(
        {"error": {"code": "bad_request", "message": MALFORMED_HTTP_MESSAGE, "requestId": request_id}}
    )
    content = [STATUS_LINE[400]]
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


class JsonErrorHttpToolsProtocol(HttpToolsProtocol):
    def send_400_response(self, msg: str) -> None:
        request_id = "req_" + random_hex(12)
        log.warning("malformed HTTP request", extra={"fields": {"requestId": request_id, "status": 400}})
        self.transport.write(malformed_http_answer(request_id, self.server_state.default_headers))
        self.transport.close()

    def _unsupported_upgrade_warning(self) -> None:
        """Called by uvicorn for an ``Upgrade`` it will not do; the request is served as HTTP/1.1."""
