"""On-time accuracy and command staleness: what a drone's controller actually acted on.

A frame's *command* is its own latest answer published within the deadline (the final one when
it came in time, else the provisional one); a frame with no answer of its own by then is steered
by whatever answer was in force at its deadline (another frame's, or none: wrong). On-time
accuracy is the share of camera frames whose command was right. Staleness is the age of the
frame behind the answer in force when each camera frame arrives.

Pure (numbers in, numbers out): the benchmark and the flight summary score the same way.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Hashable, Iterable, NamedTuple


class CameraFrame(NamedTuple):
    key: Hashable                  # what answers name it by (e.g. the image stamp)
    t: float                       # when it was taken (s, the answers' clock)
    label: bool                    # the truth the answer is scored against


class Answered(NamedTuple):
    key: Hashable                  # the frame it answers
    t: float                       # when it was published (s)
    prediction: bool


@dataclass(frozen=True)
class CommandScore:
    on_time_accuracy: float        # NaN with no frame
    staleness_p95_ms: float        # NaN before any answer
    own_on_time_share: float       # frames with an answer of their own in time


def command_ages_ms(frames: Iterable[tuple[Hashable, float]], answers: Iterable[tuple[Hashable, float]]) -> list[float]:
    """At each camera frame ``(key, t)``: the age of the frame behind the latest answer ``(key, t)``
    published by then (frames before any answer: none)."""
    frames = sorted(frames, key=lambda f: f[1])
    answers = sorted(answers, key=lambda a: a[1])
    sent = dict(frames)
    times = [a[1] for a in answers]
    ages = []
    for _, t in frames:
        i = bisect.bisect_right(times, t) - 1
        if i >= 0 and answers[i][0] in sent:
            ages.append((t - sent[answers[i][0]]) * 1e3)
    return ages


def score_commands(frames: Iterable[CameraFrame], answers: Iterable[Answered], deadline_s: float) -> CommandScore:
    import numpy as np

    frames = sorted(frames, key=lambda f: f.t)
    answers = sorted(answers, key=lambda a: a.t)
    sent = {f.key: f.t for f in frames}
    times = [a.t for a in answers]
    own: dict[Hashable, Answered] = {}
    for a in answers:                 # in publishing order: the latest in time wins
        if a.key in sent and a.t <= sent[a.key] + deadline_s:
            own[a.key] = a
    right, owned = [], 0
    for f in frames:
        command = own.get(f.key)
        owned += command is not None
        if command is None:           # steered by the answer in force at its deadline
            i = bisect.bisect_right(times, f.t + deadline_s) - 1
            command = answers[i] if i >= 0 else None
        right.append(command is not None and command.prediction == f.label)
    ages = command_ages_ms([(f.key, f.t) for f in frames], [(a.key, a.t) for a in answers])
    n = len(frames)
    return CommandScore(sum(right) / n if n else float("nan"),
                        float(np.percentile(ages, 95)) if ages else float("nan"), owned / n if n else float("nan"))
