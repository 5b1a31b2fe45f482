"""/diagnostics publishing without diagnostic_updater (not on PyPI)."""
from __future__ import annotations

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR


def _fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def make_array(stamp, name: str, hardware_id: str, level: int, message: str, values: dict) -> DiagnosticArray:
    status = DiagnosticStatus(level=level, name=name, message=message, hardware_id=hardware_id,
                              values=[KeyValue(key=k, value=_fmt(v)) for k, v in values.items()])
    arr = DiagnosticArray()
    arr.header.stamp = stamp
    arr.status = [status]
    return arr


class RateCounter:
    """Events per second between successive reads."""

    def __init__(self, now_s: float):
        self.count = 0
        self.total = 0
        self._last = now_s

    def tick(self, n: int = 1) -> None:
        self.count += n
        self.total += n

    def rate(self, now_s: float) -> float:
        dt = max(now_s - self._last, 1e-9)
        r = self.count / dt
        self.count, self._last = 0, now_s
        return r
