"""A bounded run of the wire-format fuzzer (bench/fuzz_codec.py, 100 000 frames for the record):
mutated valid frames through both decoders and a real tail server, 0 crashes, 0 hangs."""
from __future__ import annotations

from spinn_ros.testing.fuzz import fuzz


def test_mutated_frames_never_crash_or_hang_the_decoders_or_the_tail_server():
    res = fuzz(3000, seed=13)
    assert res["crashes"] == 0, res["crash_examples"]
    assert res["hangs"] == 0, res["hang_examples"]
    answers = res["server_answers"]
    assert sum(answers.values()) == res["frames"], f"every frame answered exactly once: {answers}"
    # the mutants reach past the framing into the field checks and the model (or the run proves little)
    request_errors = {k for k in res["decoded_as"] if k.startswith("request WireError")}
    assert len(request_errors) >= 6 and answers.get("Reply", 0) > 0, res["decoded_as"]


def test_a_request_that_overflows_the_tail_fails_alone_and_every_request_is_answered_once():
    """Found by the fuzzer: finite but extreme values (3e38) overflow the network to NaN; that request's
    reply used to fail the whole batch, whose already-answered requests were then answered twice."""
    import threading

    import torch

    from spinn_ros.core import codec
    from spinn_ros.core.model_ref import load_model
    from spinn_ros.core.tail_server import TailServer

    model, model_id = load_model("random:small:0")
    shape = codec.split_shapes(model)[1]
    normal, extreme = torch.rand(shape), torch.full(shape, 3e38)
    answers: dict[int, list] = {1: [], 2: [], 3: []}
    done = threading.Semaphore(0)
    server = TailServer(model, model_id, max_batch=8, max_wait_ms=200.0, adaptive_wait=False)   # one sender
    try:
        for rid, x in ((1, normal), (2, extreme), (3, normal)):      # one batch: same split, within the wait
            frame = codec.encode_request(x, request_id=rid, model_id=model_id, split=1, exit_threshold=1.0,
                                         dtype=codec.Dtype.F32)
            server.submit(frame, lambda reply, rid=rid: (answers[rid].append(codec.decode_reply(reply)),
                                                         done.release()))
        for _ in range(3):
            assert done.acquire(timeout=30)
        assert not done.acquire(timeout=0.5), f"a request answered twice: {answers}"
    finally:
        server.close()
    assert [type(a[0]).__name__ for a in answers.values()] == ["Reply", "ErrorReply", "Reply"], answers
    assert answers[2][0].code == codec.ErrorCode.NON_FINITE
