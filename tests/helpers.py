"""Assertions shared by the API tests: the contract's single error shape."""

from __future__ import annotations

from typing import Any

import httpx


def assert_error_shape(response: httpx.Response) -> dict[str, Any]:
    """The body is exactly {"error": {code, message, requestId, details?}}; returns the error."""
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert {"code", "message", "requestId"} <= set(error) <= {"code", "message", "requestId", "details"}
    assert isinstance(error["code"], str)
    assert isinstance(error["message"], str)
    assert error["message"]
    assert error["requestId"] == response.headers["x-request-id"]
    if "details" in error:
        assert isinstance(error["details"], list)
        assert error["details"]
        for detail in error["details"]:
            assert set(detail) == {"path", "code", "message"}
            assert all(isinstance(v, str) for v in detail.values())
    assert response.headers["content-type"].startswith("application/json")
    return dict(error)


def error_of(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """Assert an error response with this status and code; returns the error object."""
    assert response.status_code == status, response.text[:500]
    error = assert_error_shape(response)
    assert error["code"] == code, error
    return error


def detail_codes(response: httpx.Response) -> list[tuple[str, str]]:
    return [(d["path"], d["code"]) for d in response.json()["error"].get("details", [])]


def http_scope(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    """An ASGI HTTP scope for ``path`` (already under the base path), as uvicorn builds one,
    for tests that drive the app's ASGI callable themselves."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1234),
        "server": ("testserver", 80),
    }
