"""JSON and sockets straight from CPython's C modules, for a fast start under emulation.

Importing ``json`` (through ``re`` and ``enum``), ``socket`` (through ``selectors`` and ``enum``),
``signal`` (``enum``) and ``collections`` costs about 0.8 s of CPU in a guest that QEMU emulates
(TCG) — more than the rest of the service's start-up. Their C cores (``_json``, ``_socket``,
``_signal``, ``_collections``) do the actual work, so this module uses them directly. ``loads``
and ``dumps`` behave like ``json.loads``/``json.dumps(separators=(",", ":"))`` for the documents
this service handles, except that NaN and Infinity, which are not JSON, are refused.
"""

import _json
import _socket

__all__ = ["dumps", "listen", "loads"]

_WHITESPACE = " \t\n\r"


class _Context:
    """The attributes ``_json.make_scanner`` reads (what ``json.JSONDecoder`` would hold)."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    memo: dict[str, str] = {}

    @staticmethod
    def parse_constant(name: str) -> float:
        raise ValueError(f"{name} is not a JSON number")


_scan = _json.make_scanner(_Context())
_encode = _json.make_encoder(
    None, None, _json.encode_basestring_ascii, None, ":", ",", True, False, False
)


def loads(data: "bytes | str") -> object:
    """Decode one JSON document; ``ValueError`` says what is wrong and where."""
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    start = len(text) - len(text.lstrip(_WHITESPACE))
    try:
        value, end = _scan(text, start)
    except StopIteration as stop:
        raise ValueError(f"expecting a value at character {stop.value}") from None
    finally:
        _Context.memo.clear()
    rest = text[end:]
    if rest.strip(_WHITESPACE):
        raise ValueError(f"extra data after the document at character {end}")
    return value


def dumps(value: object) -> str:
    """Compact JSON with sorted keys."""
    return "".join(_encode(value, 0))


def listen(host: str, port: int, backlog: int = 128) -> "_socket.socket":
    """A non-blocking TCP listening socket."""
    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
    sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


def accept(listener: "_socket.socket") -> "_socket.socket":
    """The next connection, non-blocking with Nagle off; ``BlockingIOError`` when none waits."""
    fd, _addr = listener._accept()
    conn = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM, 0, fd)
    conn.setblocking(False)
    conn.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
    return conn
