"""Bounded traffic probes run inside the emulated link's namespaces (tests, benchmarks).

Run as a file (``ip netns exec NS python probe.py <probe> ...``; see ``probe_argv``) so no
PYTHONPATH is needed. Every probe has a deadline and prints its result as one JSON line on
stdout; servers first print ``{"ready": true}`` once they listen.

  tcp-sink   accept one connection, read to EOF      -> bytes, seconds, mbit_s, timeline
  tcp-send   connect (retrying), send N bytes, close -> {"started"} once connected; bytes, seconds
  tcp-connect one connection attempt                  -> ok, error, seconds
  tcp-listen accept connections until the deadline     -> accepted
  udp-echo   echo datagrams back until the deadline  -> echoed
  udp-ping   N sequenced datagrams, wait for echoes  -> sent, received, rtts_ms
  udp-sink   count datagrams until idle or deadline  -> received
  udp-send   N paced datagrams                        -> sent
  zenoh-queryable / zenoh-get: one zenoh peer each side, SHM off, explicit endpoints;
             zenoh-get sends N queries carrying a payload, times each reply -> times_s, log
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import sys
import time

CHUNK = 64 * 1024
NICENESS = -10
TIMELINE_S = 0.05
ZENOH_KEY = "linkemu/echo"


def probe_argv(probe: str, *args) -> list[str]:
    """The argv that runs ``probe`` with this interpreter (prefix it with ``ip netns exec``)."""
    return [sys.executable, os.path.abspath(__file__), probe, *map(str, args)]


def emit(obj: dict) -> None:
    print(json.dumps(obj), flush=True)


def remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("probe deadline passed")
    return left


# --------------------------------------------------------------------------- TCP
def tcp_sink(a) -> dict:
    deadline = time.monotonic() + a.timeout
    with socket.create_server((a.bind, a.port)) as srv:
        emit({"ready": True})
        srv.settimeout(remaining(deadline))
        conn, _ = srv.accept()
        with conn:
            total, first_bytes, first, last = 0, 0, None, None
            timeline = []  # (monotonic, cumulative bytes) every TIMELINE_S, to see rate changes
            while True:
                conn.settimeout(remaining(deadline))
                data = conn.recv(CHUNK)
                if not data:
                    break
                last = time.monotonic()
                if first is None:
                    first, first_bytes = last, len(data)
                total += len(data)
                if not timeline or last - timeline[-1][0] >= TIMELINE_S:
                    timeline.append((last, total))
    # Rate over the bytes that arrived after the first read (the clock starts with it).
    seconds = (last - first) if total else 0.0
    mbit = (total - first_bytes) * 8 / seconds / 1e6 if seconds > 0 else float("nan")
    if total:
        timeline.append((last, total))
    return {"bytes": total, "seconds": seconds, "mbit_s": mbit, "timeline": timeline}


def connect_retrying(host: str, port: int, deadline: float) -> socket.socket:
    """The peer may still be starting: retry refused connections until the deadline."""
    while True:
        try:
            return socket.create_connection((host, port), timeout=min(2.0, remaining(deadline)))
        except (ConnectionRefusedError, OSError):
            if time.monotonic() + 0.05 >= deadline:
                raise
            time.sleep(0.05)


def tcp_send(a) -> dict:
    deadline = time.monotonic() + a.timeout
    payload = b"\0" * CHUNK
    with connect_retrying(a.host, a.port, deadline) as sock:
        emit({"started": True})
        t0, sent = time.monotonic(), 0
        while sent < a.bytes:
            sock.settimeout(remaining(deadline))
            sent += sock.send(payload[: min(CHUNK, a.bytes - sent)])
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(remaining(deadline))
        sock.recv(1)  # the sink closes once it has read everything
    return {"bytes": sent, "seconds": time.monotonic() - t0}


def tcp_connect(a) -> dict:
    t0 = time.monotonic()
    try:
        socket.create_connection((a.host, a.port), timeout=a.timeout).close()
        return {"ok": True, "error": None, "seconds": time.monotonic() - t0}
    except OSError as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}", "seconds": time.monotonic() - t0}


def tcp_listen(a) -> dict:
    """Accept (and close) connections until the deadline; used as a tcp-connect target."""
    deadline, accepted = time.monotonic() + a.timeout, 0
    with socket.create_server((a.bind, a.port)) as srv:
        emit({"ready": True})
        while time.monotonic() < deadline:
            srv.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                srv.accept()[0].close()
                accepted += 1
            except socket.timeout:
                break
    return {"accepted": accepted}


# --------------------------------------------------------------------------- UDP
UDP_RCVBUF = 8 << 20
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)


def udp_socket(bind: str = "", port: int = 0) -> socket.socket:
    """A bound UDP socket whose receive buffer survives the probe being descheduled for a
    while on a busy machine (so buffer overflow is not mistaken for link loss)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, UDP_RCVBUF)  # root: beyond rmem_max
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RCVBUF)
    sock.bind((bind, port))
    return sock


def udp_echo(a) -> dict:
    deadline, echoed = time.monotonic() + a.timeout, 0
    with udp_socket(a.bind, a.port) as sock:
        emit({"ready": True})
        while time.monotonic() < deadline:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data, addr = sock.recvfrom(CHUNK)
            except socket.timeout:
                break
            sock.sendto(data, addr)
            echoed += 1
    return {"echoed": echoed}


def udp_ping(a) -> dict:
    """Send one datagram every ``interval`` and match echoes by sequence number."""
    sent_at, rtts = {}, []
    deadline = time.monotonic() + a.timeout
    with udp_socket() as sock:
        sock.connect((a.host, a.port))
        next_send, seq = time.monotonic(), 0
        while time.monotonic() < deadline and (seq < a.count or len(rtts) < len(sent_at)):
            if seq < a.count and time.monotonic() >= next_send:
                sent_at[seq] = time.monotonic()
                sock.send(struct.pack("!I", seq).ljust(a.size, b"\0"))
                seq, next_send = seq + 1, next_send + a.interval
            wait = next_send - time.monotonic() if seq < a.count else a.linger
            sock.settimeout(max(0.001, min(wait, deadline - time.monotonic())))
            try:
                data = sock.recv(CHUNK)
            except socket.timeout:
                if seq >= a.count:
                    break  # nothing more within `linger` after the last send
                continue
            except ConnectionRefusedError:
                continue  # echo server not up yet
            rtts.append((time.monotonic() - sent_at[struct.unpack("!I", data[:4])[0]]) * 1e3)
    return {"sent": seq, "received": len(rtts), "rtts_ms": rtts}


def udp_sink(a) -> dict:
    deadline, received = time.monotonic() + a.timeout, 0
    with udp_socket(a.bind, a.port) as sock:
        emit({"ready": True})
        while time.monotonic() < deadline:
            # Before the first datagram wait up to the deadline, afterwards only `idle`.
            wait = a.idle if received else deadline - time.monotonic()
            sock.settimeout(max(0.01, min(wait, deadline - time.monotonic())))
            try:
                sock.recv(CHUNK)
            except socket.timeout:
                if received:
                    break
                continue
            received += 1
    return {"received": received}


def udp_send(a) -> dict:
    with udp_socket() as sock:
        for i in range(a.count):
            sock.sendto(struct.pack("!I", i).ljust(a.size, b"\0"), (a.host, a.port))
            time.sleep(a.interval)
    return {"sent": a.count}


# --------------------------------------------------------------------------- zenoh
def zenoh_session(listen: str | None, connect: str | None):
    import zenoh

    conf = zenoh.Config()
    conf.insert_json5("mode", '"peer"')
    conf.insert_json5("scouting/multicast/enabled", "false")
    # zenoh 1.x would otherwise move big payloads through /dev/shm, bypassing the link.
    conf.insert_json5("transport/shared_memory/enabled", "false")
    conf.insert_json5("listen/endpoints", json.dumps([listen] if listen else []))
    conf.insert_json5("connect/endpoints", json.dumps([connect] if connect else []))
    return zenoh.open(conf)


def zenoh_queryable(a) -> dict:
    session = zenoh_session(listen=a.listen, connect=None)
    served = 0
    try:
        queryable = session.declare_queryable(ZENOH_KEY)
        emit({"ready": True})
        deadline = time.monotonic() + a.timeout
        while time.monotonic() < deadline:
            query = queryable.try_recv()
            if query is None:
                time.sleep(0.001)
                continue
            query.reply(ZENOH_KEY, b"\0" * a.reply_size)
            served += 1
    finally:
        session.close()
    return {"served": served}


def zenoh_get(a) -> dict:
    """``count`` queries (every ``interval`` s) until the deadline; a lost query counts as None."""
    session = zenoh_session(listen=None, connect=a.connect)
    log = []  # (monotonic start, seconds or None)
    try:
        querier = session.declare_querier(ZENOH_KEY, timeout=a.query_timeout)
        deadline = time.monotonic() + a.timeout
        # get() without a matching queryable returns at once with no reply.
        while not getattr(querier.matching_status, "matching", querier.matching_status):
            remaining(deadline)
            time.sleep(0.02)
        payload = b"\0" * a.size
        while len(log) < a.count and time.monotonic() < deadline:
            t0 = time.monotonic()
            ok = any(r.ok is not None for r in querier.get(payload=payload))
            log.append((t0, time.monotonic() - t0 if ok else None))
            time.sleep(max(0.0, t0 + a.interval - time.monotonic()))
    finally:
        session.close()
    return {"count": len(log), "times_s": [dt for _, dt in log if dt is not None], "log": log}


# --------------------------------------------------------------------------- CLI
def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description="bounded link probes")
    sub = ap.add_subparsers(dest="probe", required=True)

    def add(name, func, *specs):
        p = sub.add_parser(name)
        p.set_defaults(func=func)
        p.add_argument("--timeout", type=float, default=10.0, help="hard deadline (s)")
        for flag, typ, default in specs:
            p.add_argument(flag, type=typ, default=default, required=default is None)

    host, port, bind = ("--host", str, None), ("--port", int, None), ("--bind", str, "0.0.0.0")
    add("tcp-sink", tcp_sink, bind, port)
    add("tcp-send", tcp_send, host, port, ("--bytes", int, None))
    add("tcp-connect", tcp_connect, host, port)
    add("tcp-listen", tcp_listen, bind, port)
    add("udp-echo", udp_echo, bind, port)
    add("udp-ping", udp_ping, host, port, ("--count", int, 20), ("--interval", float, 0.05),
        ("--size", int, 64), ("--linger", float, 1.0))
    add("udp-sink", udp_sink, bind, port, ("--idle", float, 1.0))
    add("udp-send", udp_send, host, port, ("--count", int, 1000), ("--interval", float, 0.001),
        ("--size", int, 200))
    add("zenoh-queryable", zenoh_queryable, ("--listen", str, None), ("--reply-size", int, 8))
    add("zenoh-get", zenoh_get, ("--connect", str, None), ("--size", int, 200_000), ("--count", int, 5),
        ("--interval", float, 0.0), ("--query-timeout", float, 10.0))
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        # Timestamps taken by a descheduled probe measure the machine's load, not the link.
        os.setpriority(os.PRIO_PROCESS, 0, NICENESS)
    except OSError:
        pass
    try:
        emit(args.func(args))
    except (OSError, TimeoutError) as exc:
        emit({"error": f"{type(exc).__name__}: {exc}"})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
