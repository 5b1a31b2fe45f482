"""SPINN's performance model: predictions for every plan (split, threshold, mode) at once.

:class:`PerformanceModel` turns the device and cloud profiles, the calibration and the
current :class:`Conditions` into predictions for every plan (numpy over a
(mode x threshold, split, exit) grid); core/scheduler.py chooses among them. The equations
are in docs/scheduler.md; this module is pure (no rclpy, no zenoh, no torch).
"""
from __future__ import annotations

import numpy as np

from .calibration import PLAIN_NETWORK, Calibration, provisional_accuracy
from .mailbox_wait import MailboxWaits, mailbox_waits
from .plan import OFFLOAD_FIRST, PLAN_MODES, PROVISIONAL_FIRST, RACE, check_mode
from .prediction import BOTTLENECKS, METRICS, Conditions, Prediction, PredictionTable
from .profile import Profile, ProfileError

# ---------------------------------------------------------------------------------
# Performance model
# ---------------------------------------------------------------------------------


def _path_times(stage_ms: np.ndarray, exit_ms: np.ndarray, heads: np.ndarray, exit_stages: np.ndarray,
                on_device: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(to_exit (C, E), to_split (C, S)): time from the input to exit e having answered
    (every earlier head evaluated) and to the split point with the heads before it.
    ``to_exit[c, e] - to_split[c, s]`` is a tail's time from split s to exit e."""
    cum = np.concatenate([[0.0], np.cumsum(stage_ms)])           # cum[s]: stages [0, s)
    head_cost = exit_ms[None, :] * heads                          # (C, E); 0 for heads that do not run
    to_exit = cum[exit_stages + 1][None, :] + np.cumsum(head_cost, axis=1)
    to_split = cum[None, :] + head_cost @ on_device.T.astype(float)
    return to_exit, to_split


def _check_consistent(device: Profile, cloud: Profile | None, cal: Calibration) -> None:
    for p in (device, cloud):
        if p is None:
            continue
        where = f"profile {p.source} ({p.role})"
        if p.model_id != cal.model_id:
            raise ProfileError(f"{where} is for model {p.model_id}, calibration {cal.source} for {cal.model_id}")
        if p.num_stages != cal.num_stages or p.exit_stages != cal.exit_stages:
            raise ProfileError(f"{where}: stages/exits {p.num_stages}/{p.exit_stages} differ from calibration "
                               f"{cal.source}: {cal.num_stages}/{cal.exit_stages}")
    if device.role != "device" or (cloud is not None and cloud.role != "cloud"):
        raise ProfileError("PerformanceModel needs a device profile and a cloud profile (or None)")


class PerformanceModel:
    """Predicts latency, accuracy, throughput, bytes and server cost for every plan."""

    def __init__(self, device: Profile, cloud: Profile | None, calibration: Calibration, *, stat: str = "median"):
        _check_consistent(device, cloud, calibration)
        self.device, self.cloud, self.cal, self.stat = device, cloud, calibration, stat
        self.num_stages = n = calibration.num_stages
        self.splits = np.arange(n + 1)
        self.thresholds = np.array([*calibration.thresholds, PLAIN_NETWORK])
        self.exit_stages = np.array(calibration.exit_stages)
        self.on_device = self.exit_stages[None, :] < self.splits[:, None]            # (S, E)
        self.rates, self.exit_acc, self.heads = self._exit_tables()                  # (C, E) each
        self.prov_acc = self._provisional_accuracy()                                 # (C, S), NaN: none
        self.sent_rates, self.sent_acc = self._sent_tables()                         # (C, S, E) each
        self.first_exit_acc = self._first_exit_accuracy()
        self.stale_acc = _stale_accuracy(calibration)
        self.dev_to_exit, self.dev_to_split = _path_times(
            device.stage_ms(stat), device.exit_ms(stat), self.heads, self.exit_stages, self.on_device)
        self.preprocess_ms = device.preprocess_ms(stat)
        # times below run from the frame's arrival in the drone node (its deadline counts from there);
        # what a consumer sees adds the node's measured pass-through both ways
        self.hop_ms = sum(device.hop_ms(stat))
        self.batch_sizes = np.array(cloud.batch_sizes if cloud else [1], dtype=float)
        # (B, C, S, E); with no cloud profile nothing offloads (every split but N is invalid)
        self.cloud_tail = self._cloud_tails() if cloud else np.zeros((1, len(self.rates), n + 1, self.rates.shape[1]))
        self._wire_cache: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._mailbox_cache: dict[tuple, MailboxWaits] = {}

    # -- tables that do not depend on conditions -------------------------------------------
    def _exit_tables(self):
        cal, num_exits = self.cal, len(self.exit_stages)
        rows = [cal.row(t) for t in cal.thresholds]
        rates = [r["exit_rate"] for r in rows] + [[0.0] * (num_exits - 1) + [1.0]]
        final_acc = cal.exits[-1].get("standalone_accuracy")
        if final_acc is None:          # the plain network answers like the final exit at the highest threshold
            final_acc = rows[-1]["exit_accuracy"][-1] or 0.0
        accs = [[a or 0.0 for a in r["exit_accuracy"]] for r in rows] + [[0.0] * (num_exits - 1) + [final_acc]]
        heads = np.ones((len(rows) + 1, num_exits), dtype=bool)
        heads[-1, :-1] = False         # the plain network runs only the final classifier
        return np.array(rates, dtype=float), np.array(accs, dtype=float), heads

    def _provisional_accuracy(self) -> np.ndarray:
        out = np.full((len(self.thresholds), self.num_stages + 1), np.nan)
        for c, t in enumerate(self.cal.thresholds):          # the plain network has no provisional answer
            for s in self.splits:
                a = provisional_accuracy(self.cal, int(s), t)
                out[c, s] = np.nan if a is None else a
        return out

    def _sent_tables(self) -> tuple[np.ndarray, np.ndarray]:
        """(rates, accuracy) (C, S, E) when the request leaves before any device exit runs: the
        cloud's exits (those at or after the split) answer, so frames that would have left at an
        exit before the split answer at the first exit after it. Exact with no exit before the
        split; otherwise their accuracy there is taken as the earlier exit's (a lower bound when
        deeper exits are better)."""
        C, E = self.rates.shape
        rates = np.zeros((C, self.num_stages + 1, E))
        acc = np.zeros_like(rates)
        for s in range(self.num_stages):
            j = int(np.argmax(self.exit_stages >= s))          # the first exit in the cloud
            folded = self.rates[:, : j + 1].sum(1)
            rates[:, s, j:] = self.rates[:, j:]
            rates[:, s, j] = folded
            acc[:, s, j:] = self.exit_acc[:, j:]
            with np.errstate(divide="ignore", invalid="ignore"):
                acc[:, s, j] = np.where(folded > 0, (self.rates[:, : j + 1] * self.exit_acc[:, : j + 1]).sum(1)
                                        / folded, self.exit_acc[:, j])
        rates[:, -1] = self.rates              # at split N nothing is sent: the device alone (mode invalid)
        acc[:, -1] = self.exit_acc
        return rates, acc

    def _first_exit_accuracy(self) -> float:
        """The race's provisional answer: the first exit on every frame."""
        standalone = self.cal.exits[0].get("standalone_accuracy")
        return float(standalone if standalone is not None else self.exit_acc[0, 0])

    def _cloud_tails(self) -> np.ndarray:
        """(B, C, S, E): cloud time from split s until exit e answers, per profiled batch size."""
        tails = []
        for b in self.cloud.batch_sizes:
            to_exit, to_split = _path_times(self.cloud.stage_ms(self.stat, b), self.cloud.exit_ms(self.stat, b),
                                            self.heads, self.exit_stages, self.on_device)
            overhead = np.append(self.cloud.batch_overhead_ms(b, self.stat), 0.0)      # no tail at split N
            tails.append(to_exit[:, None, :] - to_split[:, :, None] + overhead[None, :, None])
        return np.stack(tails)

    def _mailbox(self, mode: str, cond: Conditions, busy_dev, R_dev, busy_off, p_off) -> MailboxWaits:
        """The mailbox wait's distribution over the paths the frames before took (core/mailbox_wait.py).
        It depends on the drone's own work only, not on the link: kept per (mode, drone speed,
        camera rate, encoding), so a monitor re-planning for new link estimates solves it once."""
        key = (mode, cond.device_slowdown, cond.frame_rate_hz, cond.encoding)
        if key not in self._mailbox_cache:
            if len(self._mailbox_cache) >= 3 * len(PLAN_MODES):        # settings changed: start afresh
                self._mailbox_cache.clear()
            busy = np.concatenate([np.broadcast_to(busy_dev, R_dev.shape), busy_off[..., None]], axis=-1)
            self._mailbox_cache[key] = mailbox_waits(cond.frame_rate_hz, busy,
                                                     np.concatenate([R_dev, p_off[..., None]], axis=-1))
        return self._mailbox_cache[key]

    def _wire(self, encoding: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(bytes, encode ms, decode ms) per split; 0 at split N (nothing to send)."""
        if encoding not in self._wire_cache:
            zero = lambda a: np.append(np.asarray(a, dtype=float), 0.0)
            decode = self.cloud.decode_ms(encoding, self.stat) if self.cloud else np.zeros(self.num_stages)
            self._wire_cache[encoding] = (zero(self.device.wire_bytes(encoding)),
                                          zero(self.device.encode_ms(encoding, self.stat)), zero(decode))
        return self._wire_cache[encoding]

    def _cloud_tail_at(self, batch: float) -> np.ndarray:
        """Tail times at a (possibly fractional) batch size: linear between profiled sizes."""
        b = float(np.clip(batch, self.batch_sizes[0], self.batch_sizes[-1]))
        i = int(np.clip(np.searchsorted(self.batch_sizes, b) - 1, 0, len(self.batch_sizes) - 1))
        if i == len(self.batch_sizes) - 1:
            return self.cloud_tail[i]
        w = (b - self.batch_sizes[i]) / (self.batch_sizes[i + 1] - self.batch_sizes[i])
        return (1 - w) * self.cloud_tail[i] + w * self.cloud_tail[i + 1]

    # -- predictions ------------------------------------------------------------------------
    def predict_all(self, cond: Conditions, percentile: float = 95.0, on_time_ms: float | None = None,
                    ) -> PredictionTable:
        """Every plan's prediction under ``cond`` (see docs/scheduler.md for the equations);
        ``on_time_ms``: the deadline on-time accuracy is judged at (default: the drone's).
        Arrays are (row = mode x threshold column, split S[, exit E])."""
        on_time_ms = cond.deadline_ms if on_time_ms is None else on_time_ms
        parts = [self._predict_mode(cond, mode, percentile, on_time_ms) for mode in PLAN_MODES]
        stack = lambda key: np.concatenate([p[key] for p in parts])               # noqa: E731
        C = len(self.thresholds)
        return PredictionTable(
            thresholds=np.tile(self.thresholds, len(PLAN_MODES)), modes=np.repeat(np.arange(len(PLAN_MODES)), C),
            num_stages=self.num_stages, percentile=percentile, valid=stack("valid"), bottleneck=stack("bottleneck"),
            holds_device_answer=stack("holds"), metrics={m: stack(m) for m in METRICS})

    def _mode_inputs(self, mode: str, k: float, enc_ms: np.ndarray):
        """What differs between modes, per (C, S): (rates (C, S, E), exit accuracy (C, S, E), drone time
        until the request leaves, drone time after it for the provisional answer, its accuracy (NaN: none))."""
        C, S = len(self.thresholds), self.num_stages + 1
        if mode == PROVISIONAL_FIRST:
            rates = np.broadcast_to(self.rates[:, None, :], (C, S, len(self.exit_stages)))
            return (rates, np.broadcast_to(self.exit_acc[:, None, :], rates.shape), k * self.dev_to_split + k * enc_ms,
                    np.zeros((C, S)), self.prov_acc)
        plain_head = k * self.dev_to_split[-1] + k * enc_ms                     # stages only, no exit head
        before = np.broadcast_to(plain_head, (C, S))
        if mode == OFFLOAD_FIRST:
            return self.sent_rates, self.sent_acc, before, np.zeros((C, S)), np.full((C, S), np.nan)
        # race: on to the first exit (if the split comes before it) and its head, after sending
        after = np.broadcast_to(self._first_exit_work(k), (C, S))
        return self.sent_rates, self.sent_acc, before, after, np.full((C, S), self.first_exit_acc)

    def _first_exit_work(self, k: float) -> np.ndarray:
        """(S,): drone ms from the split's activation to the first exit's answer (its stages, if the
        split comes before it, and its head)."""
        cum = np.concatenate([[0.0], np.cumsum(self.device.stage_ms(self.stat))])
        return k * (np.maximum(cum[int(self.exit_stages[0]) + 1] - cum, 0.0) + self.device.exit_ms(self.stat)[0])

    def _predict_mode(self, cond: Conditions, mode: str, percentile: float, on_time_ms: float) -> dict:
        k, usable = cond.device_slowdown, cond.link_usable and self.cloud is not None
        nbytes, enc_ms, dec_ms = self._wire(cond.encoding)
        R, exit_acc, before_send, after_send, prov_acc = self._mode_inputs(mode, k, enc_ms)
        on_dev = self.on_device[None]                                      # (1, S, E)
        R_dev, R_cloud = R * on_dev, R * ~on_dev                           # (C, S, E)
        p_off = R_cloud.sum(-1)                                            # (C, S)
        pre = self.preprocess_ms * k
        busy_dev = pre + k * self.dev_to_exit[:, None, :]                     # (C, 1, E): answered at exit e
        busy_off = pre + before_send + after_send                            # (C, S): offloaded
        busy = (R_dev * busy_dev).sum(-1) + p_off * busy_off
        mailbox = self._mailbox(mode, cond, busy_dev, R_dev, busy_off, p_off)
        wait_w, mean_wait = mailbox.weights, mailbox.mean                   # (C, S, J), (C, S)
        start = mean_wait + pre                                              # (C, S): the head starts
        dev_exit_lat = start[..., None] + k * self.dev_to_exit[:, None, :]   # answered by a device exit
        sent_at = start + before_send                                        # the request leaves the drone
        has_prov = ~np.isnan(prov_acc)                                       # (C, S)
        prov_at = np.where(has_prov, sent_at + after_send - (k * enc_ms if mode == PROVISIONAL_FIRST else 0),
                           np.inf)

        tx, link_wait = _uplink(cond, usable, nbytes, busy, p_off, mailbox.interval_cv2)
        tail, share, queue = self._cloud_side(cond, R_cloud, p_off)
        answer_at = (sent_at + link_wait + queue)[..., None] + (tx + cond.rtt_ms + dec_ms)[None, :, None] + tail

        # the deadline: a late or lost offload answers with the provisional answer at the deadline
        # (once it exists) or, with none, the drone computes the tail then
        loss = cond.loss_rate if usable else 1.0
        tail_on_device = k * (self.dev_to_exit[:, None, :] - self.dev_to_split[:, :, None])
        fallback_work = np.where(has_prov[..., None], 0.0, tail_on_device)
        fallback_lat = np.maximum(cond.deadline_ms, np.where(has_prov, prov_at, sent_at))[..., None] + fallback_work
        late = answer_at > cond.deadline_ms
        p_fb = loss + (1 - loss) * late                                             # per cloud exit

        # the in-flight cap: beyond it the head answers at once (the provisional answer, else the first exit's)
        admitted = _admitted_share(cond, busy, p_off, R_cloud, answer_at, sent_at, loss)
        R_cloud, R_refused = R_cloud * admitted[..., None], R_cloud * (1 - admitted[..., None])
        prov = np.nan_to_num(prov_acc)[..., None]
        refused_lat = np.broadcast_to(np.where(has_prov, prov_at, sent_at + self._first_exit_work(k))[..., None],
                                      R_refused.shape)
        refused_acc = np.broadcast_to(np.where(has_prov[..., None], prov, self.first_exit_acc), R_refused.shape)

        # latency: a mixture over (exit, delivered | lost | refused)
        w = np.concatenate([R_dev + R_cloud * (1 - loss), R_cloud * loss, R_refused], axis=-1)
        delivered_lat = np.where(on_dev, dev_exit_lat, np.where(late, fallback_lat, answer_at))
        lat = np.concatenate([delivered_lat, fallback_lat, refused_lat], axis=-1) + self.hop_ms

        # accuracy: the calibrated answer, except the provisional one where a fallback uses it
        fallback_acc = np.where(has_prov[..., None], prov, exit_acc)
        accuracy = ((R_dev * exit_acc).sum(-1) + (R_cloud * (exit_acc - p_fb * (exit_acc - fallback_acc))).sum(-1)
                    + (R_refused * refused_acc).sum(-1))
        final_acc = np.concatenate([np.where(on_dev | ~late, exit_acc, fallback_acc), fallback_acc, refused_acc],
                                   axis=-1)

        device_ms = busy + (R_cloud * p_fb * fallback_work).sum(-1)
        bytes_pf = p_off * admitted * nbytes[None, :]
        server_ms = (R_cloud * (1 - loss) * (share + dec_ms[None, :, None])).sum(-1)
        fps = _throughput_bounds(cond, usable, device_ms, mailbox.periods_per_frame, bytes_pf, server_ms)
        processed = fps[BOTTLENECKS.index("device")] / cond.frame_rate_hz    # the rest: replaced in the mailbox
        # the latencies above hold the mean mailbox wait; the percentile and the on-time share take
        # its distribution, independent of the frame's own path
        # (answers the deadline pins, the fallbacks at it, do not move)
        shift = mailbox.values - mean_wait[..., None]                        # (C, S, J)
        pinned_fb = np.broadcast_to((cond.deadline_ms >= np.where(has_prov, prov_at, sent_at))[..., None],
                                    fallback_lat.shape)
        moves = ~np.concatenate([~on_dev & late & pinned_fb, pinned_fb, np.zeros(R_refused.shape, bool)], axis=-1)
        # components no plan weighs (no loss, no refusal, a wait nobody overruns into) stay out of the sort
        used_k, used_j = (w > 0).any(axis=(0, 1)), (wait_w > 0).any(axis=(0, 1))
        lat, final_acc, w, moves = lat[..., used_k], final_acc[..., used_k], w[..., used_k], moves[..., used_k]
        shift, wait_w = shift[..., used_j], wait_w[..., used_j]
        lat_j = lat[..., None, :] + moves[..., None, :] * shift[..., :, None]              # (C, S, J, K)
        prov_j = prov_at[..., None] + self.hop_ms + shift                                   # (C, S, J)
        on_time = (wait_w * self._on_time_accuracy(lat_j, final_acc[..., None, :], w[..., None, :], prov_j,
                                                   prov[..., None, :], on_time_ms, processed[..., None])).sum(-1)
        valid, holds = self._valid_and_holding(mode, usable)
        # a plan whose every offload lands after the deadline sends work nobody can use
        valid &= ~((p_off > 0) & ((R_cloud * (1 - p_fb)).sum(-1) <= 0))
        # the joint percentile for the plans the drone can run now; the rest (never chosen) at the mean wait
        latency = np.empty(valid.shape)
        latency[~valid] = _mixture_percentile(lat[~valid], w[~valid], percentile)
        if valid.any():
            joint_w = wait_w[valid][..., :, None] * w[valid][..., None, :]
            latency[valid] = _mixture_percentile(lat_j[valid].reshape(valid.sum(), -1),
                                                 joint_w.reshape(valid.sum(), -1), percentile)
        return {"valid": valid, "bottleneck": fps.argmin(0), "holds": holds,
                "latency_ms": latency, "mean_latency_ms": (w * lat).sum(-1),
                "accuracy": accuracy, "on_time_accuracy": on_time, "throughput_fps": fps.min(0),
                "offload_fraction": p_off * admitted, "fallback_fraction": (R_cloud * p_fb + R_refused).sum(-1),
                "bytes_per_frame": bytes_pf, "server_ms_per_frame": server_ms, "device_ms_per_frame": device_ms}

    def _valid_and_holding(self, mode: str, usable: bool) -> tuple[np.ndarray, np.ndarray]:
        """(the plans of ``mode`` the drone can run now, those that hold a device answer without
        the network), (C, S). Each plan is counted once: provisional-first needs a device exit before
        its split (else it is offload-first) and exit heads (the plain network is offload-first); at
        split N every mode is the drone alone, counted as provisional-first."""
        C, n = len(self.thresholds), self.num_stages
        offloads = (self.splits < n) & usable
        if mode == PROVISIONAL_FIRST:
            valid = np.broadcast_to((self.splits == n) | offloads & (self.splits > self.exit_stages[0]), (C, n + 1))
            valid = valid.copy()
            valid[-1, :n] = False
            return valid, valid.copy()
        valid = np.broadcast_to(offloads, (C, n + 1)).copy()
        return valid, valid & (mode == RACE)

    def _on_time_accuracy(self, lat, final_acc, w, prov_at, prov, on_time_ms: float, processed) -> np.ndarray:
        """Share of camera frames whose own answer in force at ``on_time_ms`` is right: the final
        answer when it is out by then, else the provisional one when it is, else (and for the
        frames the busy drone never took) an answer of another frame, right at the stale rate."""
        prov_in_time = (prov_at <= on_time_ms)[..., None]
        fallback = np.where(prov_in_time, prov, self.stale_acc)
        per_answer = np.where(lat <= on_time_ms, final_acc, fallback)
        return processed * (w * per_answer).sum(-1) + (1 - processed) * self.stale_acc

    def _cloud_side(self, cond: Conditions, R_cloud: np.ndarray, p_off: np.ndarray):
        """(tail (C, S, E), per-frame server share (C, S, E), queueing (C, S)): the batch runs the
        tail to the exit that answers; the queue holds ``depth`` requests of measured (or
        predicted) compute each, unless its wait was measured directly."""
        tail = self._cloud_tail_at(cond.cloud_batch_size) * cond.cloud_slowdown
        share = tail / max(cond.cloud_batch_size, 1.0)
        if cond.cloud_queue_ms is not None:
            return tail, share, np.full(p_off.shape, cond.cloud_queue_ms)
        if cond.cloud_compute_ms is not None:
            return tail, share, np.full(p_off.shape, cond.cloud_queue_depth * cond.cloud_compute_ms)
        with np.errstate(divide="ignore", invalid="ignore"):
            per_request = np.where(p_off > 0, (R_cloud * share).sum(-1) / p_off, 0.0)
        return tail, share, cond.cloud_queue_depth * per_request

    def cloud_ms_per_request(self, split: int, exit_index: int, threshold: float, batch: float = 1.0) -> float:
        """The cloud profile's compute for one request of a batch of ``batch``: the tail from ``split``
        to the exit that answered, its share of the batch, with no slowdown (what a cloud answer's
        measured ``cloud_compute_ms`` is compared with); NaN for a tail the model has no such exit in."""
        if (self.cloud is None or not 0 <= split < self.num_stages or not 0 <= exit_index < len(self.exit_stages)
                or self.exit_stages[exit_index] < split):
            return float("nan")
        column = len(self.thresholds) - 1 if threshold == PLAIN_NETWORK else 0      # heads run, or not
        return float(self._cloud_tail_at(batch)[column, split, exit_index] / max(batch, 1.0))

    def column(self, threshold: float) -> int:
        """Threshold -> column (snapped to the calibration grid; PLAIN_NETWORK is the last)."""
        return len(self.thresholds) - 1 if threshold == PLAIN_NETWORK else self.cal.threshold_index(threshold)

    def predict(self, split: int, threshold: float, cond: Conditions, percentile: float = 95.0,
                mode: str = PROVISIONAL_FIRST, on_time_ms: float | None = None) -> Prediction:
        if not isinstance(split, (int, np.integer)) or not 0 <= split <= self.num_stages:
            raise ValueError(f"split must be an integer in [0, {self.num_stages}], got {split!r}")
        table = self.predict_all(cond, percentile, on_time_ms)
        return table.prediction(table.row(check_mode(mode), self.column(threshold)), int(split))


def _admitted_share(cond: Conditions, busy, p_off, R_cloud, answer_at, sent_at, loss: float) -> np.ndarray:
    """(C, S): the share of offloads the drone's in-flight cap lets out. An offload holds a slot
    from leaving until its answer or its deadline; by Little's law the offloads out at once
    average their rate x that time, and those beyond the cap are refused."""
    with np.errstate(divide="ignore", invalid="ignore"):
        done_at = (1 - loss) * np.minimum(answer_at, cond.deadline_ms) + loss * cond.deadline_ms
        held_ms = np.where(p_off > 0, (R_cloud * done_at).sum(-1) / p_off - sent_at, 0.0)
        out = np.minimum(cond.frame_rate_hz, 1e3 / busy) * p_off * held_ms / 1e3
        return np.where(out > cond.max_in_flight, cond.max_in_flight / out, 1.0)


def _stale_accuracy(cal: Calibration) -> float:
    """How often an answer for another, unrelated frame is right: the chance two draws from
    the class balance agree (a camera's consecutive frames agree more often: a lower bound)."""
    frac = cal.data.get("collision_fraction")
    return 0.5 if frac is None else frac * frac + (1 - frac) * (1 - frac)


def _uplink(cond: Conditions, usable: bool, nbytes: np.ndarray, busy: np.ndarray, p_off: np.ndarray,
            interval_cv2: np.ndarray):
    """(transfer ms per split, queueing ms (C, S)): Kingman's G/D/1 wait at the offered offload
    rate, the drone's frame rate (camera- or compute-bound) times the offload share. The offloads
    are the drone's processed frames (as regular as the mailbox chain says, ``interval_cv2``)
    thinned by the offload share ``p``, so their arrivals vary by ``ca2 = 1 - p + p cv2``: 0 for a
    periodic camera sending every frame (no queue below saturation), 1 (M/D/1) for rare offloads.
    A saturated (or unusable) link never delivers."""
    with np.errstate(divide="ignore", invalid="ignore"):
        if usable:
            tx = np.where(nbytes > 0, nbytes * 8 / (cond.bandwidth_mbps * 1e3), 0.0)
        else:
            tx = np.full_like(nbytes, np.inf)
        rho = np.minimum(cond.frame_rate_hz, 1e3 / busy) * p_off * tx[None, :] / 1e3
        ca2 = 1.0 - p_off + p_off * interval_cv2
        return tx, np.where(rho < 1, rho / (1 - rho) * ca2 / 2 * tx[None, :], np.inf)


def _throughput_bounds(cond: Conditions, usable: bool, device_ms, periods_per_frame, bytes_pf, server_ms
                       ) -> np.ndarray:
    """Frames per second each of camera, drone compute (its work, and the camera periods it lets
    pass idle or replaced per frame), uplink and server allows (BOTTLENECKS order)."""
    mbps = cond.bandwidth_mbps if usable else 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.stack([np.full_like(device_ms, cond.frame_rate_hz),
                         np.minimum(1e3 / device_ms, cond.frame_rate_hz / periods_per_frame),
                         np.where(bytes_pf > 0, mbps * 1e6 / 8 / bytes_pf, np.inf),
                         np.where(server_ms > 0, 1e3 / server_ms, np.inf)])


def _mixture_percentile(values: np.ndarray, weights: np.ndarray, percentile: float) -> np.ndarray:
    """Per row of the last axis: the smallest value whose cumulative weight reaches q."""
    order = np.argsort(values, axis=-1)
    cum = np.cumsum(np.take_along_axis(weights, order, -1), axis=-1)
    idx = np.argmax(cum >= percentile / 100.0 * cum[..., -1:] - 1e-9, axis=-1)
    return np.take_along_axis(values, np.take_along_axis(order, idx[..., None], -1), -1)[..., 0]
