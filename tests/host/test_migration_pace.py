"""Whether a snapshot's next chunk is compressed (``_pace.Pace``), from measured figures: zlib's
cost and ratio, and the link's time per byte, learnt by sending a raw chunk now and then."""

from __future__ import annotations

from ukedge.host.migration._pace import PROBE_EVERY, Pace

MIB = 1 << 20


def _run(pace: Pace, chunks: int, *, zlib_s: float, ratio: float, wire_s: float) -> list[int]:
    """Feed ``chunks`` chunks through ``pace`` on a link taking ``wire_s`` per byte."""
    levels = []
    for _ in range(chunks):
        level = pace.next_level()
        levels.append(level)
        size = int(MIB * ratio) if level else MIB
        if level:
            pace.compressed(MIB, size, zlib_s * MIB)
        pace.sent(size, wire_s * size)
    return levels


def test_a_fast_link_takes_the_chunks_raw_after_learning() -> None:
    # Loopback: TLS and the target's writes ~2 ns a byte, zlib ~12 ns a byte on each of 2 threads.
    levels = _run(Pace(1, 2), 40, zlib_s=12e-9, ratio=0.25, wire_s=2e-9)
    assert levels[:2] == [1, 1]  # zlib's figures first
    assert levels[2:] == [0] * 38


def test_a_slow_link_compresses_and_probes_now_and_then() -> None:
    # 20 Mbit/s: 400 ns a byte; compressed bytes get across 4x sooner.
    levels = _run(Pace(1, 2), 40, zlib_s=12e-9, ratio=0.25, wire_s=400e-9)
    probes = [n for n, level in enumerate(levels) if level == 0]
    assert probes == [PROBE_EVERY - 1, 2 * PROBE_EVERY - 1]


def test_a_link_that_looks_fast_at_first_is_found_out_by_one_slow_chunk() -> None:
    pace = Pace(1, 2)
    # The first chunks vanished into kernel buffers: the link looked fast, raw chunks follow.
    assert _run(pace, 3, zlib_s=12e-9, ratio=0.25, wire_s=2e-9) == [1, 1, 0]
    assert not pace.compress_wins()
    pace.sent(MIB, 400e-9 * MIB)  # the next raw one waited for the link
    assert pace.compress_wins() and pace.next_level() == 1


def test_level_zero_never_compresses_and_always_always_does() -> None:
    assert _run(Pace(0, 2), 5, zlib_s=12e-9, ratio=0.25, wire_s=400e-9) == [0] * 5
    always = Pace(1, 2, always=True)
    assert _run(always, 40, zlib_s=12e-9, ratio=0.25, wire_s=2e-9) == [1] * 40


def test_a_probe_of_the_link_is_a_small_chunk_and_a_raw_choice_is_not() -> None:
    slow = Pace(1, 2)
    _run(slow, PROBE_EVERY - 1, zlib_s=12e-9, ratio=0.25, wire_s=400e-9)
    assert slow.next_level() == 0 and slow.probing
    assert slow.next_level() == 1 and not slow.probing
    fast = Pace(1, 2)
    _run(fast, 3, zlib_s=12e-9, ratio=0.25, wire_s=2e-9)
    assert fast.next_level() == 0 and not fast.probing  # raw because it wins: whole chunks
