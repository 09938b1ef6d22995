"""A small client for any OpenAI-compatible chat-completions endpoint, with retries and backoff.

The endpoint's base URL and key are read from the environment variables named in params when the
first request is made (never at import, never from params), so a run answered entirely from the
cache needs neither. The key travels only in the Authorization header: it is not stored in any
attribute that is printed, logged, cached or raised.

`timeout_s` is a deadline for the whole attempt (connect, headers and body). requests' own timeout
bounds each socket read only, so a server trickling a byte every 0.5 s held one request for minutes;
here a watchdog shuts the attempt's socket down when its deadline passes, and the attempt counts as
a timeout (retried like one).
"""

from __future__ import annotations

import base64
import email.utils
import ipaddress
import logging
import os
import socket
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529})
FATAL_STATUS = frozenset({401, 403, 404})


class ChatError(RuntimeError):
    """One request failed for good (retries exhausted, a rejected request, a malformed reply)."""


class ChatConfigError(RuntimeError):
    """The endpoint cannot be used at all (missing environment variable, bad key, wrong URL)."""


def image_part(data: bytes, source: str = "image") -> dict:
    """An image_url content part carrying the JPEG (or PNG) bytes inline as base64."""
    if data[:3] == b"\xff\xd8\xff":
        mime = "image/jpeg"
    elif data[:8] == b"\x89PNG\r\n\x1a\n":
        mime = "image/png"
    else:
        raise ValueError(f"{source}: not a JPEG or PNG image")
    return {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"}}


@dataclass
class ChatClient:
    model: str
    base_url_env: str
    api_key_env: str
    timeout_s: float = 60.0
    retries: int = 5
    backoff_s: float = 1.0
    temperature: float = 0.0
    sleep: Callable[[float], None] = time.sleep
    requests_sent: int = 0  # HTTP attempts, retries included
    sleeps: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self._session: requests.Session | None = None

    def __repr__(self) -> str:  # never show the key, not even by accident in a traceback
        return f"ChatClient(model={self.model!r}, base_url_env={self.base_url_env!r})"

    @property
    def max_wait_s(self) -> float:
        """Longest pause between attempts; a server's Retry-After is honoured up to this."""
        return self.backoff_s * 2 ** max(self.retries, 0)

    def _endpoint(self) -> tuple[str, str]:
        base = os.environ.get(self.base_url_env, "").strip()
        key = os.environ.get(self.api_key_env, "").strip()
        if not base:
            raise ChatConfigError(
                f"annotate.llm: environment variable {self.base_url_env} (the endpoint's "
                "base URL, e.g. https://api.openai.com/v1) is not set"
            )
        if not key:
            raise ChatConfigError(f"annotate.llm: environment variable {self.api_key_env} (the API key) is not set")
        if urlparse(base).scheme not in ("http", "https"):
            raise ChatConfigError(f"annotate.llm: {self.base_url_env} must be an http(s) URL")
        return base.rstrip("/") + "/chat/completions", key

    def _new_session(self, url: str) -> requests.Session:
        session = requests.Session()
        # No .netrc or proxy from the environment for loopback endpoints: the request goes exactly
        # where the URL says, with exactly our Authorization header.
        session.trust_env = not _is_loopback(url)
        self._sockets: weakref.WeakSet = weakref.WeakSet()
        adapter = _tracking_adapter(self._sockets)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        return session

    def _post(self, url: str, body: dict, headers: dict) -> requests.Response:
        """One attempt within the deadline timeout_s (raises requests.Timeout past it)."""
        expired = threading.Event()

        def abort() -> None:
            expired.set()
            for sock in list(self._sockets):
                try:
                    sock.shutdown(socket.SHUT_RDWR)  # unblocks the read in progress
                except OSError:
                    pass

        watchdog = threading.Timer(self.timeout_s, abort)
        watchdog.daemon = True
        watchdog.start()
        try:
            resp = self._session.post(url, json=body, headers=headers, timeout=self.timeout_s, stream=True)
            resp.content  # the body, read under the same deadline  # noqa: B018
            return resp
        except (requests.RequestException, OSError) as err:
            if expired.is_set():
                raise requests.Timeout(f"no complete response within the {self.timeout_s:g} s deadline") from err
            raise
        finally:
            watchdog.cancel()

    def complete(self, messages: list[dict[str, Any]]) -> str:
        """Send one chat request; return the reply text. Retries 429/5xx/timeouts with backoff."""
        url, key = self._endpoint()
        if self._session is None:
            self._session = self._new_session(url)
        body = {"model": self.model, "messages": messages, "temperature": self.temperature}
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        last = "no attempt"
        retry_after: float | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                self._wait(attempt, retry_after)
            retry_after = None
            self.requests_sent += 1
            try:
                resp = self._post(url, body, headers)
            except (requests.Timeout, requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as err:
                last = f"{type(err).__name__}"
                log.info("chat request attempt %d failed: %s", attempt + 1, last)
                continue
            if resp.status_code == 200:
                return _reply_text(resp)
            if resp.status_code in FATAL_STATUS:
                raise ChatConfigError(
                    f"annotate.llm: the endpoint refused the request with HTTP {resp.status_code} "
                    f"(check {self.api_key_env}, {self.base_url_env} and the model name "
                    f"{self.model!r})"
                )
            last = f"HTTP {resp.status_code}: {_redact(resp.text[:200], key)}"
            if resp.status_code not in RETRY_STATUS:
                raise ChatError(f"chat request rejected: {last}")
            retry_after = _retry_after(resp.headers.get("Retry-After"))
            log.info("chat request attempt %d failed: HTTP %d", attempt + 1, resp.status_code)
        raise ChatError(f"chat request failed after {self.retries + 1} attempts; last: {last}")

    def _wait(self, attempt: int, retry_after: float | None) -> None:
        delay = self.backoff_s * 2 ** (attempt - 1)
        if retry_after is not None:
            delay = max(delay, retry_after)
        delay = min(delay, self.max_wait_s)
        self.sleeps.append(delay)
        self.sleep(delay)


def _tracking_adapter(sockets: weakref.WeakSet) -> HTTPAdapter:
    """A requests adapter whose connections register their sockets in `sockets` (for the watchdog)."""

    class Tracked(HTTPConnection):
        def connect(self) -> None:
            super().connect()
            sockets.add(self.sock)

    class TrackedTLS(HTTPSConnection):
        def connect(self) -> None:
            super().connect()
            sockets.add(self.sock)

    class Pool(HTTPConnectionPool):
        ConnectionCls = Tracked

    class PoolTLS(HTTPSConnectionPool):
        ConnectionCls = TrackedTLS

    classes = {"http": Pool, "https": PoolTLS}

    class Adapter(HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = classes

        def proxy_manager_for(self, proxy: str, **kwargs: Any):
            manager = super().proxy_manager_for(proxy, **kwargs)
            manager.pool_classes_by_scheme = classes
            return manager

    return Adapter()


def _is_loopback(url: str) -> bool:
    host = urlparse(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


def _reply_text(resp: requests.Response) -> str:
    try:
        content = resp.json()["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError) as err:
        raise ChatError(f"malformed chat response (no choices[0].message.content): {type(err).__name__}") from None
    if isinstance(content, list):  # some servers return content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if not isinstance(content, str):
        raise ChatError("malformed chat response: content is not text")
    return content


def _redact(text: str, key: str) -> str:
    return text.replace(key, "[redacted]") if key else text
