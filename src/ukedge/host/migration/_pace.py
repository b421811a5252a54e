"""Whether to compress the next chunk of a snapshot's state, from what the move measured so far.

zlib level 1 shrinks a guest's RAM about 4× but costs CPU on both agents; on a fast link (the
same host, a LAN) that CPU is the bottleneck and the raw bytes go faster (measured on loopback:
a snapshot move's total 1.2 s raw against 2.2 s with zlib, same run), while on a slow link
(20 Mbit/s) the compressed bytes go 4× faster. So the choice is made per chunk (each chunk says
whether it is compressed; a resumed transfer starts at any chunk): compress while
``compress_cost`` (zlib's seconds per raw byte, spread over the compressing threads, or the
link's time for the compressed bytes, whichever is longer) is below the link's time for the raw
bytes. The link's rate is what sending took (TLS, the target's reading; the sender keeps at
most 256 KiB in its kernel buffer, so a send waits for the link), so it counts the target's own
work too. It is learnt by sending a raw chunk now and then: the first
after a few compressed ones, then one in every :data:`PROBE_EVERY` while compressing wins.
"""

from __future__ import annotations

__all__ = ["PROBE_BYTES", "PROBE_EVERY", "Pace"]

#: While compressing wins, one chunk in this many goes raw, to see whether the link got faster.
PROBE_EVERY = 16
#: A raw chunk sent to learn the link is this small (a slow link pays little for it).
PROBE_BYTES = 256 << 10
#: Compressed chunks sent before the first raw one (their figures tell zlib's cost and ratio).
_LEARN = 2
#: Weight of the newest figure in the running averages.
_WEIGHT = 0.3


def _average(old: float | None, new: float) -> float:
    return new if old is None else (1 - _WEIGHT) * old + _WEIGHT * new


class Pace:
    """Chooses each chunk's zlib level (``level`` or 0) from the figures reported to it; with
    ``level`` 0, never compresses; with ``always``, every chunk. Not thread-safe: one move's
    sending thread uses it."""

    def __init__(self, level: int, threads: int, *, always: bool = False) -> None:
        self.level = level
        self.always = always
        self.threads = max(1, threads)
        #: zlib's seconds per raw byte on one thread, and compressed size over raw size.
        self.zlib_s: float | None = None
        self.ratio: float | None = None
        #: Seconds the link took per byte sent (compressed or not).
        self.wire_s: float | None = None
        self._chosen = 0
        self._compressed = 0
        #: The last choice was a raw chunk to learn the link (send a small one).
        self.probing = False

    @property
    def adaptive(self) -> bool:
        """Whether the choice depends on the figures (the sender then keeps little in kernel
        buffers, so that a send takes as long as the link does)."""
        return self.level > 0 and not self.always

    def next_level(self) -> int:
        """The level for the next chunk to compress (0: send it raw)."""
        self.probing = False
        if self.level == 0 or self.always:
            return self.level
        self._chosen += 1
        if self.zlib_s is None or self.ratio is None or self._compressed < _LEARN:
            return self.level
        if not self.compress_wins():
            return 0
        self.probing = self.wire_s is None or self._chosen % PROBE_EVERY == 0
        return 0 if self.probing else self.level

    def compress_wins(self) -> bool:
        """Whether a compressed byte gets across sooner than a raw one, by the figures so far."""
        if self.zlib_s is None or self.ratio is None or self.wire_s is None:
            return self.level > 0
        compressed = max(self.zlib_s / self.threads, self.wire_s * self.ratio)
        return compressed < self.wire_s

    def compressed(self, raw: int, size: int, seconds: float) -> None:
        """A chunk of ``raw`` bytes compressed to ``size`` in ``seconds`` (on one thread)."""
        if raw <= 0:
            return
        self._compressed += 1
        self.zlib_s = _average(self.zlib_s, seconds / raw)
        self.ratio = _average(self.ratio, size / raw)

    def sent(self, size: int, seconds: float) -> None:
        """``size`` bytes went over the link in ``seconds``."""
        if size > 0:
            self.wire_s = _average(self.wire_s, seconds / size)
