"""transport/zenoh_link.py without ROS: key names, settings validation, the Zenoh config built from
them (read back from zenoh.Config), the cloud's access-control rules, settings from node parameters,
and one in-process round trip between plain Zenoh sessions on a free localhost port."""
from __future__ import annotations

import json
import shutil
import threading
import time

import pytest

from spinn_ros.core.codec import MAX_REQUEST_BYTES
from spinn_ros.tools.ports import free_port
from spinn_ros.tools.waiting import wait_until
from spinn_ros.transport.zenoh_link import (
    NO_REPLY,
    TIMED_OUT,
    CloudEndpoint,
    DroneLink,
    MonitorLink,
    ZenohSettings,
    access_control,
    alive_key,
    certificate_name,
    key_name,
    load_key,
    monitor_name,
    probe_key,
    settings_from_params,
    size_limits,
    tail_key,
)


def conf(settings: ZenohSettings, path: str):
    return json.loads(settings.config().get_json(path))


# -- key space ------------------------------------------------------------------------------
@pytest.mark.parametrize("ns, name", [("/drone1", "drone1"), ("drone1", "drone1"), ("/fleet/d1/", "fleet_d1"),
                                      ("", "default"), ("/", "default"), ("d*1", "d_1"), ("x/**", "x___"),
                                      ("a b$c", "a_b_c"), ("d-1_B", "d-1_B")])
def test_key_name_makes_one_plain_chunk(ns, name):
    assert key_name(ns) == name


def test_keys():
    assert tail_key("spinn", "/drone1") == "spinn/tail/drone1"
    assert tail_key("lab/spinn", "/a/b") == "lab/spinn/tail/a_b"
    assert alive_key("spinn") == "spinn/alive/cloud/*" and alive_key("spinn", "/c/1") == "spinn/alive/cloud/c_1"
    assert load_key("spinn") == "spinn/load/*" and load_key("spinn", "c*") == "spinn/load/c_"
    assert probe_key("spinn") == "spinn/probe/*" and probe_key("spinn", "edge") == "spinn/probe/edge"
    assert monitor_name("/drone1") == "drone1-monitor" and monitor_name("") == "default-monitor"


# -- settings validation ---------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, message", [
    ({"mode": "router"}, "zenoh mode must be 'peer' or 'client', got 'router'"),
    ({"security": "tls"}, "zenoh security must be one of mtls, plain, got 'tls'"),
    ({"key_prefix": ""}, "zenoh key prefix must be plain chunks"),
    ({"key_prefix": "spinn/"}, "zenoh key prefix must be plain chunks"),
    ({"key_prefix": "/spinn"}, "zenoh key prefix must be plain chunks"),
    ({"key_prefix": "a//b"}, "zenoh key prefix must be plain chunks"),
    ({"key_prefix": "spinn/*"}, "zenoh key prefix must be plain chunks"),
    ({"key_prefix": "spinn/**"}, "zenoh key prefix must be plain chunks"),
    ({"key_prefix": "my spinn"}, "zenoh key prefix must be plain chunks"),
    ({"mode": "client"}, "zenoh client mode needs at least one connect endpoint"),
    ({"connect": ("127.0.0.1:7447",)}, "bad zenoh endpoint '127.0.0.1:7447'"),
    ({"listen": ("http/0.0.0.0:80",)}, "bad zenoh endpoint 'http/0.0.0.0:80'"),
    ({"connect": ("tcp/",)}, "bad zenoh endpoint 'tcp/'"),
    ({"lease_ms": 99}, "zenoh lease must be >= 100 ms, got 99"),
])
def test_bad_settings_are_refused_naming_the_setting(kwargs, message):
    with pytest.raises(ValueError) as exc:
        ZenohSettings(**kwargs)
    assert message in str(exc.value)


def test_good_settings_are_accepted():
    s = ZenohSettings(mode="client", connect=("tcp/10.0.0.2:7447", "udp/10.0.0.2:7447"), key_prefix="lab/spinn-2",
                      lease_ms=100)
    assert s.effective_mode == "client"
    assert ZenohSettings(listen=("tcp/0.0.0.0:7447",)).effective_mode == "peer", "plain: the cloud stays a peer"


def test_mtls_takes_tls_endpoints_only(certs):
    with pytest.raises(ValueError, match=r"mtls takes tls/ endpoints only, got \['tcp/10.0.0.2:7447'\]"):
        ZenohSettings(security="mtls", connect=("tls/10.0.0.2:7448", "tcp/10.0.0.2:7447"), certs_dir=str(certs),
                      identity="d1")


def test_mtls_needs_an_identity(certs):
    with pytest.raises(ValueError, match="needs this node's certificate name"):
        ZenohSettings(security="mtls", connect=("tls/10.0.0.2:7447",), certs_dir=str(certs))


def test_mtls_names_the_missing_certificate_files_and_the_fix(tmp_path):
    (tmp_path / "ca.pem").write_text("not really")
    with pytest.raises(ValueError) as exc:
        ZenohSettings(security="mtls", connect=("tls/10.0.0.2:7447",), certs_dir=str(tmp_path), identity="d9")
    msg = str(exc.value)
    assert str(tmp_path / "d9.pem") in msg and str(tmp_path / "d9.key") in msg
    assert str(tmp_path / "ca.pem") not in msg, "ca.pem exists: not missing"
    assert f"zenoh.certs={str(tmp_path)!r}" in msg and "spinn certs" in msg and "zenoh.security to plain" in msg


def test_mtls_with_the_nodes_own_certificate(certs):
    drone = ZenohSettings(security="mtls", connect=("tls/10.0.0.2:7447",), certs_dir=str(certs), identity="d1")
    assert drone.effective_mode == "peer"
    assert drone.tls_files() == {"ca": certs / "ca.pem", "cert": certs / "d1.pem", "key": certs / "d1.key"}
    cloud = ZenohSettings(security="mtls", listen=("tls/0.0.0.0:7447",), certs_dir=str(certs), identity="cloud",
                          allowed_drones=("d1",))
    assert cloud.effective_mode == "router", "access control needs a router"


def test_mtls_refuses_another_nodes_certificate(certs, tmp_path):
    """d1 holding d2's certificate would be authorised as d2 by the cloud: refused at start-up."""
    shutil.copy(certs / "ca.pem", tmp_path / "ca.pem")
    shutil.copy(certs / "d2.pem", tmp_path / "d1.pem")
    shutil.copy(certs / "d2.key", tmp_path / "d1.key")
    with pytest.raises(ValueError, match="names CN='d2', but this node is 'd1'"):
        ZenohSettings(security="mtls", connect=("tls/10.0.0.2:7447",), certs_dir=str(tmp_path), identity="d1")


def test_certificate_name(certs, tmp_path):
    assert certificate_name(certs / "d1.pem") == "d1" and certificate_name(certs / "d1-monitor.pem") == "d1-monitor"
    (tmp_path / "junk.pem").write_text("-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
    assert certificate_name(tmp_path / "junk.pem") is None and certificate_name(tmp_path / "absent.pem") is None


# -- the Zenoh config ------------------------------------------------------------------------
def test_config_of_a_plain_drone():
    s = ZenohSettings(connect=("tcp/10.0.0.2:7447",), key_prefix="lab", lease_ms=1500, retry_init_ms=50)
    assert conf(s, "mode") == "peer" and conf(s, "connect/endpoints") == ["tcp/10.0.0.2:7447"]
    assert conf(s, "connect/retry")["period_init_ms"] == 50 and conf(s, "connect/retry")["period_max_ms"] == 1000
    assert conf(s, "transport/link/tx/lease") == 1500
    assert conf(s, "transport/shared_memory/enabled") is False, "a real link must carry the bytes"
    assert conf(s, "scouting/multicast/enabled") is False, "endpoints are explicit: nothing floods the LAN"
    filters = conf(s, "low_pass_filter")
    assert [(f["id"], f["key_exprs"], f["size_limit"]) for f in filters] == \
        [(f["id"], f["key_exprs"], f["size_limit"]) for f in size_limits("lab")]
    assert conf(s, "access_control/enabled") is False


def test_config_listens_only_where_told():
    s = ZenohSettings(listen=("tcp/0.0.0.0:7447", "tcp/[::]:7448"))
    assert conf(s, "listen/endpoints") == ["tcp/0.0.0.0:7447", "tcp/[::]:7448"]


def test_config_extra_entries_go_in_last():
    s = ZenohSettings(extra={"transport/link/tx/lease": 5000, "scouting/gossip/enabled": False})
    assert conf(s, "transport/link/tx/lease") == 5000 and conf(s, "scouting/gossip/enabled") is False


def test_config_of_an_mtls_drone_and_cloud(certs):
    drone = ZenohSettings(security="mtls", connect=("tls/10.0.0.2:7447",), certs_dir=str(certs), identity="d1")
    tls = conf(drone, "transport/link/tls")
    assert tls["enable_mtls"] is True and tls["root_ca_certificate"] == str(certs / "ca.pem")
    assert (tls["connect_certificate"], tls["connect_private_key"]) == (str(certs / "d1.pem"), str(certs / "d1.key"))
    assert tls["listen_certificate"] is None
    assert conf(drone, "listen/endpoints") == [], "a drone is reachable only over its link to the router"
    assert conf(drone, "scouting/gossip/enabled") is False and conf(drone, "access_control/enabled") is False
    cloud = ZenohSettings(security="mtls", listen=("tls/0.0.0.0:7447",), certs_dir=str(certs), identity="cloud",
                          allowed_drones=("d1",))
    tls = conf(cloud, "transport/link/tls")
    assert (tls["listen_certificate"], tls["listen_private_key"]) == (str(certs / "cloud.pem"), str(certs / "cloud.key"))
    assert conf(cloud, "mode") == "router" and conf(cloud, "listen/endpoints") == ["tls/0.0.0.0:7447"]
    acl = conf(cloud, "access_control")
    assert acl["enabled"] is True and acl["default_permission"] == "deny"


def test_size_limits_fit_one_request_and_a_probe():
    limits = {f["id"]: f for f in size_limits("spinn")}
    assert limits["tail-queries"]["size_limit"] >= MAX_REQUEST_BYTES and limits["tail-queries"]["key_exprs"] == ["spinn/tail/**"]
    assert limits["tail-replies"]["messages"] == ["reply"]
    assert limits["probes"]["size_limit"] >= 1 << 20 and limits["probes"]["key_exprs"] == ["spinn/probe/**"]
    assert all(f["flows"] == ["ingress", "egress"] for f in limits.values())


# -- access control --------------------------------------------------------------------------
def test_each_drone_may_query_only_its_own_tail_key():
    acl = access_control("spinn", ("d1", "d2"))
    assert acl["enabled"] is True and acl["default_permission"] == "deny"
    rules = {r["id"]: r for r in acl["rules"]}
    subjects = {s["id"]: s["cert_common_names"] for s in acl["subjects"]}
    assert sorted(subjects["clients"]) == ["d1", "d1-monitor", "d2", "d2-monitor"]
    for d in ("d1", "d2"):
        policy = next(p for p in acl["policies"] if p["id"] == f"tail-{d}")
        assert [subjects[s] for s in policy["subjects"]] == [[d]], "a monitor gets no tail policy"
        for rid in policy["rules"]:
            assert rules[rid]["key_exprs"] == [f"spinn/tail/{d}"] and rules[rid]["permission"] == "allow"
        assert rules[f"tail-{d}-in"]["messages"] == ["query"], "a drone may not declare a queryable on its key"
    read = next(p for p in acl["policies"] if p["id"] == "read-cloud")
    assert read["subjects"] == ["clients"]
    for rid in read["rules"]:
        assert sorted(rules[rid]["key_exprs"]) == sorted(["spinn/alive/cloud/*", "spinn/load/*", "spinn/probe/*"])
    inbound = [m for r in acl["rules"] if r["flows"] == ["ingress"] for m in r["messages"]]
    assert not {"declare_queryable", "liveliness_token", "put"} & set(inbound), "clients may only ask"


def test_no_allowed_drones_lets_nobody_in():
    """An empty subject list would match every client: no subjects, policies or rules at all instead."""
    acl = access_control("spinn", ())
    assert acl == {"enabled": True, "default_permission": "deny", "rules": [], "subjects": [], "policies": []}


# -- settings from node parameters ------------------------------------------------------------
def params(**overrides) -> dict:
    """The node's declared zenoh.* parameters (spinn_ros/ros/params.zenoh_params), plain by default here."""
    p = {"zenoh.mode": "peer", "zenoh.connect": "", "zenoh.listen": "", "zenoh.key_prefix": "spinn",
         "zenoh.shared_memory": False, "zenoh.lease_ms": 2000, "zenoh.security": "plain", "zenoh.certs": "/nonexistent"}
    return {**p, **{k.replace("_", ".", 1) if k.startswith("zenoh_") else k: v for k, v in overrides.items()}}


def test_settings_from_params_split_endpoint_lists():
    warnings = []
    s = settings_from_params(params(**{"zenoh.connect": " tcp/10.0.0.2:7447, ,tcp/10.0.0.3:7447 ,",
                                       "zenoh.lease_ms": 500, "zenoh.key_prefix": "lab"}), "d1", warnings.append)
    assert s.connect == ("tcp/10.0.0.2:7447", "tcp/10.0.0.3:7447") and s.listen == ()
    assert (s.lease_ms, s.key_prefix, s.identity, s.allowed_drones) == (500, "lab", "d1", ())
    assert len(warnings) == 1 and "zenoh.security is plain" in warnings[0]
    assert "tcp/10.0.0.2:7447, tcp/10.0.0.3:7447" in warnings[0], "the warning names who can reach it"


def test_settings_from_params_of_a_secured_cloud(certs):
    warnings = []
    s = settings_from_params(params(**{"zenoh.listen": "tls/0.0.0.0:7447", "zenoh.security": "mtls",
                                       "zenoh.certs": str(certs), "zenoh.allowed_drones": "d1, d2"}),
                             "cloud", warnings.append)
    assert s.allowed_drones == ("d1", "d2") and s.effective_mode == "router" and warnings == []


def test_settings_from_params_refuses_bad_values():
    with pytest.raises(ValueError, match="zenoh mode must be 'peer' or 'client'"):
        settings_from_params(params(**{"zenoh.mode": "router"}), "d1")
    with pytest.raises(ValueError, match="bad zenoh endpoint 'localhost:7447'"):
        settings_from_params(params(**{"zenoh.connect": "tcp/10.0.0.2:7447,localhost:7447"}), "d1")
    with pytest.raises(ValueError, match=r"zenoh\.certs='/nonexistent'"):
        settings_from_params(params(**{"zenoh.connect": "tls/10.0.0.2:7447", "zenoh.security": "mtls"}), "d1")


# -- an in-process round trip (plain, localhost) -----------------------------------------------
#: how long to wait for Zenoh's liveliness and load reports (milliseconds when the machine is quiet)
WAIT_S = 10.0


class Outcomes:
    def __init__(self):
        self.got: list = []
        self.event = threading.Event()

    def __call__(self, payload, why) -> None:
        self.got.append((payload, why))
        self.event.set()


class Link:
    """A plain cloud endpoint 'c/1' on a free localhost port and a drone '/d1' connected to it."""

    def __init__(self):
        self.endpoint = f"tcp/127.0.0.1:{free_port()}"
        self.queries, self.changes, self.held = [], [], []
        self.cloud = CloudEndpoint(ZenohSettings(listen=(self.endpoint,)), "c/1", self._on_query)
        self.cloud_open = True
        self.drone = DroneLink(ZenohSettings(connect=(self.endpoint,)), "/d1", self.changes.append)

    def _on_query(self, q) -> None:
        self.queries.append(q)
        if q.payload.startswith(b"hold"):
            self.held.append(q)                              # answered later, or never
        else:
            q.respond(b"re:" + q.payload)
            q.respond(b"second answer")                      # ignored: one reply per query

    def close_cloud(self) -> None:
        if self.cloud_open:
            self.cloud_open = False
            self.cloud.close()


@pytest.fixture
def link():
    lk = Link()
    try:
        wait_until(lambda: lk.drone.cloud_available, WAIT_S, "the drone to see the cloud's liveliness token")
        yield lk
    finally:
        lk.drone.close()
        lk.close_cloud()


def test_a_request_goes_to_the_cloud_and_its_reply_comes_back_once(link):
    assert link.drone.key == "spinn/tail/d1" and link.drone.clouds.alive == {"c_1"} and link.changes[-1] == {"c_1"}
    out = Outcomes()
    before = time.time_ns()
    link.drone.request(b"frame-bytes", WAIT_S, out)
    assert out.event.wait(2 * WAIT_S)
    time.sleep(0.05)                                          # a second answer would arrive by now
    assert out.got == [(b"re:frame-bytes", None)]
    q = link.queries[0]
    assert (q.payload, q.drone) == (b"frame-bytes", "d1") and before <= q.arrived_ns <= time.time_ns()


def test_a_query_nobody_answers_fails_once_at_its_timeout(link):
    out = Outcomes()
    start = time.monotonic()
    link.drone.request(b"hold me", 0.2, out)
    assert out.event.wait(WAIT_S)
    assert time.monotonic() - start >= 0.18
    link.held[0].respond(b"too late")                        # answering after the drone gave up is harmless
    time.sleep(0.05)
    assert len(out.got) == 1 and out.got[0][0] is None and out.got[0][1]


def test_a_query_that_times_out_is_reported_as_a_timeout(link):
    out = Outcomes()
    link.drone.request(b"hold me", 0.1, out)
    assert out.event.wait(WAIT_S)
    assert out.got == [(None, TIMED_OUT)]


def test_the_monitor_probes_the_cloud_and_reads_its_load(link):
    loads, probes = [], Outcomes()
    monitor = MonitorLink(ZenohSettings(connect=(link.endpoint,)), lambda name, load: loads.append((name, load)))
    try:
        wait_until(lambda: monitor.clouds.alive == {"c_1"}, WAIT_S, "the monitor to see the cloud")
        # timeouts for a loaded machine (CI measured a first probe's reply 1.002 s after it left):
        # what is checked here is what comes back, not how fast
        monitor.probe("c/1", up_bytes=1000, down_bytes=50_000, timeout_s=WAIT_S, done=lambda s: probes(s, None))
        assert probes.event.wait(2 * WAIT_S)
        ([echo], _), = probes.got
        assert echo is not None and 0 < echo.reply_s <= WAIT_S
        train = Outcomes()       # a bandwidth train: three payloads back to back, times for each
        monitor.probe("c/1", up_bytes=20_000, down_bytes=16, timeout_s=WAIT_S, done=lambda s: train(s, None), count=3)
        assert train.event.wait(2 * WAIT_S)
        (echoes, _), = train.got
        assert len(echoes) == 3 and all(e is not None and 0 < e.reply_s <= WAIT_S for e in echoes)
        # the cloud's arrival stamps: on its own clock, spread over no more than the replies took
        arrived = [e.received_s for e in echoes]
        assert max(arrived) - min(arrived) <= max(e.reply_s for e in echoes)
        assert monitor.last_probe_error is None
        link.cloud.session.put(load_key("spinn", "c/1"), b"{not json")     # not a measurement: ignored
        link.cloud.session.put(load_key("spinn", "c/1"), b"[1, 2]")        # not a report either
        link.cloud.publish_load({"queue_depth": 3})
        wait_until(lambda: loads, WAIT_S, "the cloud's load report")
        time.sleep(0.05)
        assert loads == [("c_1", {"queue_depth": 3})]
    finally:
        monitor.close()


def test_a_probe_of_a_cloud_that_is_not_there_reports_none(link):
    probes = Outcomes()
    monitor = MonitorLink(ZenohSettings(connect=(link.endpoint,)), lambda name, load: None)
    try:
        wait_until(lambda: monitor.clouds.alive == {"c_1"}, WAIT_S, "the monitor to see the cloud")
        monitor.probe("elsewhere", up_bytes=10, down_bytes=10, timeout_s=1.0, done=lambda s: probes(s, None))
        assert probes.event.wait(WAIT_S) and probes.got == [([None], None)]
    finally:
        monitor.close()


def test_a_malformed_probe_reply_counts_as_lost_and_says_why(link):
    """Something answering on a probe key without the probe-reply frame (an older cloud that
    echoed zeros): no reading is made of it, and the monitor can say what was wrong."""
    rogue = link.cloud.session.declare_queryable(probe_key("spinn", "old"),
                                                 lambda q: q.reply(str(q.key_expr), bytes(64)))
    probes = Outcomes()
    monitor = MonitorLink(ZenohSettings(connect=(link.endpoint,)), lambda name, load: None)
    try:
        wait_until(lambda: monitor.clouds.alive == {"c_1"}, WAIT_S, "the monitor to see the cloud")
        monitor.probe("old", up_bytes=10, down_bytes=64, timeout_s=WAIT_S, done=lambda s: probes(s, None))
        assert probes.event.wait(2 * WAIT_S) and probes.got == [([None], None)]
        assert "malformed probe reply from old" in monitor.last_probe_error
        assert "bad_magic" in monitor.last_probe_error
    finally:
        monitor.close()
        rogue.undeclare()


def test_the_drone_sees_the_cloud_go_and_then_gets_no_reply_at_once(link):
    link.close_cloud()
    wait_until(lambda: not link.drone.cloud_available, WAIT_S, "the drone to see the cloud gone")
    assert link.changes[-1] == set()
    out = Outcomes()
    start = time.monotonic()
    link.drone.request(b"anyone?", WAIT_S, out)
    assert out.event.wait(2 * WAIT_S) and out.got == [(None, NO_REPLY)]
    assert time.monotonic() - start < WAIT_S / 2, "told apart from a timeout: it ended well before it"
