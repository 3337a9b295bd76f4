"""The status machine as a table of cases (pure)."""
import pytest

from shipyard.protocol import can_transition

CASES = [
    ("created", "queued", False, True), ("created", "in_progress", False, True),
    ("created", "completed", False, False), ("queued", "in_progress", False, True),
    ("queued", "created", False, True), ("queued", "completed", False, False),
    ("in_progress", "completed", False, True), ("in_progress", "failed", False, True),
    ("in_progress", "queued", False, False), ("in_progress", "in_progress", False, True),
    ("completed", "queued", False, False), ("completed", "queued", True, True),
    ("completed", "in_progress", False, True), ("failed", "queued", False, True),
    ("stopped", "queued", False, True), ("published", "created", False, False),
    ("published", "created", True, True), ("publishing", "published", False, True),
    ("closed", "stopped", False, True), ("failed", "completed", False, False),
]


@pytest.mark.parametrize("current,new,force,allowed", CASES)
def test_transitions(current, new, force, allowed):
    assert can_transition(current, new, force=force) is allowed
