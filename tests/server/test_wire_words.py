"""Each protocol word equals what the reference ClearML server and clients put on the wire
(reference: docs captured in CLEARML_API.md and apiserver/apierrors/errors.conf)."""
import json

import pytest

from shipyard.protocol import Subcode, SystemTag, TaskStatus, TaskType

WIRE = [
    (TaskStatus.CREATED, "created"), (TaskStatus.QUEUED, "queued"), (TaskStatus.IN_PROGRESS, "in_progress"),
    (TaskStatus.STOPPED, "stopped"), (TaskStatus.PUBLISHED, "published"), (TaskStatus.PUBLISHING, "publishing"),
    (TaskStatus.CLOSED, "closed"), (TaskStatus.FAILED, "failed"), (TaskStatus.COMPLETED, "completed"),
    (TaskStatus.UNKNOWN, "unknown"),
    (TaskType.TRAINING, "training"), (TaskType.TESTING, "testing"), (TaskType.INFERENCE, "inference"),
    (TaskType.DATA_PROCESSING, "data_processing"), (TaskType.APPLICATION, "application"),
    (TaskType.MONITOR, "monitor"), (TaskType.CONTROLLER, "controller"), (TaskType.OPTIMIZER, "optimizer"),
    (TaskType.SERVICE, "service"), (TaskType.QC, "qc"), (TaskType.CUSTOM, "custom"),
    (SystemTag.DEVELOPMENT, "development"), (SystemTag.ARCHIVED, "archived"), (SystemTag.HIDDEN, "hidden"),
    (SystemTag.DEFAULT, "default"),
    (Subcode.INVALID_ID, 10), (Subcode.MISSING_REQUIRED_FIELDS, 11), (Subcode.VALIDATION_ERROR, 12),
    (Subcode.NO_CREDENTIALS, 20), (Subcode.BAD_CREDENTIALS, 21), (Subcode.INVALID_CREDENTIALS, 22),
    (Subcode.INVALID_TOKEN, 30), (Subcode.INVALID_TASK_ID, 101), (Subcode.INVALID_TASK_STATUS, 110),
    (Subcode.FAILED_CHANGING_TASK_STATUS, 121), (Subcode.EVENTS_NOT_ADDED, 131), (Subcode.INVALID_MODEL_ID, 201),
    (Subcode.INVALID_PROJECT_ID, 401), (Subcode.INVALID_QUEUE_ID, 701), (Subcode.NO_DEFAULT_QUEUE, 707),
    (Subcode.WORKER_NOT_REGISTERED, 1004),
]


@pytest.mark.parametrize("word,wire", WIRE)
def test_word_is_the_wire_word(word, wire):
    assert word == wire and str(word) == str(wire) and f"{word}" == str(wire)
    assert json.dumps(word) == json.dumps(wire)


def test_every_status_and_type_is_in_the_table():
    named = {word for word, _ in WIRE}
    assert set(TaskStatus) <= named and set(TaskType) <= named
