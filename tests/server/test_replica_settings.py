"""Pure pieces of the replica setup: secret rotation, the secrets file, which errors are a 503."""
from __future__ import annotations

import pytest
from sqlalchemy.exc import OperationalError

from server.auth.keys import Identity, TokenSigner
from server.config import load_server_config
from server.errors import APIError
from server.notify import Notifier
from server.storage.store import database_unavailable
from shipyard.errors import ConfigError
from tests.helpers import run_async

ME = Identity(user="K", user_name="k", role="user")


def test_a_rotation_accepts_old_tokens_and_issues_new_ones():
    old, new = TokenSigner("old-secret".ljust(32, "x")), TokenSigner("new-secret".ljust(32, "x"), previous=["old-secret".ljust(32, "x")])
    assert new.verify(old.issue(ME)).user == "K"           # step 1 on every replica: both accepted
    after = TokenSigner("new-secret".ljust(32, "x"))                       # step 2: the old one dropped
    with pytest.raises(APIError, match="Invalid token"):
        after.verify(old.issue(ME))
    with pytest.raises(APIError, match="Invalid token"):
        TokenSigner("other".ljust(32, "x"), previous=["old-secret".ljust(32, "x")]).verify(TokenSigner("third".ljust(32, "x")).issue(ME))


def test_an_expired_token_says_so_whichever_secret_signed_it():
    old = TokenSigner("old-secret".ljust(32, "x"))
    with pytest.raises(APIError, match="Token expired"):
        TokenSigner("new-secret".ljust(32, "x"), previous=["old-secret".ljust(32, "x")]).verify(old.issue(ME, ttl_s=-10))


def test_token_secrets_from_env_and_file(tmp_path):
    a, b, c = ("a" * 32, "b" * 32, "c" * 40)
    config = load_server_config(env={"SHIPYARD_TOKEN_SECRET": a, "SHIPYARD_TOKEN_SECRET_PREVIOUS": f"{b}, {c}"})
    assert config.token_secrets == [a, b, c]
    with pytest.raises(ConfigError, match="at least 32"):
        load_server_config(env={"SHIPYARD_TOKEN_SECRET": "short"})
    assert load_server_config(env={}).token_secrets == []   # the database's own secret
    path = tmp_path / "secrets"
    path.write_text(f"{a}\n\n{b}\n")
    assert load_server_config(env={"SHIPYARD_TOKEN_SECRET_FILE": str(path)}).token_secrets == [a, b]
    path.write_text("\n")
    with pytest.raises(ConfigError, match="token_secret_file"):
        load_server_config(env={"SHIPYARD_TOKEN_SECRET_FILE": str(path)})
    with pytest.raises(ConfigError, match="db_pool_size"):
        load_server_config(env={"SHIPYARD_DB_POOL_SIZE": "many"})


def test_only_an_unreachable_postgres_is_a_503():
    import psycopg

    def wrapped(orig: Exception) -> OperationalError:
        return OperationalError("SELECT 1", {}, orig)

    assert database_unavailable(wrapped(psycopg.OperationalError("connection refused")))
    assert not database_unavailable(wrapped(psycopg.errors.QueryCanceled("statement timeout")))
    assert not database_unavailable(OperationalError("SELECT 1", {}, Exception("database is locked")))
    assert not database_unavailable(ValueError("no"))


def test_waiters_recheck_slowly_only_while_notifications_arrive():
    notifier = Notifier(recheck_s=1.0, listening_recheck_s=5.0)
    assert notifier.recheck_s == 1.0
    notifier.set_listening(True)
    assert notifier.recheck_s == 5.0
    notifier.set_listening(False)
    assert notifier.recheck_s == 1.0


def test_a_notification_between_the_pop_and_the_wait_is_not_lost():
    """The pop ran, then an enqueue's notification came before the waiter was there to hear it:
    the wait returns at once (True) instead of sleeping through the entry."""
    import asyncio

    async def scenario() -> list[bool]:
        notifier = Notifier(recheck_s=0.05)
        notifier.bind(asyncio.get_running_loop())
        quiet = notifier.mark(["q1"])
        nothing = await notifier.wait(["q1"], 0.05, since=quiet)      # nothing came: the time passes
        mark = notifier.mark(["q1", "q2"])
        notifier.notify("q3")                                        # another queue: still waits
        other = await notifier.wait(["q1", "q2"], 0.05, since=mark)
        notifier.notify("q2")                                        # one of them: at once
        heard = await asyncio.wait_for(notifier.wait(["q1", "q2"], 30, since=mark), 1)
        mark = notifier.mark(["q1"])
        notifier.wake_all()                                          # a reconnect: at once too
        reconnect = await asyncio.wait_for(notifier.wait(["q1"], 30, since=mark), 1)
        return [nothing, other, heard, reconnect]

    assert run_async(scenario) == [False, False, True, True]


@pytest.mark.parametrize("between, after, listening, known", [
    ([], [], True, True),                      # found empty, nothing since: known empty
    ([], [], False, False),                    # not listening: an enqueue might not be heard
    (["notify q1"], [], True, False),          # enqueued while the pop ran: not empty
    ([], ["notify q1"], True, False),          # enqueued after: not empty
    ([], ["notify q9"], True, True),           # another queue's enqueue changes nothing
    ([], ["wake_all"], True, False),           # a reconnect: notifications may have been missed
    ([], ["forget q1"], True, False),          # the periodic check found entries after all
    ([], ["close"], True, False),              # stopping: pop as before
])
def test_a_queue_is_known_empty_until_anything_may_have_reached_it(between, after, listening, known):
    notifier = Notifier()
    notifier.set_listening(listening)

    def do(steps: list[str]) -> None:
        acts = {"notify": lambda q: notifier.notify(q), "wake_all": lambda q: notifier.wake_all(),
                "forget": lambda q: notifier.forget_empty([q]), "close": lambda q: notifier.close()}
        for step in steps:
            verb, _, queue = step.partition(" ")
            acts[verb](queue)

    counts = notifier.counts(["q1"])
    do(between)
    notifier.found_empty(["q1"], counts, {"q1"})
    do(after)
    assert notifier.known_empty(["q1"]) is known


def test_several_queues_are_known_empty_only_when_each_is():
    notifier = Notifier()
    notifier.set_listening(True)
    counts = notifier.counts(["q1", "q2"])
    notifier.found_empty(["q1", "q2"], counts, {"q1"})  # q2 had entries (held by other pops)
    assert notifier.known_empty(["q1"])
    assert not notifier.known_empty(["q1", "q2"])
    notifier.found_empty(["q2"], notifier.counts(["q2"]), {"q2"})
    assert notifier.known_empty(["q1", "q2"])
    assert sorted(notifier.empty_queues()) == ["q1", "q2"]


@pytest.mark.parametrize("wait_s, draw, waits", [
    (0.0, 0.5, 0.0),
    (1.0, 0.99, 1.0),     # short waits (tests, scripts) end when asked
    (9.9, 0.5, 9.9),
    (10.0, 0.0, 10.0),    # from 10 s: somewhere in the last tenth
    (10.0, 0.5, 9.5),
    (30.0, 0.999, 27.003),
    (60.0, 0.5, 57.0),
])
def test_a_long_wait_ends_in_its_last_tenth_at_random(wait_s, draw, waits):
    from server.services.queues.claim import spread_wait

    assert spread_wait(wait_s, draw) == pytest.approx(waits)
