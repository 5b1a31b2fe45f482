"""Link emulation fixture (issue 5): real namespaces, real traffic, bounded (~30 s total).

Tests needing root FAIL loudly where link emulation is impossible (not root, no netns,
tbf, iptables or NetfilterQueue); SPINN_ALLOW_NO_ROOT=1 turns that into a skip with the
reason. The trace/delay-logic unit tests at the top run anywhere.
"""
from __future__ import annotations

import json
import os
import shlex
import statistics
import subprocess
import time

import pytest

from spinn_ros.linkemu import EmulatedLink, LinkEmuUnavailable, LinkState, Trace
from spinn_ros.linkemu import link as linkmod
from spinn_ros.linkemu import netns as netnsmod
from spinn_ros.linkemu.delay import PacketDelayer
from spinn_ros.linkemu.probe import probe_argv
from spinn_ros.testing.linkemu import require_root

PREFIX = netnsmod.pid_prefix("spinntest")  # unique per run; remove_stale() clears killed runs
BASELINE = LinkState(rate_mbit=100, rtt_ms=0)


# --------------------------------------------------------------------------- no root needed
def test_trace_schedule_covers_every_segment_kind():
    trace = Trace.loads("""
        name: demo
        segments:
          - {kind: step, duration_s: 1, rate_mbit: 20, rtt_ms: 50}
          - {kind: ramp, duration_s: 1, rate_mbit: [20, 5], step_s: 0.25}
          - {kind: flapping, duration_s: 1, up_s: 0.25, down_s: 0.25}
          - {kind: outage, duration_s: 0.5}
          - {kind: step, duration_s: 0.5, loss: 0.02}
    """)
    assert trace.name == "demo" and trace.duration_s == 4.0
    sched = trace.schedule(LinkState(rate_mbit=100, rtt_ms=10))
    at = {round(s.t, 3): s.state for s in sched}
    assert at[0.0] == LinkState(20, 50)
    assert [at[t].rate_mbit for t in (1.0, 1.25, 1.5, 1.75)] == [20, 15, 10, 5]
    assert [at[t].up for t in (2.0, 2.25, 2.5, 2.75)] == [True, False, True, False]
    assert not at[3.0].up and at[3.0].rate_mbit == 5  # outage keeps the rate it interrupts
    assert at[3.5] == LinkState(5, 50, loss=0.02)  # flapping's closing "up" merged with the next step
    assert [s.t for s in sched] == sorted(s.t for s in sched)


def test_ramp_scalar_starts_from_current_value():
    trace = Trace.from_obj([{"kind": "ramp", "duration_s": 1, "rate_mbit": 10, "rtt_ms": [0, 100], "step_s": 0.5}])
    states = [s.state for s in trace.schedule(LinkState(rate_mbit=50, rtt_ms=10))]
    assert [(s.rate_mbit, s.rtt_ms) for s in states] == [(50, 0), (10, 100)]


@pytest.mark.parametrize("bad, message", [
    ([{"kind": "wobble", "duration_s": 1}], "kind must be one of"),
    ([{"kind": "step", "duration_s": 1, "rate": 5}], "unknown keys"),
    ([{"kind": "step", "duration_s": 0}], "duration_s must be > 0"),
    ([{"kind": "step", "duration_s": 1, "rate_mbit": [1, 2]}], "only a ramp"),
    ([], "non-empty"),
])
def test_trace_rejects_bad_segments(bad, message):
    with pytest.raises(ValueError, match=message):
        Trace.from_obj(bad)


def test_failed_command_error_names_command_and_stderr():
    with pytest.raises(netnsmod.LinkEmuError) as err:
        netnsmod.sh(["sh", "-c", "echo boom >&2; exit 3", "ignored-arg"])
    assert "rc=3" in str(err.value) and "exit 3" in str(err.value) and "boom" in str(err.value)
    with pytest.raises(LinkEmuUnavailable, match="command not found: no-such-tool-xyz"):
        netnsmod.sh(["no-such-tool-xyz"])


class FakePacket:
    def __init__(self, n, released):
        self.n, self.released = n, released

    def accept(self):
        self.released.append(self.n)


def feed(delayer, count, released, gap_s=0.0005):
    for i in range(count):
        delayer.on_packet(FakePacket(i, released))
        time.sleep(gap_s)
    deadline = time.monotonic() + 2
    while delayer.held and time.monotonic() < deadline:
        delayer.release_due(time.monotonic())
        time.sleep(0.0005)


def test_delayer_keeps_order_under_jitter_unless_reorder():
    released = []
    feed(PacketDelayer(delay_ms=5, jitter_ms=4, reorder=False, seed=1), 200, released)
    assert released == list(range(200))
    released = []
    feed(PacketDelayer(delay_ms=5, jitter_ms=4, reorder=True, seed=1), 200, released)
    assert sorted(released) == list(range(200)) and released != list(range(200))


def test_delayer_holds_for_the_delay():
    released, delayer = [], PacketDelayer(delay_ms=30, jitter_ms=0, reorder=False)
    delayer.on_packet(FakePacket(0, released))
    t0 = time.monotonic()
    delayer.release_due(t0)
    assert released == [] and 0.025 < delayer.next_timeout(t0) <= 0.030
    delayer.release_due(t0 + 0.031)
    assert released == [0]


def test_require_root_fails_loudly_or_skips_when_allowed(monkeypatch):
    monkeypatch.setattr(linkmod.os, "geteuid", lambda: 1000)
    monkeypatch.delenv("SPINN_ALLOW_NO_ROOT", raising=False)
    linkmod.host_support.cache_clear()
    try:
        with pytest.raises(pytest.fail.Exception, match="LINK EMULATION UNAVAILABLE.*not running as root"):
            require_root()
        monkeypatch.setenv("SPINN_ALLOW_NO_ROOT", "1")
        with pytest.raises(pytest.skip.Exception, match="LINK EMULATION UNAVAILABLE"):
            require_root()
        with pytest.raises(LinkEmuUnavailable, match="not running as root"):
            EmulatedLink(prefix=PREFIX + "n").open()
    finally:
        linkmod.host_support.cache_clear()  # the next test probes the real host again


# --------------------------------------------------------------------------- helpers
def last_json(out: str, err: str, what: str) -> dict:
    """A probe's result: the last JSON line it printed."""
    assert out.strip(), f"{what} printed nothing; stderr:\n{err}"
    return json.loads(out.strip().splitlines()[-1])


def probe(link, side, name, *args, timeout=20.0) -> dict:
    res = link.run(side, probe_argv(name, *args, "--timeout", timeout), timeout=timeout + 10)
    return last_json(res.stdout, res.stderr, name)


def start_server(link, side, name, *args, timeout=20.0) -> subprocess.Popen:
    """Start a server probe and wait until it listens."""
    proc = link.popen(side, probe_argv(name, *args, "--timeout", timeout), stdout=subprocess.PIPE,
                      stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line and json.loads(line).get("ready"), f"{name} did not start: {line}{proc.stderr.read()}"
    return proc


def result(proc: subprocess.Popen, timeout=30.0) -> dict:
    out, err = proc.communicate(timeout=timeout)
    return last_json(out, err, shlex.join(proc.args))


def tcp_transfer(link, nbytes: int, port: int) -> dict:
    """drone -> cloud; the sink's view (rate, timeline of cumulative bytes)."""
    sink = start_server(link, "cloud", "tcp-sink", "--bind", link.cloud_ip, "--port", port)
    sent = probe(link, "drone", "tcp-send", "--host", link.cloud_ip, "--port", port, "--bytes", nbytes)
    got = result(sink)
    assert sent["bytes"] == got["bytes"] == nbytes, (sent, got)
    return got


def rate_between(timeline, t_from, t_to) -> float:
    """Mbit/s received between two monotonic instants, from a tcp-sink timeline."""
    pts = [(t, b) for t, b in timeline if t_from <= t <= t_to]
    (ta, ba), (tb, bb) = pts[0], pts[-1]
    return (bb - ba) * 8 / (tb - ta) / 1e6


# --------------------------------------------------------------------------- real link
@pytest.fixture(scope="module")
def shared_link():
    require_root()
    netnsmod.remove_stale("spinntest")
    with EmulatedLink(prefix=PREFIX, rate_mbit=BASELINE.rate_mbit, rtt_ms=BASELINE.rtt_ms) as link:
        yield link


@pytest.fixture
def link(shared_link):
    """The module's link, back at the baseline after each test."""
    yield shared_link
    shared_link.stop_trace()
    shared_link.apply(BASELINE, source="test-reset")
    shared_link.outage_mode = "down"


@pytest.mark.parametrize("rate", [5, 20])
def test_rate_limit_within_20_percent(link, rate):
    link.set(rate_mbit=rate, rtt_ms=10)
    got = tcp_transfer(link, nbytes=int(rate * 1e6 / 8 * 1.5), port=5000 + rate)  # ~1.5 s of data
    assert abs(got["mbit_s"] - rate) <= 0.2 * rate, got["mbit_s"]


def test_rtt_50ms(link):
    link.set(rtt_ms=50)
    echo = start_server(link, "cloud", "udp-echo", "--bind", link.cloud_ip, "--port", 6001, timeout=10)
    ping = probe(link, "drone", "udp-ping", "--host", link.cloud_ip, "--port", 6001, "--count", 20,
                 "--interval", 0.05)
    echo.kill()
    assert ping["received"] == 20
    assert 40 <= statistics.median(ping["rtts_ms"]) <= 60, (ping["rtts_ms"], link.delay_stats())


def test_loss_10_percent(link):
    link.set(loss=0.10)
    sink = start_server(link, "cloud", "udp-sink", "--bind", link.cloud_ip, "--port", 6002, "--idle", 0.5)
    sent = probe(link, "drone", "udp-send", "--host", link.cloud_ip, "--port", 6002, "--count", 2000,
                 "--interval", 0.0003)["sent"]
    lost = 1 - result(sink)["received"] / sent
    assert 0.07 <= lost <= 0.13, lost  # binomial sd at n=2000 is 0.7 %


@pytest.mark.parametrize("mode", ["down", "drop"])
def test_outage_fails_connections_and_restore_recovers(link, mode):
    link.outage_mode = mode
    port = 7100 + len(mode)
    listener = start_server(link, "cloud", "tcp-listen", "--bind", link.cloud_ip, "--port", port, timeout=15)
    connect = ("tcp-connect", "--host", link.cloud_ip, "--port", port)
    assert probe(link, "drone", *connect, timeout=5)["ok"]
    link.outage()
    during = probe(link, "drone", *connect, timeout=1.0)
    assert not during["ok"], during
    # 'down' is refused at once (no route); 'drop' only times out, like a radio blackout
    assert ("unreachable" in during["error"].lower()) if mode == "down" else ("timed out" in during["error"])
    link.restore()
    after = probe(link, "drone", *connect, timeout=5)
    listener.kill()
    assert after["ok"] and after["seconds"] < 1.0, after
    tbf = link.run("drone", ["tc", "qdisc", "show", "dev", "emu0"]).stdout
    assert "rate 100Mbit" in tbf, f"shaping lost across the outage: {tbf}"


def test_live_rate_change_takes_effect_within_1s(link):
    link.set(rate_mbit=20, rtt_ms=10)
    sink = start_server(link, "cloud", "tcp-sink", "--bind", link.cloud_ip, "--port", 5100)
    sender = link.popen("drone", probe_argv("tcp-send", "--host", link.cloud_ip, "--port", 5100, "--bytes",
                                            int(20e6 / 8 * 1.5 + 5e6 / 8 * 2.0), "--timeout", 20),
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert json.loads(sender.stdout.readline())["started"]
    time.sleep(1.5)
    change = link.set(rate_mbit=5)
    got, _ = result(sink), result(sender)
    before = rate_between(got["timeline"], change.t - 1.0, change.t)
    after = rate_between(got["timeline"], change.t + 1.0, got["timeline"][-1][0])
    assert abs(before - 20) <= 4 and abs(after - 5) <= 1, (before, after)


def test_trace_player_applies_steps_on_time(link):
    trace = Trace.from_obj([
        {"kind": "step", "duration_s": 0.5, "rate_mbit": 20, "rtt_ms": 20},
        {"kind": "ramp", "duration_s": 1.0, "rate_mbit": [20, 5], "step_s": 0.25},
        {"kind": "flapping", "duration_s": 1.0, "up_s": 0.25, "down_s": 0.25},
        {"kind": "outage", "duration_s": 0.5},
        {"kind": "step", "duration_s": 0.5, "rate_mbit": 2, "loss": 0.01},
    ], name="t")
    player = link.play(trace)
    events = player.wait(timeout=trace.duration_s + 5)
    planned = [player.t0 + s.t for s in player.steps]
    assert [e.planned_t for e in events] == planned
    assert [e.state for e in events] == [s.state for s in player.steps]
    # In effect typically 10-30 ms after the due time (a few ~5 ms commands); CPU contention
    # from other jobs on this 2-vCPU VM stretched single steps to ~130 ms at load 6.
    late = sorted(e.t - e.planned_t for e in events)
    assert late[len(late) // 2] < 0.05 and late[-1] < 0.2, late
    assert link.state == LinkState(2, 20, loss=0.01)
    assert "rate 2Mbit" in link.run("cloud", ["tc", "qdisc", "show", "dev", "emu0"]).stdout


def test_zenoh_200kb_query_over_5mbit_50ms(link):
    link.set(rate_mbit=5, rtt_ms=50)
    endpoint = f"tcp/{link.cloud_ip}:7447"
    queryable = start_server(link, "cloud", "zenoh-queryable", "--listen", endpoint, timeout=30)
    got = probe(link, "drone", "zenoh-get", "--connect", endpoint, "--size", 200_000, "--count", 5)
    queryable.terminate()
    queryable.wait(10)
    assert len(got["times_s"]) == 5, got
    median = statistics.median(got["times_s"])
    assert 0.31 <= median <= 0.50, got["times_s"]  # notes: 0.388 s; ideal 200 KB at 5 Mbit/s = 0.32 s + RTT


# --------------------------------------------------------------------------- lifecycle
def host_firewall() -> list[str]:
    """The host's own rules (read only), without iptables-save's timestamp comments."""
    dumps = (netnsmod.sh([tool + "-save"], check=False).stdout for tool in linkmod.IPTABLES_CANDIDATES)
    return [line for dump in dumps for line in dump.splitlines() if not line.startswith("#")]


def test_teardown_leaves_nothing_and_cleans_a_crashed_run():
    require_root()
    prefix, firewall_before = PREFIX + "x", host_firewall()
    # A "crashed earlier run": our drone namespace exists, with a process inside.
    netnsmod.sh(["ip", "netns", "add", f"{prefix}-drone"])
    orphan = subprocess.Popen(["ip", "netns", "exec", f"{prefix}-drone", "sleep", "60"])
    deadline = time.monotonic() + 10
    while str(orphan.pid) not in netnsmod.sh(["ip", "netns", "pids", f"{prefix}-drone"]).stdout.split():
        assert time.monotonic() < deadline, "orphan never entered its namespace"
        time.sleep(0.02)
    with pytest.raises(KeyboardInterrupt):
        with EmulatedLink(prefix=prefix, rate_mbit=10, rtt_ms=20, loss=0.05) as link:
            assert orphan.wait(5) == -9  # cleaned up by open()
            worker = link.popen("cloud", ["sh", "-c", "sleep 60 & sleep 60"])
            delay_pids = [c.proc.pid for c in link._delays.values()]
            raise KeyboardInterrupt  # teardown must also run on Ctrl-C
    assert worker.poll() is not None
    for pid in delay_pids:
        assert not os.path.exists(f"/proc/{pid}"), f"delay program {pid} survived teardown"
    assert not any(name.startswith(prefix) for name in netnsmod.list_netns())
    assert host_firewall() == firewall_before
    link.close()  # idempotent


def test_remove_stale_clears_namespaces_of_dead_owners():
    require_root()
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale, alive = f"spinntest{dead.pid}-drone", f"spinntest{os.getppid()}-drone"
    try:
        for name in (stale, alive):
            netnsmod.sh(["ip", "netns", "add", name])
        assert netnsmod.remove_stale("spinntest") == [stale]
        assert stale not in netnsmod.list_netns() and alive in netnsmod.list_netns()
    finally:
        for name in (stale, alive):
            netnsmod.delete_netns(name)


def test_closed_link_refuses_changes():
    link = EmulatedLink(prefix=PREFIX + "c")
    with pytest.raises(netnsmod.LinkEmuError, match="not open"):
        link.set(rate_mbit=1)
    with pytest.raises(ValueError, match="outage_mode"):
        link.outage_mode = "sideways"
    assert issubclass(LinkEmuUnavailable, netnsmod.LinkEmuError)
