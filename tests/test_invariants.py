"""Pure logic of the ratelimiter invariants' latency evidence."""

from __future__ import annotations

import math

from operator_console.subjects.ratelimiter.observer import bucket_quantile


def test_quantile_of_the_window_between_two_scrapes() -> None:
    before = {0.01: 100.0, 0.1: 100.0, 0.25: 100.0, math.inf: 100.0}
    # Since then: 90 fast checks and 10 slow ones (between 100 and 250 ms).
    now = {0.01: 190.0, 0.1: 190.0, 0.25: 200.0, math.inf: 200.0}
    assert bucket_quantile(now, before, 0.5) == (0.01, 100)
    assert bucket_quantile(now, before, 0.99) == (0.25, 100)


def test_no_traffic_in_the_window_gives_no_figure() -> None:
    same = {0.01: 5.0, math.inf: 5.0}
    assert bucket_quantile(same, same, 0.99) == (None, 0)
    assert bucket_quantile({}, {}, 0.99) == (None, 0)


def test_first_scrape_counts_everything_since_the_node_started() -> None:
    now = {0.005: 10.0, 0.5: 10.0, math.inf: 11.0}
    assert bucket_quantile(now, {}, 0.99) == (math.inf, 11)
