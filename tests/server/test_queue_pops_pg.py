"""Concurrent pops of one queue on PostgreSQL do not wait for each other (two replicas, or two
handler threads): each takes its own entry (SKIP LOCKED) and its queue-metrics sample skips a row
another open transaction is writing, rather than waiting for that transaction to commit."""
from __future__ import annotations

import threading

import pytest

from server.services.queues import crud
from server.storage import tables as t
from server.storage.store import Store
from tests import pg

pytestmark = pytest.mark.skipif(not pg.available(), reason="PostgreSQL binaries not installed (.ci/run installs them)")


@pytest.fixture(scope="module")
def store(pg_cluster):
    opened = Store(pg_cluster.new_database("pops"))
    yield opened
    opened.close()


def test_a_pop_does_not_wait_for_another_open_pop_of_the_same_queue(store):
    with store.tx() as conn:
        for i in range(3):
            crud.add_entry(conn, "q1", f"task-{i}")
    other: dict = {}
    with store.tx() as first:
        assert crud.pop(first, "q1")[0] == "task-0"
        first.run_pending()  # its sample, due at COMMIT, taken now: it holds this second's sample row

        def second_pop() -> None:
            with store.tx() as conn:
                conn.exec_driver_sql("SET LOCAL lock_timeout = '5s'")  # waiting fails the test, not hangs it
                other["popped"] = crud.pop(conn, "q1")

        thread = threading.Thread(target=second_pop)
        thread.start()
        thread.join(10)
        assert other.get("popped") and other["popped"][0] == "task-1"  # done while the first is still open
    with store.tx() as conn:
        samples = conn.execute(t.queue_metrics.select().where(t.queue_metrics.c.queue == "q1")).all()
    assert len(samples) >= 2  # the second pop wrote a sample of its own beside the held one


def test_a_pooled_connection_the_database_ended_is_replaced_not_used(store):
    """No ping at every checkout (a round trip of every call): a connection the database ended
    (its socket reads as readable while pooled) is pinged, fails it and is replaced before the
    call uses it (server/storage/liveness.py)."""
    import psycopg

    with store.tx() as conn:
        assert conn.exec_driver_sql("SELECT 1").scalar() == 1
    with psycopg.connect(store.url, autocommit=True) as admin:
        # with a timeout the call returns once each backend has exited (its socket closed):
        # without one it only signals them, and a checkout could come before the close
        admin.execute("SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity "
                      "WHERE datname = current_database() AND pid <> pg_backend_pid()")
    for _ in range(3):
        with store.tx() as conn:
            assert conn.exec_driver_sql("SELECT 1").scalar() == 1


def test_a_pop_that_found_nothing_while_the_queue_has_entries_pops_again(store, monkeypatch):
    """A pop's statement sees only the entries committed before it began and skips the ones other
    pops hold: another agent's pop can hold this caller's entry while the entry that agent
    enqueued came too late to be seen, so the statement finds nothing with an entry there (seen
    once in tests/server/test_postgres.py's concurrent pairs). The pop then asks again."""
    from server.services.queues import entries
    from server.storage.prepared import Prepared, Rows

    class MissesOnce(Prepared):
        missed = 0

        def run(self, *args, **kwargs):
            if not MissesOnce.missed:
                MissesOnce.missed += 1
                return Rows([(None, None, None, True, True)], 1)  # what the racing statement finds
            return super().run(*args, **kwargs)

    with store.tx() as conn:
        crud.add_entry(conn, "q-late", "task-late")
    monkeypatch.setattr(entries, "_POP_STATUS", MissesOnce(entries._POP_STATUS.statement))
    with store.tx() as conn:
        assert crud.pop(conn, "q-late")[0] == "task-late"
        assert crud.pop(conn, "q-late") is None  # an empty queue is not asked again and again
    assert MissesOnce.missed == 1


def test_an_empty_pop_is_one_statement_and_still_knows_a_missing_queue(store, monkeypatch):
    """Every idle agent's long-poll pops an empty queue: the pop's one statement also says whether
    the queue exists and has entries, so the claim asks nothing more; a missing queue is still
    the invalid-id error."""
    from server.errors import APIError
    from server.services.queues import claim
    from server.storage.prepared import Prepared

    with store.tx() as conn:
        conn.execute(t.queues.insert().values(id="q-empty", name="q-empty", created=0.0, doc={}))
    statements: list = []
    real_run = Prepared.run

    def counting(self, *args, **kwargs):
        statements.append(self)
        return real_run(self, *args, **kwargs)

    monkeypatch.setattr(Prepared, "run", counting)

    class Ctx:
        pass

    ctx = Ctx()
    ctx.store = store
    monkeypatch.setattr(claim.fair, "quotas", lambda ctx, conn: {})
    assert claim._try_pop_many(ctx, ["q-empty"], claim._Ask()) == []
    assert len(statements) == 1
    with pytest.raises(APIError) as err:
        claim._try_pop_many(ctx, ["q-missing"], claim._Ask())
    assert "q-missing" in str(err.value)


def test_the_periodic_check_finds_entries_written_past_the_api_and_queues_gone(store, monkeypatch):
    """A queue long-polls take as empty stays so until notified; entries written in SQL (no
    notification) and a queue deleted are found by the periodic check, one statement, which wakes
    their waiters. An empty pop records what it found (Tx.empty)."""
    from types import SimpleNamespace

    from server.app import check_empty_queues
    from server.notify import Notifier
    from server.services.queues import claim

    with store.tx() as conn:
        for qid in ("k-quiet", "k-sql", "k-gone"):
            conn.execute(t.queues.insert().values(id=qid, name=qid, created=0.0, doc={}))
    notifier = Notifier()
    notifier.set_listening(True)
    monkeypatch.setattr(claim.fair, "quotas", lambda ctx, conn: {})
    ctx = SimpleNamespace(store=store)
    queues = ["k-quiet", "k-sql", "k-gone"]
    counts, empty = notifier.counts(queues), set()
    assert claim._try_pop_many(ctx, queues, claim._Ask(), empty) == []
    assert empty == set(queues)
    notifier.found_empty(queues, counts, empty)
    with store.tx() as conn:
        conn.execute(t.queue_entries.insert().values(queue="k-sql", task="by-hand", position=0.0, added=0.0))
        conn.execute(t.queues.delete().where(t.queues.c.id == "k-gone"))
    assert all(notifier.known_empty([q]) for q in queues)  # nothing told this process

    assert check_empty_queues(SimpleNamespace(notifier=notifier, store=store)) == 3
    assert [q for q in queues if notifier.known_empty([q])] == ["k-quiet"]
    assert notifier.mark(["k-sql"]) == 1 and notifier.mark(["k-gone"]) == 1  # their waiters were woken
