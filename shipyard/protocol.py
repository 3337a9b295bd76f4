"""The protocol's words, named once: what the server, agent, autoscaler and scheduler say on the wire.

    TaskStatus      a task's status, the reference server's enum
    FINAL           statuses after which a task no longer runs
    ACTIVE          statuses of a task that waits in a queue or runs
    TRANSITIONS     the status machine (reference: apiserver/bll/task/utils.py)
    can_transition  whether a status change is allowed (force skips the check)
    TaskType        a task's type, the reference server's enum
    SystemTag       system tags with a meaning: `development`, `archived`, `hidden`, `default`
                    (queues) and Shipyard's `shipyard:no-retry` and `shipyard:non-preemptible`
    Subcode         `meta.result_subcode` of an error envelope, as the server raises and the agent reads them
    OutcomeKind     the machine-readable head of the `status_reason` the agent writes (`user_error: ...`)
    RETRYABLE       outcome kinds that hand a leased task back to its queue instead of failing it
    LeaseOutcome    what the server did with a task its holder let go (`tasks.release`, `workers.reconcile`)
    STOP_REQUEST    the `status_message` that asks a running task's agent to stop it (`tasks.stop`)
    START_RUN       Shipyard's `tasks.start_run`: a leased claim marked started and its run's key minted, one call
    CLAIM_COUNT     Shipyard's `count` on `queues.get_next_task`: up to that many claims in one call, in `CLAIMS`
    SET_MESSAGES    Shipyard's `tasks.set_messages`: status messages of leased claims, compare-and-set, many per call
    RENEW_LEASES    Shipyard's `tasks.renew_leases`: the leases of many claims renewed in one call
    PREEMPT_REQUEST the `status_message` head that asks a running task's agent to preempt it
    WORKER_PREPARED the worker report's field {task id: PrepareState} (prepare while queued)
    PrepareState    where a queued task's environment stands on a worker: building, ready, failed

Each word is a `str` enum (`Subcode` an `int` enum): a member *is* its wire word, so it equals
the plain string a client sends or the database returns ("queued" == TaskStatus.QUEUED, same hash),
and `str()`, f-strings, `json`, orjson and SQL parameters all carry the plain value. A document
that orjson writes with a member as a *key* needs `OPT_NON_STR_KEYS` (the server's `jsonutil` sets it).

Standard library only, so an in-memory server on the agent's side uses the status machine
without importing `server/`.
"""
from __future__ import annotations

import enum
from collections.abc import Mapping


class _Word(str, enum.Enum):
    """A wire word: prints as its value (a plain `(str, Enum)` prints as `Class.NAME`)."""

    def __str__(self) -> str:
        return str(self.value)


class TaskStatus(_Word):
    CREATED = "created"
    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    STOPPED = "stopped"
    PUBLISHED = "published"
    PUBLISHING = "publishing"
    CLOSED = "closed"
    FAILED = "failed"
    COMPLETED = "completed"
    UNKNOWN = "unknown"


FINAL: frozenset[TaskStatus] = frozenset({
    TaskStatus.STOPPED, TaskStatus.PUBLISHED, TaskStatus.CLOSED, TaskStatus.FAILED, TaskStatus.COMPLETED})
ACTIVE: tuple[TaskStatus, ...] = (TaskStatus.QUEUED, TaskStatus.IN_PROGRESS)

_S = TaskStatus
TRANSITIONS: Mapping[str, frozenset[TaskStatus]] = {
    _S.CREATED: frozenset({_S.QUEUED, _S.IN_PROGRESS}),
    _S.QUEUED: frozenset({_S.CREATED, _S.IN_PROGRESS, _S.STOPPED}),
    _S.IN_PROGRESS: frozenset({_S.STOPPED, _S.FAILED, _S.CREATED, _S.COMPLETED}),
    _S.STOPPED: frozenset({_S.CLOSED, _S.CREATED, _S.FAILED, _S.QUEUED, _S.IN_PROGRESS, _S.PUBLISHED,
                           _S.PUBLISHING, _S.COMPLETED}),
    _S.CLOSED: frozenset({_S.CREATED, _S.FAILED, _S.PUBLISHED, _S.PUBLISHING, _S.STOPPED}),
    _S.FAILED: frozenset({_S.CREATED, _S.STOPPED, _S.PUBLISHED, _S.QUEUED}),
    _S.PUBLISHING: frozenset({_S.PUBLISHED}),
    _S.PUBLISHED: frozenset(),
    _S.COMPLETED: frozenset({_S.PUBLISHED, _S.IN_PROGRESS, _S.CREATED}),
    _S.UNKNOWN: frozenset(TaskStatus),
}
del _S


def can_transition(current: str, new: str, *, force: bool = False) -> bool:
    """Same-status changes are allowed (the SDK calls tasks.started again on a running task)."""
    if force or current == new:
        return True
    return new in TRANSITIONS.get(current, frozenset())


STOP_REQUEST = "stopping"  # clients look for it in status_message while the status stays in_progress
START_RUN = "tasks.start_run"
"""A Shipyard extension endpoint (advertised as `start` under `task_keys` in server.info): `tasks.started`
for a leased claim (`attempt` required, fenced) and `auth.create_credentials role=task label=<task id>`
in one call and one transaction, for a caller that may mint task keys (admin, agent). The Slurm and
Kubernetes glue hand a task over with it; against a server without it they make the two calls.
With `runs` ([{"task", "attempt"}, ...], advertised as `start_many` under `task_keys`) it starts
several claims in one call and one transaction, answering {"runs": [one answer per claim, or its
`error`]}: a claim that is no longer the caller's fails alone."""
START_RUNS = "runs"
CLAIM_COUNT = "count"
"""A Shipyard extension field of `queues.get_next_task` (advertised as `claim_many` in server.info):
pop up to `count` entries (at most `MAX_CLAIM_COUNT`) in one transaction, each with its lease, and
answer {CLAIMS: [one claim per entry, each shaped as the single answer plus its `queue`]} - an empty
list when none came before `wait_s` ended. Without the field the answer is the reference one."""
CLAIMS = "claims"
MAX_CLAIM_COUNT = 100
SET_MESSAGES = "tasks.set_messages"
"""A Shipyard extension endpoint (advertised as `status_messages` in server.info): {"tasks": [{"task",
"attempt", "status_message", "expect"}, ...]} sets each task's status message in one transaction where
the task is in progress under that claim (`attempt`) and its message is still `expect` - so a stop
request ("stopping") or the node's own message written since is never overwritten. Answers
{"updated": [task ids]}; the others are left as they are. The cluster glue writes its pending
reasons with it, all of one watch in calls of at most `MAX_MESSAGES` items."""
MAX_MESSAGES = 1000
RENEW_LEASES = "tasks.renew_leases"
"""A Shipyard extension endpoint (advertised as `renew_many` under `leases` in server.info): {"tasks":
[{"task", "attempt"}, ...], "lease_s"} renews each claim's lease in one transaction, as
`tasks.renew_lease` renews one, and answers {"renewed": [task ids], "stale": [task ids whose claim
was superseded or holds no lease any more]}; a task that does not exist is in neither. The cluster
glue renews the leases of all its jobs with it, one call per watch."""
MAX_RENEWALS = 1000
PREEMPT_REQUEST = "preempting"
"""status_message "preempting: for <user>'s task <id>" (status stays in_progress): the server asks the
agent to checkpoint-signal the task, wait the queue's grace, stop it and hand it back with outcome
`preempted`; the server then puts it first in its queue ("preempted by <user>'s task")."""


class TaskType(_Word):

    TRAINING = "training"
    TESTING = "testing"
    INFERENCE = "inference"
    DATA_PROCESSING = "data_processing"
    APPLICATION = "application"
    MONITOR = "monitor"
    CONTROLLER = "controller"
    OPTIMIZER = "optimizer"
    SERVICE = "service"
    QC = "qc"
    CUSTOM = "custom"


class SystemTag(_Word):
    DEVELOPMENT = "development"   # set by Task.init, removed on enqueue and clone
    ARCHIVED = "archived"         # tasks.archive / models.archive_many; removed on clone
    HIDDEN = "hidden"             # left out of listings unless search_hidden
    DEFAULT = "default"           # the default queue
    NO_RETRY = "shipyard:no-retry"  # a lost agent fails the task instead of re-queueing it
    NON_PREEMPTIBLE = "shipyard:non-preemptible"  # never preempted, so never run on borrowed GPUs


class Subcode(enum.IntEnum):
    """Numbers as in the reference catalogue (apiserver/apierrors/errors.conf) where Shipyard
    raises the same error; the ones marked `shipyard` are Shipyard's own numbering (the reference
    either has no such error or files it under another number; kept as clients already see them)."""

    NONE = 0
    NOT_SUPPORTED = 1               # 400: an endpoint Shipyard declines (server/rpc/compat.py)
    INVALID_ID = 10
    MISSING_REQUIRED_FIELDS = 11
    VALIDATION_ERROR = 12
    NO_CREDENTIALS = 20             # 401
    BAD_CREDENTIALS = 21            # 401
    INVALID_CREDENTIALS = 22        # 401
    INVALID_TOKEN = 30              # 401
    TOKEN_EXPIRED = 31              # 401, shipyard
    INVALID_TASK_ID = 101
    INVALID_TASK_STATUS = 110
    FAILED_CHANGING_TASK_STATUS = 121
    TASK_CANNOT_BE_DELETED = 123
    EVENTS_NOT_ADDED = 131
    STALE_CLAIM = 150               # shipyard: a leased claim was superseded (server/services/leases.py)
    INVALID_MODEL_ID = 201
    MODEL_IN_USE = 205
    MODEL_CREATING_TASK_EXISTS = 206
    INVALID_PROJECT_ID = 401
    PROJECT_HAS_TASKS = 402
    PROJECT_HAS_MODELS = 405
    PROJECT_HAS_DATASETS = 406
    INVALID_PROJECT_NAME = 407
    CANNOT_UPDATE_PROJECT_LOCATION = 408
    PROJECT_PATH_EXCEEDS_MAX = 409
    PROJECT_SAME_LOCATION = 410
    PROJECT_UNDER_ITSELF = 411
    PROJECT_MERGED_INTO_CHILD = 412
    PROJECT_HAS_PIPELINES = 413
    PROJECT_NAME_TAKEN = 801        # the reference's expected_unique_data
    INVALID_QUEUE_ID = 701
    QUEUE_NAME_TAKEN = 702          # shipyard
    QUEUE_NOT_EMPTY = 703           # shipyard
    TASK_ALREADY_QUEUED = 704       # shipyard
    TASK_NOT_QUEUED = 705           # shipyard
    NO_DEFAULT_QUEUE = 707
    WORKER_NOT_REGISTERED = 1004
    WORKER_STATS_NOT_FOUND = 1005
    INVALID_SCROLL_ID = 1104

    def __str__(self) -> str:
        return str(self.value)


class OutcomeKind(_Word):
    DONE = "done"                       # the task exited 0
    USER_ERROR = "user_error"           # the task's own code failed
    WORKSPACE = "workspace"             # the repository could not be checked out
    REQUIREMENTS = "requirements"       # the requirements could not be installed
    SETUP_SCRIPT = "setup_script"       # the container's setup script failed
    IMAGE = "image"                     # the container image cannot run the task
    INFRASTRUCTURE = "infrastructure"   # the machine, network or server failed
    ABORTED = "aborted"                 # stopped, reset or deleted from outside
    TIMED_OUT = "timed_out"             # ran past its maximum run time
    AGENT_SHUTDOWN = "agent_shutdown"   # the agent was stopped
    LEASE_LOST = "lease_lost"           # another agent owns the task now
    PREEMPTED = "preempted"             # stopped to give its borrowed GPUs back; requeued first in line


RETRYABLE: frozenset[OutcomeKind] = frozenset({
    OutcomeKind.INFRASTRUCTURE, OutcomeKind.AGENT_SHUTDOWN, OutcomeKind.LEASE_LOST, OutcomeKind.PREEMPTED})


class LeaseOutcome(_Word):
    REQUEUED = "requeued"
    FAILED = "failed"
    COMPLETED = "completed"   # the process had already exited 0 (tasks.record_exit)


WORKER_PREPARED = "prepared"
"""`workers.status_report` / `workers.get_all`: {task id: PrepareState} for the queued tasks whose
environment the worker builds or built ahead of pickup (agent/daemon/prepare.py)."""


class PrepareState(_Word):
    BUILDING = "building"
    READY = "ready"     # in this worker's environment cache: the pickup links it, no build
    FAILED = "failed"   # not retried ahead; the pickup builds it again and reports a failure normally
