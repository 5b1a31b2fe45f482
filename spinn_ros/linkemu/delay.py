"""One-way delay and jitter without netem: hold packets from an NFQUEUE, release them late.

This kernel has no ``sch_netem``. Instead the receiving namespace sends every packet
arriving on the emulated interface to an NFQUEUE (``iptables -A INPUT ... -j NFQUEUE``)
and this program, run inside that namespace, keeps each packet's verdict back until
``delay ± jitter`` has passed. It must sit on the receiver's INPUT hook: holding the
sender's OUTPUT starves TCP (see docs/link-emulation.md).

The program is run as a file, not as ``-m spinn_ros...``, so that ``ip netns exec``
needs no PYTHONPATH; it only imports the standard library and ``netfilterqueue``.

Control protocol (one JSON object per line; ``DelayController`` speaks it):
  stdin  {"delay_ms": 25, "jitter_ms": 5, "reorder": false}  -> stdout {"ok": true, ...}
  stdin  {"cmd": "stats"}                                      -> stdout {"ok": true, "held": ...}
  stdout {"ready": true} once the queue is bound.
EOF on stdin or SIGTERM releases every held packet and exits, so a crashed parent never
leaves the link frozen.
"""
from __future__ import annotations

import argparse
import heapq
import json
import os
import random
import select
import signal
import subprocess
import sys
import time

#: kernel-side queue length (packets); 100 Mbit/s x 50 ms one way is ~420 full frames
QUEUE_MAXLEN = 20000
#: netlink receive buffer; COPY_META messages are small, this absorbs bursts
SOCK_RCVBUF = 8 << 20
#: releases later than this count as "late" in the stats (CPU contention shows up here)
LATE_MS = 5.0
#: Release times are only as good as this process's wake-ups. On a machine busy with other
#: jobs a normal (or even nice -10) process wakes 5-30 ms late, so it asks for a low
#: real-time priority; it sleeps in select() between packets and cannot monopolise a CPU
#: (and the kernel's RT throttling would stop it if it did).
RT_PRIORITY = 10
NICENESS = -10  # fallback when real-time scheduling is refused
REPLY_TIMEOUT_S = 5.0


# --------------------------------------------------------------------------- program
class PacketDelayer:
    """Holds packets in a heap ordered by release time (then arrival, to keep order)."""

    def __init__(self, delay_ms: float, jitter_ms: float, reorder: bool, seed: int | None = None):
        self.held: list[tuple[float, int, object, float]] = []  # (release, seq, packet, due)
        self.seq = 0
        self.last_release = 0.0
        self.rng = random.Random(seed)
        self.stats = {"packets": 0, "max_held": 0, "late": 0, "lag_max_ms": 0.0, "lag_sum_ms": 0.0}
        self.configure(delay_ms, jitter_ms, reorder)

    def configure(self, delay_ms: float, jitter_ms: float, reorder: bool) -> None:
        if delay_ms < 0 or jitter_ms < 0:
            raise ValueError(f"delay_ms and jitter_ms must be >= 0, got {delay_ms}, {jitter_ms}")
        self.delay_s, self.jitter_s, self.reorder = delay_ms / 1e3, jitter_ms / 1e3, bool(reorder)

    def release_time(self, now: float) -> float:
        t = now + self.delay_s
        if self.jitter_s:
            t = max(now, t + self.rng.uniform(-self.jitter_s, self.jitter_s))
        # In order mode a packet never overtakes an earlier one: it waits behind it.
        return t if self.reorder else max(t, self.last_release)

    def on_packet(self, pkt) -> None:
        now = time.monotonic()
        if not self.delay_s and not self.jitter_s and not self.held:
            pkt.accept()  # fast path: nothing to wait for and nothing to overtake
            self.stats["packets"] += 1
            return
        due = self.release_time(now)
        self.last_release = max(self.last_release, due)
        self.seq += 1
        heapq.heappush(self.held, (due, self.seq, pkt, due))
        self.stats["max_held"] = max(self.stats["max_held"], len(self.held))

    def release_due(self, now: float) -> None:
        while self.held and self.held[0][0] <= now:
            _, _, pkt, due = heapq.heappop(self.held)
            pkt.accept()
            lag_ms = (now - due) * 1e3
            self.stats["packets"] += 1
            self.stats["lag_sum_ms"] += lag_ms
            self.stats["lag_max_ms"] = max(self.stats["lag_max_ms"], lag_ms)
            self.stats["late"] += lag_ms > LATE_MS

    def release_all(self) -> None:
        self.release_due(float("inf"))

    def next_timeout(self, now: float) -> float | None:
        return max(0.0, self.held[0][0] - now) if self.held else None

    def report(self) -> dict:
        s = dict(self.stats, held=len(self.held))
        s["lag_mean_ms"] = s.pop("lag_sum_ms") / max(1, s["packets"])
        return s


def handle_command(delayer: PacketDelayer, line: bytes) -> dict:
    try:
        msg = json.loads(line)
        if msg.get("cmd") == "stats":
            return {"ok": True, **delayer.report()}
        delayer.configure(
            float(msg.get("delay_ms", delayer.delay_s * 1e3)),
            float(msg.get("jitter_ms", delayer.jitter_s * 1e3)),
            bool(msg.get("reorder", delayer.reorder)),
        )
        return {"ok": True, "delay_ms": delayer.delay_s * 1e3, "jitter_ms": delayer.jitter_s * 1e3,
                "reorder": delayer.reorder}
    except (ValueError, TypeError, AttributeError) as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}", "line": line.decode(errors="replace")}


def reply(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def raise_priority() -> None:
    try:
        os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(RT_PRIORITY))
    except (OSError, AttributeError):
        try:
            os.setpriority(os.PRIO_PROCESS, 0, NICENESS)
        except OSError:
            pass  # unprivileged: normal priority, releases may be later under load


class Stop(Exception):
    """Raised by the SIGTERM/SIGINT handler: select() would otherwise just resume."""


def raise_stop(*_) -> None:
    raise Stop


def serve(queue_num: int, delayer: PacketDelayer) -> None:
    from netfilterqueue import COPY_META, NetfilterQueue

    signal.signal(signal.SIGTERM, raise_stop)
    signal.signal(signal.SIGINT, raise_stop)
    raise_priority()
    nfq = NetfilterQueue()
    # COPY_META: verdicts only need the packet id, so no payload crosses to user space.
    nfq.bind(queue_num, delayer.on_packet, max_len=QUEUE_MAXLEN, mode=COPY_META, sock_len=SOCK_RCVBUF)
    nfq_fd, ctl_fd = nfq.get_fd(), sys.stdin.fileno()
    pending = b""
    reply({"ready": True, "pid": os.getpid()})
    try:
        while True:
            ready, _, _ = select.select([nfq_fd, ctl_fd], [], [], delayer.next_timeout(time.monotonic()))
            if nfq_fd in ready:
                nfq.run(block=False)
            if ctl_fd in ready:
                chunk = os.read(ctl_fd, 65536)
                if not chunk:
                    break  # parent closed the pipe (or died): release everything and go
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in filter(None, map(bytes.strip, lines)):
                    reply(handle_command(delayer, line))
            delayer.release_due(time.monotonic())
    except Stop:
        pass
    finally:
        delayer.release_all()
        nfq.unbind()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--queue-num", type=int, required=True)
    ap.add_argument("--delay-ms", type=float, default=0.0)
    ap.add_argument("--jitter-ms", type=float, default=0.0)
    ap.add_argument("--reorder", action="store_true", help="let jitter reorder packets")
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args(argv)
    serve(args.queue_num, PacketDelayer(args.delay_ms, args.jitter_ms, args.reorder, args.seed))
    return 0


# --------------------------------------------------------------------------- client
class DelayController:
    """Starts the delay program inside a namespace and changes its settings live."""

    def __init__(self, netns: str, queue_num: int):
        argv = ["ip", "netns", "exec", netns, sys.executable, os.path.abspath(__file__),
                "--queue-num", str(queue_num)]
        self.netns = netns
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, bufsize=1)
        self._read_reply("ready")

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def set(self, delay_ms: float, jitter_ms: float = 0.0, reorder: bool | None = None) -> dict:
        msg = {"delay_ms": delay_ms, "jitter_ms": jitter_ms}
        if reorder is not None:
            msg["reorder"] = reorder
        return self._request(msg)

    def stats(self) -> dict:
        return self._request({"cmd": "stats"})

    def stop(self, timeout: float = 3.0) -> None:
        """Close the control pipe (the program releases held packets and exits)."""
        if self.proc.stdin and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout)
        for f in (self.proc.stdout, self.proc.stderr):
            if f:
                f.close()

    def _request(self, msg: dict) -> dict:
        if not self.alive:
            raise RuntimeError(self._died("is not running"))
        try:
            self.proc.stdin.write(json.dumps(msg) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise RuntimeError(self._died("closed its control pipe")) from None
        return self._read_reply("ok")

    def _read_reply(self, key: str) -> dict:
        ready, _, _ = select.select([self.proc.stdout], [], [], REPLY_TIMEOUT_S)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            if ready or not self.alive:
                raise RuntimeError(self._died("exited"))
            raise RuntimeError(f"delay program in netns {self.netns} did not answer within {REPLY_TIMEOUT_S} s")
        answer = json.loads(line)
        if not answer.get(key):
            raise RuntimeError(f"delay program in netns {self.netns} refused a command: {answer}")
        return answer

    def _died(self, what: str) -> str:
        try:
            self.proc.wait(1.0)
            err = self.proc.stderr.read() if self.proc.stderr else ""
        except subprocess.TimeoutExpired:
            err = "(still running)"
        return (f"delay program in netns {self.netns} {what} (rc={self.proc.returncode}): "
                f"{' '.join(self.proc.args)}\n{err.strip()}")


if __name__ == "__main__":
    sys.exit(main())
