"""The Zenoh side of offloading: session set-up, key space, and the drone's and
cloud's ends of the request path. The only module besides the cloud server that
imports zenoh; it knows nothing of ROS and nothing of tensors (bytes in, bytes out).

Key space (``<p>`` = key prefix, ``<drone>`` = the drone's namespace, ``<cloud>`` = a
cloud server's name):

  <p>/tail/<drone>          query: an offload request frame; reply: a reply frame
  <p>/alive/cloud/<cloud>   liveliness token of each cloud server
  <p>/load/<cloud>          put, ~2 Hz: the server's load as JSON
  <p>/probe/<cloud>         query: link probe; the reply (a probe-reply frame, docs/wire-format.md) is
                            the size asked for and says when the probe reached the cloud

Security (``security="mtls"``, the nodes' default): the cloud is a Zenoh router listening
on ``tls/`` only, requiring client certificates signed by the CA (``spinn certs``); drones
and monitors are peers that neither listen nor gossip, each with its own certificate
(CN = its name: the drone's tail-key name, ``<drone>-monitor`` for its monitor). The router's
access control denies by default and lets drone X query only ``<p>/tail/X`` and see only
the cloud's liveliness, load and probe keys; nobody but the cloud (the router's own
session, which no rule filters) declares a queryable or a cloud token. A denied query is
silent: the drone sees "no reply". Every session also caps message sizes per key
(``low_pass_filter``): an oversized query ends at once, unanswered, and the link survives.
"""
from __future__ import annotations

import json
import re
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import zenoh

from ..core.codec import MAX_REQUEST_BYTES, WireError, decode_probe_reply, encode_probe_reply

_NAME = re.compile(r"[^A-Za-z0-9_\-]")
SECURITY = ("mtls", "plain")
#: the cloud's certificate name, and where `spinn certs` puts certificates unless told otherwise
CLOUD_IDENTITY = "cloud"
DEFAULT_CERTS_DIR = "~/.spinn/certs"
#: a query on a tail key carries at most one request frame; replies are small; probes echo <= 1 MiB
TAIL_QUERY_LIMIT = MAX_REQUEST_BYTES + 4096
TAIL_REPLY_LIMIT = 64 * 1024
PROBE_LIMIT = (1 << 20) + 4096


def key_name(ns: str) -> str:
    """A ROS namespace or node name as one key-expression chunk ('/' and wildcards removed)."""
    name = _NAME.sub("_", ns.strip("/"))
    return name or "default"


def monitor_name(drone: str) -> str:
    """The certificate name of a drone's monitor: it reads the cloud's keys, never a tail key."""
    return f"{key_name(drone)}-monitor"


def tail_key(prefix: str, drone: str) -> str:
    return f"{prefix}/tail/{key_name(drone)}"


def alive_key(prefix: str, cloud: str = "*") -> str:
    return f"{prefix}/alive/cloud/{cloud if cloud == '*' else key_name(cloud)}"


def load_key(prefix: str, cloud: str = "*") -> str:
    return f"{prefix}/load/{cloud if cloud == '*' else key_name(cloud)}"


def probe_key(prefix: str, cloud: str = "*") -> str:
    return f"{prefix}/probe/{cloud if cloud == '*' else key_name(cloud)}"


@dataclass(frozen=True)
class ZenohSettings:
    """What a node needs to join the drone<->cloud Zenoh network."""

    mode: str = "peer"                      # "peer" or "client" (a client needs a router or a peer to connect to)
    connect: tuple[str, ...] = ()           # e.g. ("tcp/10.0.0.2:7447",)
    listen: tuple[str, ...] = ()            # e.g. ("tcp/0.0.0.0:7447",) on the cloud
    key_prefix: str = "spinn"
    shared_memory: bool = False             # off: a real link must carry the bytes (SHM bypasses it on one host)
    multicast_scouting: bool = False        # off: endpoints are explicit, nothing floods the LAN
    lease_ms: int = 2000                    # a silent link is declared dead after about this long
    retry_init_ms: int = 200                # reconnect quickly after the cloud comes back
    retry_max_ms: int = 1000
    extra: dict = field(default_factory=dict)  # any other zenoh config path -> JSON value
    security: str = "plain"                 # "mtls": TLS with client certificates (below); "plain": none
    certs_dir: str = ""                     # mtls: ca.pem and <identity>.pem/.key (spinn certs)
    identity: str = ""                      # mtls: this node's certificate name (its CN)
    allowed_drones: tuple[str, ...] = ()    # mtls, on the cloud: the drones (and their monitors) let in

    def __post_init__(self):
        if self.mode not in ("peer", "client"):
            raise ValueError(f"zenoh mode must be 'peer' or 'client', got {self.mode!r}")
        if self.security not in SECURITY:
            raise ValueError(f"zenoh security must be one of {', '.join(SECURITY)}, got {self.security!r}")
        if self.security == "mtls":
            self._check_mtls()
        if not re.fullmatch(r"[A-Za-z0-9_\-]+(/[A-Za-z0-9_\-]+)*", self.key_prefix):
            raise ValueError(f"zenoh key prefix must be plain chunks separated by '/', got {self.key_prefix!r}")
        if self.mode == "client" and not self.connect:
            raise ValueError("zenoh client mode needs at least one connect endpoint")
        for ep in (*self.connect, *self.listen):
            if not re.fullmatch(r"(tcp|udp|tls|quic|unixsock-stream|ws)/.+", ep):
                raise ValueError(f"bad zenoh endpoint {ep!r}: expected e.g. tcp/127.0.0.1:7447")
        if self.lease_ms < 100:
            raise ValueError(f"zenoh lease must be >= 100 ms, got {self.lease_ms}")

    def _check_mtls(self) -> None:
        plain = [ep for ep in (*self.connect, *self.listen) if not ep.startswith("tls/")]
        if plain:
            raise ValueError(f"zenoh security mtls takes tls/ endpoints only, got {plain}")
        if not self.identity:
            raise ValueError("zenoh security mtls needs this node's certificate name (identity)")
        missing = [str(p) for p in self.tls_files().values() if not p.is_file()]
        if missing:
            raise ValueError(f"zenoh security mtls: missing {', '.join(missing)} (certificate directory "
                             f"zenoh.certs={self.certs_dir!r}); create them with "
                             f"`spinn certs --out {self.certs_dir} --drone <drone name>` (the drone's name is its "
                             f"namespace, 'default' without one), or set zenoh.security to plain (no "
                             f"authentication, anyone on the network can talk to it)")
        cn = certificate_name(self.tls_files()["cert"])
        if cn is not None and cn != self.identity:
            raise ValueError(f"zenoh.certs: {self.tls_files()['cert']} names CN={cn!r}, but this node is "
                             f"{self.identity!r}: the cloud's access control would treat it as {cn!r} (another "
                             f"drone's certificate?); make this node's own with `spinn certs --out "
                             f"{self.certs_dir} --drone {self.identity}`")

    def tls_files(self) -> dict[str, Path]:
        d = Path(self.certs_dir).expanduser()
        return {"ca": d / "ca.pem", "cert": d / f"{self.identity}.pem", "key": d / f"{self.identity}.key"}

    @property
    def effective_mode(self) -> str:
        """mtls: the listening cloud is a router (access control needs one); the others stay peers (a
        client cannot open while its router is down) that neither listen nor gossip (below), so their
        only link is the one to the router, where the rules apply."""
        if self.security == "mtls" and self.listen:
            return "router"
        return self.mode

    def config(self) -> zenoh.Config:
        conf = zenoh.Config()
        retry = {"period_init_ms": self.retry_init_ms, "period_max_ms": self.retry_max_ms, "period_increase_factor": 2}
        entries = {
            "mode": self.effective_mode,
            "connect/endpoints": list(self.connect),
            "connect/retry": retry,
            "transport/shared_memory/enabled": self.shared_memory,
            "scouting/multicast/enabled": self.multicast_scouting,
            "transport/link/tx/lease": self.lease_ms,
            "low_pass_filter": size_limits(self.key_prefix),
            **self._security_entries(),
            **self.extra,
        }
        if self.listen:
            entries["listen/endpoints"] = list(self.listen)
        for path, value in entries.items():
            conf.insert_json5(path, json.dumps(value))
        return conf

    def _security_entries(self) -> dict:
        if self.security != "mtls":
            return {}
        f = {k: str(v) for k, v in self.tls_files().items()}
        side = "listen" if self.listen else "connect"
        entries = {"transport/link/tls": {"root_ca_certificate": f["ca"], "enable_mtls": True,
                                          f"{side}_private_key": f["key"], f"{side}_certificate": f["cert"]},
                   "scouting/gossip/enabled": False}
        if self.listen:
            entries["access_control"] = access_control(self.key_prefix, self.allowed_drones)
        else:
            entries["listen/endpoints"] = []      # nothing to reach it by but its own link to the router
        return entries


def certificate_name(pem: Path) -> str | None:
    """The common name in a PEM certificate's subject (None if it cannot be read here).

    CPython's own decoder (``ssl._ssl._test_decode_cert``; no extra dependency); a node
    whose certificate names someone else would be authorised as them, or refused."""
    decode = getattr(getattr(ssl, "_ssl", None), "_test_decode_cert", None)
    if decode is None:
        return None
    try:
        subject = decode(str(pem))["subject"]
    except (OSError, ssl.SSLError, KeyError, ValueError):
        return None
    return next((value for rdn in subject for key, value in rdn if key == "commonName"), None)


def size_limits(prefix: str) -> list[dict]:
    """Per-key message size caps, both ways: beyond them a message is dropped at the transport
    (a query then ends at once, unanswered) before any decoder sees it."""
    both = ["ingress", "egress"]
    return [
        {"id": "tail-queries", "messages": ["query", "put"], "flows": both, "key_exprs": [f"{prefix}/tail/**"],
         "size_limit": TAIL_QUERY_LIMIT},
        {"id": "tail-replies", "messages": ["reply"], "flows": both, "key_exprs": [f"{prefix}/tail/**"],
         "size_limit": TAIL_REPLY_LIMIT},
        {"id": "probes", "messages": ["query", "reply"], "flows": both, "key_exprs": [f"{prefix}/probe/**"],
         "size_limit": PROBE_LIMIT},
    ]


def access_control(prefix: str, drones: tuple[str, ...]) -> dict:
    """The cloud router's rules: default deny; drones and their monitors may subscribe to and query
    the cloud's keys and receive what the cloud says there; drone X may query ``<p>/tail/X`` and
    receive its replies. Nothing lets a client declare a queryable, a cloud token, or put a load."""
    cloud_keys = [alive_key(prefix), load_key(prefix), probe_key(prefix)]
    rules = [
        {"id": "read-cloud-in", "permission": "allow", "flows": ["ingress"], "key_exprs": cloud_keys,
         "messages": ["declare_subscriber", "declare_liveliness_subscriber", "liveliness_query", "query"]},
        {"id": "read-cloud-out", "permission": "allow", "flows": ["egress"], "key_exprs": cloud_keys,
         "messages": ["put", "liveliness_token", "reply", "declare_queryable"]},
    ]
    subjects = [{"id": "clients", "cert_common_names": [n for d in drones for n in (d, monitor_name(d))]}]
    policies = [{"id": "read-cloud", "rules": ["read-cloud-in", "read-cloud-out"], "subjects": ["clients"]}]
    for d in drones:
        key = tail_key(prefix, d)
        rules += [{"id": f"tail-{d}-in", "permission": "allow", "flows": ["ingress"], "messages": ["query"],
                   "key_exprs": [key]},
                  {"id": f"tail-{d}-out", "permission": "allow", "flows": ["egress"],
                   "messages": ["reply", "declare_queryable"], "key_exprs": [key]}]
        subjects.append({"id": f"drone-{d}", "cert_common_names": [d]})
        policies.append({"id": f"tail-{d}", "rules": [f"tail-{d}-in", f"tail-{d}-out"], "subjects": [f"drone-{d}"]})
    if not drones:      # an empty subject list would match everyone: no clients at all instead
        subjects, policies = [], []
        rules = []
    return {"enabled": True, "default_permission": "deny", "rules": rules, "subjects": subjects,
            "policies": policies}


def open_session(settings: ZenohSettings) -> zenoh.Session:
    return zenoh.open(settings.config())


class CloudWatch:
    """Which cloud servers are alive, from their liveliness tokens (history included)."""

    def __init__(self, session: zenoh.Session, prefix: str, on_change: Callable[[set[str]], None] | None = None):
        self._alive: set[str] = set()
        self._lock = threading.Lock()
        self._on_change = on_change
        self.changed_at = time.monotonic()
        self._sub = session.liveliness().declare_subscriber(alive_key(prefix), self._on_sample, history=True)

    def _on_sample(self, sample: zenoh.Sample) -> None:
        name = str(sample.key_expr).rsplit("/", 1)[-1]
        with self._lock:
            if sample.kind == zenoh.SampleKind.PUT:
                self._alive.add(name)
            else:
                self._alive.discard(name)
            alive = set(self._alive)
            self.changed_at = time.monotonic()
        if self._on_change:
            self._on_change(alive)

    @property
    def alive(self) -> set[str]:
        with self._lock:
            return set(self._alive)

    def close(self) -> None:
        self._sub.undeclare()


Outcome = Callable[[bytes | None, str | None], None]  # (reply frame, or None and why)
#: a query that ended well before its timeout with no reply at all: nobody may answer it here (the router's
#: access control denied it, it was over the size cap, or no cloud serves this key), told apart from a timeout
NO_REPLY = "no reply: denied by the cloud's access control, over the size cap, or no cloud serving this key"
TIMED_OUT = "no reply before the query timed out"
ZENOH_TIMEOUT_REPLY = b"Timeout"


class DroneLink:
    """The drone's end: asynchronous offload queries, sent only while a cloud is alive."""

    def __init__(self, settings: ZenohSettings, drone: str, on_cloud_change: Callable[[set[str]], None] | None = None):
        self.settings = settings
        self.key = tail_key(settings.key_prefix, drone)
        self.session = open_session(settings)
        self.clouds = CloudWatch(self.session, settings.key_prefix, on_cloud_change)

    @property
    def cloud_available(self) -> bool:
        return bool(self.clouds.alive)

    def request(self, frame: bytes, timeout_s: float, done: Outcome) -> None:
        """Send ``frame``; ``done`` is called exactly once, from a Zenoh thread, with the
        reply's bytes, or with None and a reason (error reply, timeout, no cloud)."""
        state = {"answered": False}
        lock = threading.Lock()

        def finish(payload, why):
            with lock:
                if state["answered"]:
                    return
                state["answered"] = True
            done(payload, why)

        sent = time.monotonic()

        def on_reply(reply: zenoh.Reply) -> None:
            if reply.ok is not None:
                finish(reply.ok.payload.to_bytes(), None)
                return
            error = reply.err.payload.to_bytes()
            # zenoh (1.x) ends a query that outlives its timeout with the error reply b"Timeout"
            # before on_end: that is a timeout, not an error from the cloud
            if error == ZENOH_TIMEOUT_REPLY and time.monotonic() - sent >= 0.9 * timeout_s:
                finish(None, TIMED_OUT)
            else:
                finish(None, f"zenoh error reply: {error[:200]!r}")

        def on_end() -> None:
            finish(None, NO_REPLY if time.monotonic() - sent < 0.9 * timeout_s else TIMED_OUT)

        # DROP: with the link's queue full (an outage) a query must fail, not block the caller
        self.session.get(self.key, zenoh.handlers.Callback(on_reply, on_end), payload=frame,
                         timeout=max(timeout_s, 0.001), target=zenoh.QueryTarget.BEST_MATCHING,
                         consolidation=zenoh.ConsolidationMode.NONE,
                         congestion_control=zenoh.CongestionControl.DROP)

    def close(self) -> None:
        self.clouds.close()
        self.session.close()


@dataclass(frozen=True)
class ProbeEcho:
    """One answered probe: its reply's time from the first send of its train (the monitor's clock),
    and when it reached the cloud (the cloud's monotonic clock: compare within a train only)."""

    reply_s: float
    received_s: float


class MonitorLink:
    """The monitor's end: cloud liveliness, cloud load reports, and link probes."""

    def __init__(self, settings: ZenohSettings, on_load: Callable[[str, dict], None],
                 on_cloud_change: Callable[[set[str]], None] | None = None):
        self.settings = settings
        self.session = open_session(settings)
        self.clouds = CloudWatch(self.session, settings.key_prefix, on_cloud_change)
        self._on_load = on_load
        self._load_sub = self.session.declare_subscriber(load_key(settings.key_prefix), self._handle_load)
        self.last_probe_error: str | None = None

    def _handle_load(self, sample: zenoh.Sample) -> None:
        try:
            load = json.loads(sample.payload.to_bytes())
        except ValueError:
            return      # not ours to judge; a malformed report is simply not a measurement
        if isinstance(load, dict):
            self._on_load(str(sample.key_expr).rsplit("/", 1)[-1], load)

    def probe(self, cloud: str, up_bytes: int, down_bytes: int, timeout_s: float,
              done: Callable[[list[ProbeEcho | None]], None], count: int = 1) -> None:
        """``count`` queries of ``up_bytes`` to ``cloud``, sent back to back, each answered with
        ``down_bytes``; ``done([ProbeEcho | None (lost, later than ``timeout_s`` or malformed), ...])``
        once all ended. A malformed reply is also kept in ``last_probe_error``."""
        t0 = time.perf_counter()
        answered: list[ProbeEcho | None] = [None] * count
        ended = []
        lock = threading.Lock()

        def on_reply(i: int, reply: zenoh.Reply) -> None:
            if reply.ok is None or answered[i] is not None:
                return
            reply_s = time.perf_counter() - t0
            try:
                received_ns = decode_probe_reply(reply.ok.payload.to_bytes(), max_bytes=PROBE_LIMIT)
            except WireError as exc:
                self.last_probe_error = f"malformed probe reply from {cloud}: {exc}"
                return
            if reply_s > timeout_s:
                return      # timed past its timeout (a busy computer's late callback): lost, as documented
            answered[i] = ProbeEcho(reply_s, received_ns / 1e9)

        def on_end() -> None:
            with lock:
                ended.append(True)
                last = len(ended) == count
            if last:
                done(list(answered))

        key = f"{probe_key(self.settings.key_prefix, cloud)}?size={int(down_bytes)}"
        for i in range(count):
            self.session.get(key, zenoh.handlers.Callback(lambda reply, i=i: on_reply(i, reply), on_end),
                             payload=bytes(up_bytes), timeout=timeout_s, express=True,
                             congestion_control=zenoh.CongestionControl.DROP)

    def close(self) -> None:
        self._load_sub.undeclare()
        self.clouds.close()
        self.session.close()


@dataclass
class IncomingQuery:
    """A request as the cloud server sees it; ``respond`` may be called from any thread, once."""

    payload: bytes
    drone: str
    arrived_ns: int
    respond: Callable[[bytes], None]


class CloudEndpoint:
    """The cloud's end: a queryable for every drone's tail key, its liveliness token,
    and periodic load puts. Requests are handed to ``on_query`` and answered later,
    from whatever thread finishes them (the batching worker)."""

    def __init__(self, settings: ZenohSettings, name: str, on_query: Callable[[IncomingQuery], None]):
        self.settings = settings
        self.name = key_name(name)
        self.session = open_session(settings)
        prefix = settings.key_prefix
        self._on_query = on_query
        self._queryable = self.session.declare_queryable(f"{prefix}/tail/*", self._handle, complete=True)
        self._probe = self.session.declare_queryable(probe_key(prefix, self.name), self._handle_probe)
        self._load_pub = self.session.declare_publisher(load_key(prefix, self.name))
        self._token = self.session.liveliness().declare_token(alive_key(prefix, self.name))

    def _handle(self, query: zenoh.Query) -> None:
        key = str(query.key_expr)
        payload = query.payload.to_bytes() if query.payload is not None else b""
        responded = threading.Lock()

        def respond(frame: bytes) -> None:
            if not responded.acquire(blocking=False):
                return
            try:
                query.reply(key, frame)
            finally:
                query.drop()   # finalise now: the drone's get() completes without waiting for GC

        self._on_query(IncomingQuery(payload, key.rsplit("/", 1)[-1], time.time_ns(), respond))

    def _handle_probe(self, query: zenoh.Query) -> None:
        """Answer with a probe reply of the size asked for (``?size=N``), so the monitor can time
        both directions, stamped with when the probe arrived (a train's spacing, read here)."""
        received_ns = time.monotonic_ns()
        with query:
            try:
                size = min(int(query.parameters.get("size") or 0), 1 << 20)
            except ValueError:
                size = 0
            query.reply(str(query.key_expr), encode_probe_reply(received_ns, size))

    def publish_load(self, load: dict) -> None:
        self._load_pub.put(json.dumps(load))

    def close(self) -> None:
        for entity in (self._token, self._load_pub, self._probe, self._queryable):
            entity.undeclare()
        self.session.close()


def settings_from_params(p: dict, identity: str, warn: Callable[[str], None] | None = None) -> ZenohSettings:
    """ZenohSettings from a node's declared ``zenoh.*`` parameters (see ros/params.zenoh_params);
    ``identity``: the node's certificate name; ``warn`` is told when security is off."""
    split = lambda text: tuple(e.strip() for e in text.split(",") if e.strip())  # noqa: E731
    settings = ZenohSettings(mode=p["zenoh.mode"], connect=split(p["zenoh.connect"]), listen=split(p["zenoh.listen"]),
                             key_prefix=p["zenoh.key_prefix"], shared_memory=p["zenoh.shared_memory"],
                             lease_ms=p["zenoh.lease_ms"], security=p["zenoh.security"], certs_dir=p["zenoh.certs"],
                             identity=identity, allowed_drones=split(p.get("zenoh.allowed_drones", "")))
    if settings.security == "plain" and warn is not None:
        warn("zenoh.security is plain: no authentication, no access control; anyone who can reach "
             f"{', '.join(settings.listen or settings.connect) or 'this session'} can query or answer as the cloud")
    return settings
