"""The retry policy value and the retry budget (fake clock)."""
from __future__ import annotations

from tritonmix.request.retry import Outcome, RetryBudget


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_budget_allows_the_minimum_then_the_share() -> None:
    clock = FakeClock()
    budget = RetryBudget(0.2, min_retries=3, window_s=10.0, clock=clock)
    for _ in range(10):
        budget.record_request()
    assert [budget.try_acquire() for _ in range(4)] == [True, True, True, False]
    for _ in range(40):  # 50 requests: 0.2 x 50 = 10 retries
        budget.record_request()
    granted = sum(budget.try_acquire() for _ in range(20))
    assert granted == 7  # 10 in all, 3 already taken
    clock.now += 25.0  # the window has passed: the minimum again
    assert budget.try_acquire()


def test_only_attempts_that_reached_a_server_count_as_extra_load() -> None:
    assert not Outcome.NOT_SENT.reached_server
    assert Outcome.MAYBE_RAN.reached_server and Outcome.UNAVAILABLE.reached_server


def test_the_budget_counts_what_it_granted_and_refused() -> None:
    clock = FakeClock()
    budget = RetryBudget(0.0, min_retries=2, window_s=10.0, clock=clock)
    answers = [budget.try_acquire() for _ in range(5)]
    assert answers == [True, True, False, False, False]
    assert (budget.granted, budget.refused) == (2, 3) and budget.snapshot() == (0, 2)
