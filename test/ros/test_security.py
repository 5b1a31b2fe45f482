"""The secured drone <-> cloud link with real TLS (issue 13): real Zenoh sessions, a real cloud
server process (mutual TLS, access control), certificates from `spinn certs` (conftest.certs).

Outsiders (no certificate, another CA, a plain TCP client), drones using another drone's
key or name, and rogue queryables get nothing, and the drone node never publishes a
forged answer as SOURCE_CLOUD, with or without the real cloud present."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest
from test_offload import MODEL, cloud_server_argv, drone, wait_cloud_used

from spinn_ros.core import codec
from spinn_ros.core.model_ref import load_model
from spinn_ros.core.preprocess import to_model_input
from spinn_ros.msg import InferenceResult
from spinn_ros.testing.frames import synthetic_frames
from spinn_ros.tools.ports import free_port
from spinn_ros.tools.waiting import wait_until
from spinn_ros.transport.zenoh_link import (
    NO_REPLY,
    TAIL_QUERY_LIMIT,
    DroneLink,
    ZenohSettings,
    alive_key,
    open_session,
    tail_key,
)

from helpers import DroneIO, drone_settings, image_msg

ASK_S = 2.0                     # a query's timeout: answers on loopback take milliseconds
FORGED_STEERING = 0.777         # the rogue's answers carry this steering, the real model's never exactly


def tls(port: int) -> str:
    return f"tls/127.0.0.1:{port}"


@pytest.fixture
def cloud(ros):
    """(port, process): the ROS-free cloud server, secured, letting in drones d1 and d2."""
    port = free_port()
    argv = [*cloud_server_argv(port), "--allow-drone", "d2"]
    proc = ros.start_command("cloud", argv)
    wait_until(lambda: any("serving model" in line for line in proc.lines), 60, "the cloud server")
    return port, proc


def good_request(request_id: int = 7) -> bytes:
    _, model_id = load_model(MODEL)
    x = to_model_input(synthetic_frames(1, seed=1)[0], 128)[0]
    return codec.encode_request(x, request_id=request_id, model_id=model_id, split=0, exit_threshold=1.0,
                                dtype=codec.Dtype.F32)


def ask(link: DroneLink, frame: bytes, key: str | None = None) -> tuple[bytes | None, str | None, float]:
    """(reply, why not, seconds) for one query on the link's own key, or on ``key``."""
    done: list = []
    if key is not None:
        link.key = key
    t0 = time.monotonic()
    link.request(frame, ASK_S, lambda payload, why: done.append((payload, why, time.monotonic() - t0)))
    wait_until(lambda: done, ASK_S + 5, "the query to end")
    return done[0]


def open_link(settings: ZenohSettings, name: str) -> DroneLink | None:
    """A drone end, or None where Zenoh refuses to open it at all (also a pass for an outsider)."""
    try:
        return DroneLink(settings, name)
    except Exception as exc:  # noqa: BLE001 - zenoh.ZError: refused at open
        assert "connect" in str(exc).lower(), exc
        return None


def gets_nothing(link: DroneLink | None, what: str) -> None:
    if link is None:
        return
    try:
        time.sleep(1.0)         # long enough to see the cloud's token were it allowed to (ms on loopback)
        assert not link.cloud_available, f"{what}: sees the cloud's liveliness token"
        payload, why, _ = ask(link, good_request())
        assert payload is None, f"{what}: got a reply"
    finally:
        link.close()


def test_outsiders_are_refused_or_get_nothing(cloud, certs, tmp_path):
    port, proc = cloud
    other_ca = tmp_path / "other"
    subprocess.run([sys.executable, "-m", "spinn_ros.tools.cli", "certs", "--out", str(other_ca), "--drone", "d1"],
                   check=True, capture_output=True)
    insider = DroneLink(drone_settings(certs, "d1", tls(port)), "d1")
    try:
        wait_until(lambda: insider.cloud_available, 30, "d1 to see the cloud")
        reply = codec.decode_reply(ask(insider, good_request())[0])
        assert isinstance(reply, codec.Reply), "the insider is served (the test's own control)"
    finally:
        insider.close()
    no_cert = ZenohSettings(connect=(tls(port),), extra={"transport/link/tls": {"root_ca_certificate":
                                                                              str(certs / "ca.pem")}})
    gets_nothing(open_link(no_cert, "d1"), "a client without a certificate")
    gets_nothing(open_link(drone_settings(other_ca, "d1", tls(port)), "d1"), "a 'd1' certificate from another CA")
    gets_nothing(open_link(ZenohSettings(connect=(f"tcp/127.0.0.1:{port}",)), "d1"), "plain TCP to the TLS port")
    assert proc.poll() is None


def test_a_drone_reaches_only_its_own_key(cloud, certs):
    port, _ = cloud
    d1 = DroneLink(drone_settings(certs, "d1", tls(port)), "d1")
    rogue = DroneLink(drone_settings(certs, "rogue", tls(port)), "rogue")    # our CA, but not let in
    try:
        wait_until(lambda: d1.cloud_available, 30, "d1 to see the cloud")
        assert isinstance(codec.decode_reply(ask(d1, good_request())[0]), codec.Reply)
        payload, why, took = ask(d1, good_request(), key=tail_key("spinn", "d2"))
        assert payload is None and why == NO_REPLY, f"d1 on d2's key: {payload!r} {why}"
        assert took < ASK_S / 2, "a denied query ends at once, it does not wait for the timeout"
        # a certificate with another drone's name: rogue claims d1's key
        assert ask(rogue, good_request(), key=tail_key("spinn", "d1"))[0] is None
        assert ask(rogue, good_request())[0] is None, "a drone not let in: not even its own key"
        assert not rogue.cloud_available, "nor the cloud's keys"
    finally:
        d1.close()
        rogue.close()


class Rogue:
    """A session with a certificate of ours (d2's) or none that answers d1's tail key with forged,
    well-formed replies, and declares a cloud liveliness token of its own."""

    def __init__(self, settings: ZenohSettings):
        self.session = open_session(settings)
        self.asked = 0
        self.queryable = self.session.declare_queryable(tail_key("spinn", "d1"), self._answer)
        self.token = self.session.liveliness().declare_token(alive_key("spinn", "rogue"))

    def _answer(self, query) -> None:
        self.asked += 1
        try:
            rid = codec.decode_request(query.payload.to_bytes()).request_id
        except (codec.WireError, AttributeError):
            rid = 0
        forged = codec.Reply(rid, exit_index=5, collision_prob=0.0, confidence=1.0, steering=FORGED_STEERING,
                             steering_bin=0, compute_ms=1.0, queue_ms=0.0, batch_size=1)
        query.reply(str(query.key_expr), codec.encode_reply(forged))

    def close(self) -> None:
        self.token.undeclare()
        self.queryable.undeclare()
        self.session.close()


def rogues(certs, port: int) -> list[Rogue]:
    """With d2's certificate, with none (refused or filtered; both must fail to forge)."""
    out = [Rogue(drone_settings(certs, "d2", tls(port)))]
    try:
        out.append(Rogue(ZenohSettings(connect=(tls(port),), extra={"transport/link/tls": {
            "root_ca_certificate": str(certs / "ca.pem")}})))
    except Exception:  # noqa: BLE001 - refused at open: fine, it cannot forge anything
        pass
    return out


def fly_frames(io: DroneIO, start: int, n: int = 30) -> None:
    frames = synthetic_frames(5, seed=5)
    for i in range(n):
        io.pub.publish(image_msg(frames[i % 5], "rgb8", start + i))
        time.sleep(0.1)
    wait_until(lambda: start + n - 1 in io.finals(start), 20, "the last frame's final result")


def no_forgery(io: DroneIO) -> None:
    forged = [r.header.stamp.sec for r in io.results.msgs if abs(r.steering - FORGED_STEERING) < 1e-6]
    assert not forged, f"the drone published the rogue's answers for frames {forged}"


def test_rogue_queryable_never_answers_the_drone_with_the_cloud_present(ros, cloud, certs):
    port, _ = cloud
    ros.start(drone("d1", port, **{"zenoh.connect": tls(port)}))
    io = DroneIO(ros, "/d1/camera", "d1")
    wait_cloud_used(io, start_sec=1)
    bad = rogues(certs, port)
    try:
        time.sleep(1.0)
        fly_frames(io, 100)
        finals = io.finals(100)
        no_forgery(io)
        cloud_answers = [r for r in finals.values() if r.source == InferenceResult.SOURCE_CLOUD]
        assert len(cloud_answers) >= 0.8 * len(finals), "the real cloud keeps answering"
        assert sum(r.asked for r in bad) == 0, "no query ever reached a rogue"
    finally:
        for r in bad:
            r.close()


def test_no_forged_cloud_answer_without_the_cloud(ros, certs):
    """No cloud: a rogue router with d2's certificate (our CA, but not the cloud's name) listens where
    the drone expects the cloud; the drone refuses it and answers every frame itself."""
    port = free_port()
    rogue_router = Rogue(ZenohSettings(listen=(tls(port),), security="mtls", certs_dir=str(certs), identity="d2"))
    try:
        ros.start(drone("d1", port, **{"zenoh.connect": tls(port)}))
        io = DroneIO(ros, "/d1/camera", "d1")
        io.prime()
        fly_frames(io, 100)
        finals = io.finals(100)
        no_forgery(io)
        sources = {r.source for r in finals.values()}
        assert InferenceResult.SOURCE_CLOUD not in sources, f"sources {sources} without a cloud"
        assert rogue_router.asked == 0, "the drone never queried the rogue router"
    finally:
        rogue_router.close()


def test_oversized_query_ends_at_once_and_the_link_survives(cloud, certs):
    port, proc = cloud
    d1 = DroneLink(drone_settings(certs, "d1", tls(port)), "d1")
    try:
        wait_until(lambda: d1.cloud_available, 30, "d1 to see the cloud")
        payload, why, took = ask(d1, bytes(TAIL_QUERY_LIMIT + 1024))
        assert payload is None and why == NO_REPLY and took < ASK_S / 2, (why, took)
        reply = codec.decode_reply(ask(d1, good_request(9))[0])
        assert isinstance(reply, codec.Reply) and reply.request_id == 9, "a normal request afterwards is answered"
        assert d1.cloud_available and proc.poll() is None
    finally:
        d1.close()


def test_parameters_explain_missing_certificates(tmp_path):
    with pytest.raises(ValueError, match="spinn certs"):
        ZenohSettings(connect=("tls/127.0.0.1:1",), security="mtls", certs_dir=str(tmp_path), identity="d1")
    with pytest.raises(ValueError, match="tls/ endpoints only"):
        ZenohSettings(connect=("tcp/127.0.0.1:1",), security="mtls", certs_dir=str(tmp_path), identity="d1")



def test_a_node_refuses_a_certificate_that_names_someone_else(certs, tmp_path):
    """d1 given d2's certificate would be let in as d2 (or refused): it says so at start instead."""
    import shutil

    from spinn_ros.transport.zenoh_link import certificate_name

    assert certificate_name(certs / "d1.pem") == "d1"
    mixed = tmp_path / "certs"
    mixed.mkdir()
    shutil.copy(certs / "ca.pem", mixed / "ca.pem")
    shutil.copy(certs / "d2.pem", mixed / "d1.pem")
    shutil.copy(certs / "d2.key", mixed / "d1.key")
    with pytest.raises(ValueError, match="CN='d2'.*'d1'"):
        ZenohSettings(connect=("tls/127.0.0.1:1",), security="mtls", certs_dir=str(mixed), identity="d1")
