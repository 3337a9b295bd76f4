"""run_heading: the separator line a re-run's console starts with, numbered by run, not by claim."""
from __future__ import annotations

import pytest

from agent.execution.runner import run_heading

HISTORY = [
    {"attempt": 1, "run": 1, "max_runs": 3, "end": "infrastructure: lease of worker a expired"},
    {"attempt": 2, "run": 2, "max_runs": 3, "end": "stopped: Stopped by alice"},
    {"attempt": 3, "run": 1, "max_runs": 3, "end": "infrastructure: lease of worker b expired"},
    {"attempt": 4, "run": 2, "max_runs": 3},
]


@pytest.mark.parametrize(("history", "attempt", "expected"), [
    (HISTORY, None, None),
    (HISTORY, 1, None),
    (HISTORY, 2, "--- run 2 of 3 on worker w, after infrastructure: lease of worker a expired ---"),
    (HISTORY, 3, None),  # enqueued again by a person: a first run, no separator
    (HISTORY, 4, "--- run 2 of 3 on worker w, after infrastructure: lease of worker b expired ---"),
    ([{"attempt": 1}, {"attempt": 2, "max_runs": 3}], 2,  # entries written before runs were counted
     "--- run 2 of 3 on worker w, after run 1 ended without a report ---"),
    ([], 2, "--- run 2 on worker w, after run 1 ended without a report ---"),
])
def test_heading_counts_runs_since_the_last_enqueue(history, attempt, expected):
    assert run_heading({"shipyard_attempts": history}, attempt, "w") == expected


@pytest.mark.parametrize(("runtime", "end", "expected"), [
    ({}, "infrastructure: preempted: preempting: for bob's task t1",
     "--- run 2 of 3 on worker w, resumed after preemption, after infrastructure: preempted: preempting: "
     "for bob's task t1 ---"),
    ({"preemptions": 2}, "preempted: preempting: for bob's task t1",
     "--- run 2 of 3 on worker w, resumed after preemption 2, after preempted: preempting: for bob's task t1 ---"),
    ({"preemptions": 1}, None, "--- run 2 of 3 on worker w, resumed after preemption 1, after run 1 ended "
                               "without a report ---"),
    ({"preemptions": 1}, "infrastructure: lease of worker a expired",   # preempted once, but not last time
     "--- run 2 of 3 on worker w, after infrastructure: lease of worker a expired ---"),
])
def test_heading_says_a_run_resumes_after_preemption(runtime, end, expected):
    history = [{"attempt": 1, "run": 1, "max_runs": 3, **({"end": end} if end else {})},
               {"attempt": 2, "run": 2, "max_runs": 3}]
    assert run_heading({"shipyard_attempts": history, "runtime": runtime}, 2, "w") == expected
