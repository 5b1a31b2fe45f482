"""Named link conditions the scheduler and backend benchmarks compare plans under."""
from __future__ import annotations

from ..core.prediction import Conditions

CONDITIONS = {
    "fast (100 Mbit/s, 10 ms)": Conditions(bandwidth_mbps=100.0, rtt_ms=10.0),
    "slow (2 Mbit/s, 80 ms)": Conditions(bandwidth_mbps=2.0, rtt_ms=80.0),
    "lossy (20 Mbit/s, 30 ms, 20 %)": Conditions(bandwidth_mbps=20.0, rtt_ms=30.0, loss_rate=0.2),
    "outage": Conditions(bandwidth_mbps=20.0, rtt_ms=30.0, cloud_alive=False),
}
