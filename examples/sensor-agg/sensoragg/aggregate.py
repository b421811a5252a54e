"""Sensor readings: validation, the sliding-window statistics and the closed-window summaries.

Two views of the same readings:

* ``stats(now)`` covers the last ``window`` seconds (a sliding window), per sensor: count, mean,
  min and max. This is what ``GET /stats`` answers.
* Tumbling windows ``[k*window, (k+1)*window)`` collect the same numbers; when one ends
  (``close_due(now)``) it is handed out once as a summary, which the service writes as one JSON
  line to the results device. Windows without readings produce no line.

A reading's time is its ``ts`` (Unix seconds) when given, else the time it arrived. A reading
for a window that has already been closed, or more than ``max_skew`` seconds in the future, is
refused, so every summary that was written stays true.
"""

import math
from _collections import deque  # collections' C core: the package is slow to import

__all__ = ["Aggregator", "Reading", "ReadingError", "parse_readings"]

MAX_SENSOR_LEN = 64


class ReadingError(ValueError):
    """A reading that cannot be accepted; the message names the reading and the field."""


class Reading:
    __slots__ = ("sensor", "ts", "value")

    def __init__(self, sensor: str, value: float, ts: float) -> None:
        self.sensor = sensor
        self.value = value
        self.ts = ts

    def __repr__(self) -> str:
        return f"Reading({self.sensor!r}, {self.value!r}, {self.ts!r})"


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def parse_readings(doc: object, now: float) -> list[Reading]:
    """Readings from a decoded JSON body: one object or a non-empty list of them."""
    items = doc if isinstance(doc, list) else [doc]
    if not items:
        raise ReadingError("the list of readings is empty")
    many = isinstance(doc, list)
    readings = []
    for index, item in enumerate(items):
        where = f"reading {index}: " if many else ""
        if not isinstance(item, dict):
            raise ReadingError(f"{where}expected an object like "
                               '{"sensor": "t1", "value": 21.5}')
        unknown = sorted(set(item) - {"sensor", "value", "ts"})
        if unknown:
            raise ReadingError(f"{where}unknown field {unknown[0]!r}")
        sensor = item.get("sensor")
        if not isinstance(sensor, str) or not sensor:
            raise ReadingError(f"{where}'sensor' must be a non-empty string")
        if len(sensor) > MAX_SENSOR_LEN:
            raise ReadingError(f"{where}'sensor' is longer than {MAX_SENSOR_LEN} characters")
        if "value" not in item:
            raise ReadingError(f"{where}'value' is missing")
        value = _number(item["value"])
        if value is None:
            raise ReadingError(f"{where}'value' must be a finite number")
        ts = now
        if "ts" in item:
            given = _number(item["ts"])
            if given is None or given < 0:
                raise ReadingError(f"{where}'ts' must be a non-negative number (Unix seconds)")
            ts = given
        readings.append(Reading(sensor, value, ts))
    return readings


class _Acc:
    __slots__ = ("count", "max", "min", "total")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.min = math.inf
        self.max = -math.inf

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        self.min = min(self.min, value)
        self.max = max(self.max, value)

    def as_dict(self) -> dict[str, float | int]:
        return {
            "count": self.count,
            "mean": self.total / self.count,
            "min": self.min,
            "max": self.max,
        }


class Aggregator:
    """Holds the readings of the last ``window`` seconds and the open tumbling windows."""

    def __init__(self, window: float, max_skew: float = 300.0) -> None:
        if not window > 0:
            raise ValueError("window must be positive")
        self.window = float(window)
        self.max_skew = max_skew
        self._recent: dict[str, deque[tuple[float, float]]] = {}
        self._open: dict[int, dict[str, _Acc]] = {}
        self._closed_before = -1  # every window index <= this one has been closed
        self.accepted = 0

    def _index(self, ts: float) -> int:
        return math.floor(ts / self.window)

    def check(self, readings: list[Reading], now: float) -> None:
        """Refuse the whole batch if any reading is too old or too far in the future."""
        for position, r in enumerate(readings):
            where = f"reading {position}: " if len(readings) > 1 else ""
            if r.ts > now + self.max_skew:
                raise ReadingError(f"{where}'ts' {r.ts} is more than {self.max_skew:g}s in the "
                                   "future")
            if self._index(r.ts) <= self._closed_before:
                raise ReadingError(f"{where}'ts' {r.ts} falls in a window that is already "
                                   "closed")

    def add(self, readings: list[Reading], now: float) -> int:
        self.check(readings, now)
        for r in readings:
            self._recent.setdefault(r.sensor, deque()).append((r.ts, r.value))
            self._open.setdefault(self._index(r.ts), {}).setdefault(r.sensor, _Acc()).add(r.value)
        self.accepted += len(readings)
        return len(readings)

    def stats(self, now: float) -> dict[str, dict[str, float | int]]:
        """Per-sensor statistics over ``(now - window, now]``."""
        since = now - self.window
        out: dict[str, dict[str, float | int]] = {}
        for sensor in sorted(self._recent):
            entries = self._recent[sensor]
            while entries and entries[0][0] <= since:  # arrival order ~ time order
                entries.popleft()
            acc = _Acc()
            for ts, value in entries:
                if since < ts <= now:
                    acc.add(value)
            if acc.count:
                out[sensor] = acc.as_dict()
            elif not entries:
                del self._recent[sensor]
        return out

    def next_close(self) -> float | None:
        """When the oldest open window ends, or ``None`` when no window is open."""
        if not self._open:
            return None
        return (min(self._open) + 1) * self.window

    def close_due(self, now: float, *, everything: bool = False) -> list[dict[str, object]]:
        """Summaries of the windows that ended by ``now`` (all open ones with ``everything``),
        oldest first; each is handed out once."""
        current = self._index(now)
        summaries = []
        for index in sorted(self._open):
            if index >= current and not everything:
                break
            sensors = self._open.pop(index)
            summary: dict[str, object] = {
                "window_start": index * self.window,
                "window_end": (index + 1) * self.window,
                "sensors": {s: sensors[s].as_dict() for s in sorted(sensors)},
            }
            if index >= current:
                summary["partial"] = True
            summaries.append(summary)
            self._closed_before = max(self._closed_before, index)
        if not everything:
            self._closed_before = max(self._closed_before, current - 1)
        return summaries
