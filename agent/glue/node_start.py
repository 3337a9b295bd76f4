"""The first round trips of a glue job's run, begun before the run's heavy imports.

    begun = begin(api, task_id, attempt, STARTED_MESSAGE)   # returns at once
    ...                                   # import the runner, the env cache (~0.15 s on the node)
    task = begun.result()                 # the task's document; raises the mark's refusal

Two threads: the fenced `tasks.started` mark (the glue's "pending in ..." message goes; a
superseded claim is refused here, before anything starts) and the task's fetch. The future
resolves once both are done, so the mark lands before anything the run writes afterwards. The
waits on the server overlap the imports (they release the GIL). Light on purpose: it imports only
what `shipyard execute` has loaded already (agent/glue/node.py holds the run itself).
"""
from __future__ import annotations

import threading
from concurrent.futures import Future

from agent.execution import lifecycle
from agent.taskserver.port import TaskServer

STARTED_MESSAGE = "shipyard execute (glue job)"


def begin(api: TaskServer, task_id: str, attempt: int | None, message: str) -> Future[dict]:
    """Mark the claim started and fetch the task, both at once, on daemon threads."""
    future: Future[dict] = Future()
    threading.Thread(target=_run, args=(api, task_id, attempt, message, future), name="glue-node-start",
                     daemon=True).start()
    return future


def _run(api: TaskServer, task_id: str, attempt: int | None, message: str, future: Future[dict]) -> None:
    failed: list[BaseException] = []

    def mark() -> None:
        try:
            lifecycle.mark_started(api, task_id, message, attempt)
        except BaseException as exc:  # noqa: BLE001 - handed to whoever reads the future
            failed.append(exc)

    marker = threading.Thread(target=mark, name="glue-node-mark", daemon=True)
    marker.start()
    try:
        task = api.call("tasks.get_by_id", {"task": task_id})["task"]
    except BaseException as exc:  # noqa: BLE001 - handed to whoever reads the future
        failed.append(exc)
    marker.join()
    if failed:
        future.set_exception(failed[0])
    else:
        future.set_result(task)
