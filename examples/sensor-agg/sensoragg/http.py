"""A small HTTP/1.1 server on ``epoll``: one thread, non-blocking sockets, keep-alive.

``http.server`` would import email, mimetypes, html and more, and even ``socket`` and
``selectors`` cost milliseconds per boot that an emulated CPU turns into tenths of a second; this
module needs only ``select``, ``time`` and the C socket module (see :mod:`sensoragg.lean`).
It implements what a JSON API needs: persistent connections (HTTP/1.1 default, ``Connection:
close``, HTTP/1.0 keep-alive), pipelined requests, ``Content-Length`` and chunked request
bodies, ``Expect: 100-continue``, HEAD, limits on header and body size, and an idle timeout.
"""

import select
import time

from sensoragg.lean import accept, listen

__all__ = ["HTTPServer", "Request", "Response"]

MAX_HEADER = 16 * 1024
MAX_BODY = 1024 * 1024
IDLE_TIMEOUT = 30.0

_REASONS = {
    100: "Continue",
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    411: "Length Required",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    505: "HTTP Version Not Supported",
}


class Request:
    __slots__ = ("body", "headers", "method", "path", "query", "version")

    def __init__(
        self, method: str, path: str, query: str, version: str, headers: dict[str, str], body: bytes
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.version = version
        self.headers = headers
        self.body = body


class Response:
    __slots__ = ("body", "content_type", "headers", "status")

    def __init__(
        self,
        status: int,
        body: bytes = b"",
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers or {}




class _HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Conn:
    __slots__ = ("buf", "close_after", "continued", "last", "out", "sock", "writing")

    def __init__(self, sock: "_socket.socket") -> None:
        self.sock = sock
        self.buf = bytearray()
        self.out = bytearray()
        self.close_after = False
        self.continued = False  # "100 Continue" sent for the request being read
        self.writing = False  # registered for EPOLLOUT
        self.last = time.monotonic()


def _error_body(message: str) -> bytes:
    return ('{"error": "' + message.replace("\\", "\\\\").replace('"', '\\"') + '"}').encode()


def _parse_chunked(buf: bytearray, start: int) -> tuple[bytes, int] | None:
    """Decode a chunked body at ``buf[start:]``: ``(body, end)``, or ``None`` if incomplete."""
    body = bytearray()
    pos = start
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            if len(buf) - pos > 1024:
                raise _HTTPError(400, "malformed chunk size line")
            return None
        size_text = bytes(buf[pos:eol]).split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise _HTTPError(400, "malformed chunk size") from None
        if size < 0:
            raise _HTTPError(400, "malformed chunk size")
        if size == 0:
            # trailer section: header lines until an empty line
            end = buf.find(b"\r\n\r\n", eol)
            if buf[eol : eol + 4] == b"\r\n\r\n":
                return bytes(body), eol + 4
            if end < 0:
                return None
            return bytes(body), end + 4
        if len(body) + size > MAX_BODY:
            raise _HTTPError(413, f"request body is larger than {MAX_BODY} bytes")
        data_start = eol + 2
        data_end = data_start + size
        if len(buf) < data_end + 2:
            return None
        if buf[data_end : data_end + 2] != b"\r\n":
            raise _HTTPError(400, "chunk data is not followed by CRLF")
        body += buf[data_start:data_end]
        pos = data_end + 2


class HTTPServer:
    """Serves ``handler`` on ``(host, port)``; :meth:`serve` runs until :meth:`stop`."""

    def __init__(self, host: str, port: int, handler: "Callable[[Request], Response]") -> None:
        self.handler = handler
        self.poller = select.epoll()
        self.listener = listen(host, port)
        self.port = self.listener.getsockname()[1]
        self.poller.register(self.listener.fileno(), select.EPOLLIN)
        self.conns: dict[int, _Conn] = {}
        self.running = True

    def stop(self) -> None:
        self.running = False

    def close(self) -> None:
        for conn in list(self.conns.values()):
            self._drop(conn)
        self.listener.close()
        self.poller.close()

    def poll(self, timeout: float | None) -> None:
        """Wait up to ``timeout`` seconds for socket events and handle them."""
        listener = self.listener.fileno()
        try:
            ready = self.poller.poll(-1 if timeout is None else timeout)
        except InterruptedError:
            ready = []
        for fd, events in ready:
            if fd == listener:
                self._accept()
                continue
            conn = self.conns.get(fd)
            if conn is None:
                continue
            if events & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
                self._read(conn)
            if events & select.EPOLLOUT and conn.sock.fileno() >= 0:
                self._flush(conn)
        self._expire()

    def _accept(self) -> None:
        while True:
            try:
                sock = accept(self.listener)
            except OSError:  # BlockingIOError: nobody waiting; others: a client that gave up
                return
            conn = _Conn(sock)
            self.conns[sock.fileno()] = conn
            self.poller.register(sock.fileno(), select.EPOLLIN)

    def _drop(self, conn: _Conn) -> None:
        fd = conn.sock.fileno()
        if fd >= 0:
            self.conns.pop(fd, None)
            try:
                self.poller.unregister(fd)
            except OSError:
                pass
        conn.sock.close()

    def _expire(self) -> None:
        now = time.monotonic()
        for conn in list(self.conns.values()):
            if now - conn.last > IDLE_TIMEOUT and not conn.out:
                self._drop(conn)

    def _read(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(conn)
            return
        if not data:
            self._drop(conn)
            return
        conn.last = time.monotonic()
        conn.buf += data
        self._process(conn)

    def _process(self, conn: _Conn) -> None:
        while conn.buf and not conn.close_after:
            try:
                parsed = self._parse(conn)
            except _HTTPError as exc:
                self._send(conn, Response(exc.status, _error_body(exc.message)), head=False)
                conn.close_after = True
                conn.buf.clear()
                break
            if parsed is None:
                break
            request, keep_alive = parsed
            try:
                response = self.handler(request)
            except Exception as exc:  # a bug in a handler must not take the service down
                response = Response(500, _error_body(f"internal error: {type(exc).__name__}"))
            if not keep_alive:
                conn.close_after = True
            self._send(conn, response, head=request.method == "HEAD")
        self._flush(conn)

    def _parse(self, conn: _Conn) -> tuple[Request, bool] | None:
        buf = conn.buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEADER:
                raise _HTTPError(431, "request header is too large")
            return None
        if end > MAX_HEADER:
            raise _HTTPError(431, "request header is too large")
        try:
            head = bytes(buf[:end]).decode("latin-1")
        except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
            raise _HTTPError(400, "undecodable header") from None
        lines = head.split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            raise _HTTPError(400, "malformed request line")
        method, target, version = parts
        if version not in ("HTTP/1.1", "HTTP/1.0"):
            if version.startswith("HTTP/"):
                raise _HTTPError(505, f"{version} is not supported")
            raise _HTTPError(400, "malformed request line")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                raise _HTTPError(400, "malformed header line")
            key = name.lower()
            value = value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        body_start = end + 4
        te = headers.get("transfer-encoding", "").lower()
        if te:
            if te != "chunked":
                raise _HTTPError(501, f"transfer-encoding {te!r} is not supported")
            if headers.get("expect", "").lower() == "100-continue" and len(buf) == body_start:
                self._continue(conn)
            done = _parse_chunked(buf, body_start)
            if done is None:
                return None
            body, consumed = done
        else:
            length_text = headers.get("content-length", "0")
            if not length_text.isdigit():
                raise _HTTPError(400, "invalid Content-Length")
            length = int(length_text)
            if length > MAX_BODY:
                raise _HTTPError(413, f"request body is larger than {MAX_BODY} bytes")
            if len(buf) < body_start + length:
                if headers.get("expect", "").lower() == "100-continue" and len(buf) == body_start:
                    self._continue(conn)
                return None
            body = bytes(buf[body_start : body_start + length])
            consumed = body_start + length
        del buf[:consumed]
        conn.continued = False
        connection = headers.get("connection", "").lower()
        if version == "HTTP/1.1":
            keep_alive = "close" not in connection
        else:
            keep_alive = "keep-alive" in connection
        path, _, query = target.partition("?")
        return Request(method, path, query, version, headers, body), keep_alive

    def _continue(self, conn: _Conn) -> None:
        if not conn.continued:
            conn.continued = True
            conn.out += b"HTTP/1.1 100 Continue\r\n\r\n"
            self._flush(conn)

    def _send(self, conn: _Conn, response: Response, *, head: bool) -> None:
        reason = _REASONS.get(response.status, "Unknown")
        lines = [
            f"HTTP/1.1 {response.status} {reason}",
            f"Content-Type: {response.content_type}",
            f"Content-Length: {len(response.body)}",
        ]
        lines += [f"{k}: {v}" for k, v in response.headers.items()]
        if conn.close_after:
            lines.append("Connection: close")
        conn.out += ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if not head:
            conn.out += response.body

    def _flush(self, conn: _Conn) -> None:
        if conn.sock.fileno() < 0:
            return
        while conn.out:
            try:
                sent = conn.sock.send(conn.out)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._drop(conn)
                return
            del conn.out[:sent]
        if conn.out:
            if not conn.writing:
                conn.writing = True
                self.poller.modify(conn.sock.fileno(), select.EPOLLIN | select.EPOLLOUT)
            return
        if conn.close_after:
            self._drop(conn)
            return
        if conn.writing:
            conn.writing = False
            self.poller.modify(conn.sock.fileno(), select.EPOLLIN)
