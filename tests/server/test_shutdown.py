"""A stopping server and the long-polls it holds: answered at once, not cut off after the grace period."""
from __future__ import annotations

import signal
import threading
import time

from tests.helpers import start_server


def test_sigterm_answers_a_pending_long_poll_at_once(tmp_path):
    """Issue 20 #7: an agent's long-poll (up to 60 s) no longer holds a SIGTERM'd server for its
    shutdown grace period and then dies as a cancelled request with a traceback in the log; it is
    answered "no task" and the server exits cleanly."""
    server = start_server(tmp_path / "srv")
    api = server.api()
    queue = api.call("queues.get_default")["id"]
    answer: dict = {}

    def long_poll() -> None:
        answer["body"] = api.raw("queues.get_next_task", {"queue": queue, "wait_s": 30}, timeout=60).json()

    poller = threading.Thread(target=long_poll)
    poller.start()
    try:
        time.sleep(1.0)   # the request is inside its wait
        server.proc.send_signal(signal.SIGTERM)
        poller.join(30)
        assert server.proc.wait(30) == 0
    finally:
        server.stop()
    assert answer["body"]["meta"]["result_code"] == 200 and not answer["body"]["data"].get("entry")
    log = server.log_path.read_text()
    assert "graceful shutdown exceeded" not in log and "Traceback" not in log, log
