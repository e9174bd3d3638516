"""Automatic first allocations (api.md §9.2): pure functions over recorded measurements.

A category in an automatic mode runs its tasks first with a *first allocation* computed from
what its earlier tasks used; a task that goes over it is retried with the category maximum
(``categories.py`` decides when). This module only computes, one resource at a time: it gets
the peaks seen for that resource (``values``), optionally the wall time of each task
(``times``, weights: a long task matters more than a short one), and ``top``, the value a task
gets on its retry (the category maximum; the largest value seen when there is none). Values
above ``top`` are counted as ``top``.

``predict(mode, values, times, top)`` returns a *prediction*: ``(value, probability)`` pairs.
Deterministic modes give one pair; ``choose(prediction, rng)`` draws from it.

What each mode computes, with ``F`` the set of tasks that fit a candidate allocation ``a``
(peak ≤ a) and ``G`` the others:

* **max**: the largest value seen.
* **min waste**: the observed value ``a`` minimising the expected waste
  ``Σ_F (a − v)·t + Σ_G (a + top − v)·t``: a task that fits wastes what it did not use; one
  that does not wastes its whole first attempt and then ``top − v`` on its retry (we assume
  it was stopped at the end of its run: the pessimistic case).
* **max throughput**: the observed value ``a`` maximising tasks finished per unit of time
  on a worker of size ``top``. First attempts run ``⌊top/a⌋`` at a time, retries one at a
  time, so the time per task is proportional to ``T/⌊top/a⌋ + T_G`` (``T`` the total wall
  time, ``T_G`` that of the tasks that do not fit); ``a`` minimises it. Unlike min waste,
  this prefers allocations that divide the worker evenly.
* **bucketing** (greedy, exhaustive): the sorted values are cut into contiguous buckets;
  a bucket predicts its largest value, with probability its share of the tasks (by count).
  A partition's cost is the expected waste of that random choice (the min-waste waste of
  each bucket's value, weighted by the bucket's probability). *Greedy* starts from one
  bucket and keeps making the single cut that lowers the cost most, until no cut helps (at
  most ``MAX_BUCKETS``); cuts are tried at up to ``GREEDY_CUTS`` evenly spread places.
  *Exhaustive* tries every partition whose cuts fall among ``EXHAUSTIVE_CUTS`` evenly spread
  places and keeps the cheapest.
* **det greedy / det exhaustive**: the same buckets; the prediction is the value of the most
  likely bucket (ties: the larger value) instead of a random draw.
* **quantized bucketing**: fixed buckets bounded by the quartiles of the values; each predicts
  its upper quartile, with probability its share of the tasks.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import Sequence

from .. import cvine

MAX_BUCKETS = 10
GREEDY_CUTS = 200
EXHAUSTIVE_CUTS = 10
QUANTILES = (0.25, 0.5, 0.75, 1.0)

Prediction = list[tuple[float, float]]  # (value, probability)


class _Waste:
    """Expected waste of allocating ``a`` to every task, in O(log n) from prefix sums."""

    def __init__(self, values: Sequence[float], times: Sequence[float] | None, top: float):
        weights = [1.0] * len(values) if times is None else times
        pairs = sorted(zip((min(v, top) for v in values), weights, strict=True))
        self.values = [v for v, _ in pairs]
        self.t_prefix = [0.0, *itertools.accumulate(max(t, 0.0) for _, t in pairs)]
        self.vt_prefix = [0.0, *itertools.accumulate(v * max(t, 0.0) for v, t in pairs)]
        self.top = top
        if self.t_prefix[-1] <= 0:  # no usable times: every task weighs the same
            self.t_prefix = [float(i) for i in range(len(pairs) + 1)]
            self.vt_prefix = [0.0, *itertools.accumulate(self.values)]

    def split(self, a: float) -> tuple[float, float, float, float]:
        """(time of tasks that fit, their value×time, same for the others)."""
        k = bisect.bisect_right(self.values, a)
        t_le, vt_le = self.t_prefix[k], self.vt_prefix[k]
        return t_le, vt_le, self.t_prefix[-1] - t_le, self.vt_prefix[-1] - vt_le

    def __call__(self, a: float) -> float:
        t_le, vt_le, t_gt, vt_gt = self.split(a)
        return a * (t_le + t_gt) - vt_le + self.top * t_gt - vt_gt


def _candidates(w: _Waste) -> list[float]:
    return sorted(set(w.values) | {w.top})


def max_seen(values: Sequence[float]) -> float:
    return max(values)


def min_waste(values: Sequence[float], times: Sequence[float] | None, top: float) -> float:
    w = _Waste(values, times, top)
    return min(_candidates(w), key=w)  # min keeps the first (smallest) of equal wastes


def max_throughput(values: Sequence[float], times: Sequence[float] | None, top: float) -> float:
    w = _Waste(values, times, top)

    def time_per_task(a: float) -> float:
        t_le, _, t_gt, _ = w.split(a)
        return (t_le + t_gt) / max(1, math.floor(top / a)) + t_gt if a > 0 else math.inf
    return min(_candidates(w), key=time_per_task)


def _spread(cuts: list[int], most: int) -> list[int]:
    """At most ``most`` of ``cuts``, evenly spread."""
    if len(cuts) <= most:
        return cuts
    step = len(cuts) / most
    return sorted({cuts[int(i * step)] for i in range(most)})


def _cut_places(values: list[float]) -> list[int]:
    """Indexes ``i`` where a bucket may end before ``values[i]`` (between distinct values)."""
    return [i for i in range(1, len(values)) if values[i - 1] < values[i]]


def buckets_cost(w: _Waste, ends: Sequence[int]) -> float:
    """Expected waste of the random choice among buckets ending (exclusive) at ``ends``."""
    n, cost, start = len(w.values), 0.0, 0
    for end in ends:
        cost += (end - start) / n * w(w.values[end - 1])
        start = end
    return cost


def greedy_buckets(w: _Waste) -> list[int]:
    """Bucket ends found by repeatedly making the single most useful cut."""
    n = len(w.values)
    ends = [n]
    places = _spread(_cut_places(w.values), GREEDY_CUTS)
    while len(ends) < MAX_BUCKETS:
        best = None
        for cut in places:
            i = bisect.bisect_left(ends, cut)
            if ends[i] == cut:
                continue
            start, end = (ends[i - 1] if i else 0), ends[i]
            # splitting [start, end) at cut: the right part keeps the bucket's value
            delta = (cut - start) / n * (w(w.values[cut - 1]) - w(w.values[end - 1]))
            if delta < -1e-9 and (best is None or delta < best[0]):
                best = (delta, cut)
        if best is None:
            break
        bisect.insort(ends, best[1])
    return ends


def exhaustive_buckets(w: _Waste) -> list[int]:
    """The cheapest bucket ends among all subsets of a few evenly spread cuts."""
    n = len(w.values)
    places = _spread(_cut_places(w.values), EXHAUSTIVE_CUTS)
    waste = {end: w(w.values[end - 1]) for end in (*places, n)}
    best_cost, best = waste[n], [n]
    for k in range(1, min(len(places), MAX_BUCKETS - 1) + 1):
        for cuts in itertools.combinations(places, k):
            cost, start = 0.0, 0
            for end in (*cuts, n):
                cost += (end - start) * waste[end]
                start = end
            if cost / n < best_cost - 1e-9:
                best_cost, best = cost / n, [*cuts, n]
    return best


def _from_ends(values: list[float], ends: Sequence[int]) -> Prediction:
    n, start, out = len(values), 0, []
    for end in ends:
        out.append((values[end - 1], (end - start) / n))
        start = end
    return out


def quantized(values: Sequence[float]) -> Prediction:
    ordered = sorted(values)
    n = len(ordered)
    ends = sorted({max(1, math.ceil(q * n)) for q in QUANTILES})
    ends = [e for i, e in enumerate(ends) if i == len(ends) - 1 or ordered[e - 1] < ordered[e]]
    return _from_ends(ordered, ends)


def _most_likely(prediction: Prediction) -> Prediction:
    value, _ = max(prediction, key=lambda vp: (vp[1], vp[0]))
    return [(value, 1.0)]


def predict(mode: int, values: Sequence[float], times: Sequence[float] | None = None,
            top: float | None = None) -> Prediction:
    """The first allocation of one resource under ``mode`` (a ``VINE_ALLOCATION_MODE_*``)
    from the peaks ``values`` (and wall ``times``); empty without values or in fixed mode."""
    if not values or mode == cvine.VINE_ALLOCATION_MODE_FIXED:
        return []
    if top is None or top <= 0:
        top = max(values)
    M = cvine
    if mode == M.VINE_ALLOCATION_MODE_MAX:
        return [(min(max_seen(values), top), 1.0)]
    if mode == M.VINE_ALLOCATION_MODE_MIN_WASTE:
        return [(min_waste(values, times, top), 1.0)]
    if mode == M.VINE_ALLOCATION_MODE_MAX_THROUGHPUT:
        return [(max_throughput(values, times, top), 1.0)]
    if mode == M.VINE_ALLOCATION_MODE_QUANTIZED_BUCKETING:
        return quantized([min(v, top) for v in values])
    w = _Waste(values, times, top)
    if mode in (M.VINE_ALLOCATION_MODE_GREEDY_BUCKETING,
                M.VINE_ALLOCATION_MODE_DET_GREEDY_BUCKETING):
        prediction = _from_ends(w.values, greedy_buckets(w))
    else:
        prediction = _from_ends(w.values, exhaustive_buckets(w))
    if mode in (M.VINE_ALLOCATION_MODE_DET_GREEDY_BUCKETING,
                M.VINE_ALLOCATION_MODE_DET_EXHAUSTIVE_BUCKETING):
        return _most_likely(prediction)
    return prediction


def choose(prediction: Prediction, rng: random.Random) -> float | None:
    """One value drawn from ``prediction`` (None if it is empty)."""
    if not prediction:
        return None
    if len(prediction) == 1:
        return prediction[0][0]
    x, acc = rng.random(), 0.0
    for value, probability in prediction:
        acc += probability
        if x < acc:
            return value
    return prediction[-1][0]
