"""Credentials and tokens.

Access keys live in the database with their secret hashed (PBKDF2-SHA256). `auth.login`
exchanges a key pair (HTTP Basic) for an HS256 JWT carrying what ClearML clients read
(`api_version`, `server_version`, `feature_set`, `exp`) and the identity the server uses.
Every other call must carry a token whose signature and expiry check out.

Checking a secret costs a PBKDF2 hash (~30 ms of CPU): the server does it on a small thread pool
of its own (`KeyStore.verify_off_loop`), so guessing cannot stall the event loop, and an unknown
access key is checked against a dummy hash, so it answers as slowly, and with the same message,
as a wrong secret.

Every key has a role (`ROLES`); they differ only in what keys they may manage:

    admin   everything; mints keys of any role, extends and revokes any key
    agent   what a user does, plus: mints `task` keys, extends and revokes the keys it minted
    user    experiments, queues, files, workers; revokes only itself
    task    what a run needs (report, upload, read, clone, enqueue); revokes only itself

A minted key records the key that minted it (`minted_by`), which is what lets an agent manage
the keys of its own runs and nobody else's.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Sequence

import jwt
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from server import errors
from server.replicas import publish_key
from server.storage import tables as t
from server.storage.store import Store
from shipyard import __version__, clock
from shipyard.protocol import Subcode

API_VERSION = "2.31"
SERVER_VERSION = "2.0.0"
COMPANY = "shipyard"
DEFAULT_TOKEN_TTL_S = 30 * 24 * 3600
_PBKDF2_ROUNDS = 120_000
_HASH_THREADS = 2
BAD_PAIR = "Invalid credentials: unknown access key or wrong secret"

ADMIN, AGENT, USER, TASK = "admin", "agent", "user", "task"
ROLES = (ADMIN, AGENT, USER, TASK)
_MINTABLE = {ADMIN: frozenset(ROLES), AGENT: frozenset({TASK})}


def may_mint(caller_role: str, role: str) -> bool:
    """Can a key of `caller_role` create a key of `role`? Only admins and agents mint at all."""
    return role in _MINTABLE.get(caller_role, frozenset())


def may_revoke(caller: Identity, key: dict) -> bool:
    """Can `caller` revoke `key` (a `KeyStore.get` row)? Admins any key, everyone their own
    key, an agent the keys it minted. (Extending is for admins and the minting agent only.)"""
    if caller.role == ADMIN or key["access_key"] == caller.user:
        return True
    return caller.role == AGENT and key.get("minted_by") == caller.user


@dataclass(frozen=True)
class Identity:
    user: str
    user_name: str
    company: str = COMPANY
    role: str = "admin"

    def as_claim(self) -> dict:
        return {"user": self.user, "user_name": self.user_name, "company": self.company,
                "company_name": COMPANY, "role": self.role}


ANONYMOUS = Identity(user="", user_name="")


def hash_secret(secret: str, salt: bytes | None = None, *, generated: bool = False) -> str:
    """The stored form of a secret. A person's secret (configured, typed) is stretched with
    PBKDF2; a secret the server generated itself (288 random bits) is hashed once with a salt:
    stretching adds nothing against a secret that cannot be guessed, and minting a run's key on
    every claim must not cost 30 ms of CPU."""
    salt = salt or secrets.token_bytes(16)
    if generated:
        return f"sha256$1${salt.hex()}${hashlib.sha256(salt + secret.encode()).hexdigest()}"
    digest = hashlib.pbkdf2_hmac("sha256", secret.encode(), salt, _PBKDF2_ROUNDS)
    return f"pbkdf2${_PBKDF2_ROUNDS}${salt.hex()}${digest.hex()}"


def is_stretched(stored: str) -> bool:
    return stored.startswith("pbkdf2$")


def verify_secret(secret: str, stored: str) -> bool:
    try:
        scheme, rounds, salt_hex, digest_hex = stored.split("$")
        salt = bytes.fromhex(salt_hex)
    except ValueError:
        return False
    if scheme == "sha256":
        return hmac.compare_digest(hashlib.sha256(salt + secret.encode()).hexdigest(), digest_hex)
    digest = hashlib.pbkdf2_hmac("sha256", secret.encode(), salt, int(rounds))
    return hmac.compare_digest(digest.hex(), digest_hex)


def generate_key_pair() -> tuple[str, str]:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    access = "".join(secrets.choice(alphabet) for _ in range(24))
    return access, secrets.token_urlsafe(36)


class KeyStore:
    """Access keys: create, seed, list, revoke, verify (verification results cached per process)."""

    def __init__(self, store: Store):
        self.store = store
        self._verified: dict[tuple[str, str, str], str] = {}
        self._dummy_hash: str | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False

    def create(self, access_key: str | None = None, secret_key: str | None = None, *,
               name: str = "", role: str = ADMIN, expires: float | None = None,
               instance: str | None = None, minted_by: str | None = None) -> tuple[str, str]:
        """A new key pair; `expires` (epoch seconds) makes it short-lived, `instance` labels its
        machine or run, `minted_by` is the access key that asked for it through the API. Never
        overwrites a key: a revoked one stays revoked (see `seed`)."""
        with self.store.tx() as conn:
            pair = self.create_in(conn, access_key, secret_key, name=name, role=role, expires=expires,
                                  instance=instance, minted_by=minted_by)
        return pair

    def create_in(self, conn: Any, access_key: str | None = None, secret_key: str | None = None, *,
                  name: str = "", role: str = ADMIN, expires: float | None = None,
                  instance: str | None = None, minted_by: str | None = None) -> tuple[str, str]:
        """`create` inside the caller's transaction `conn` (`tasks.start_run`: the task's status
        change and its run's key commit together, or neither does)."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
        generated = secret_key is None
        gen_access, gen_secret = generate_key_pair()
        access_key, secret_key = access_key or gen_access, secret_key or gen_secret
        stored = hash_secret(secret_key, generated=generated)
        conn.execute(insert(t.credentials).values(
            access_key=access_key, secret_hash=stored, name=name, role=role,
            created=clock.now(), revoked=False, expires=expires, instance=instance,
            minted_by=minted_by))
        self._verified.clear()
        return access_key, secret_key

    def seed(self, access_key: str, secret_key: str, *, name: str) -> str:
        """Make sure the configured admin pair works: 'created' (new key), 'kept' (it already
        matched), 'rotated' (an active key got the configured secret; its role is kept), or
        'revoked' / 'expired' (left alone: a dead key is never brought back)."""
        row = self._row(access_key)
        if row is None:
            self.create(access_key, secret_key, name=name)
            return "created"
        if row.revoked:
            return "revoked"
        if not _unexpired(row.expires):
            return "expired"
        if verify_secret(secret_key, row.secret_hash):
            return "kept"
        with self.store.tx() as conn:
            conn.execute(update(t.credentials).where(t.credentials.c.access_key == access_key)
                         .values(secret_hash=hash_secret(secret_key)))
        self._verified.clear()
        return "rotated"

    def list(self) -> list[dict]:
        with self.store.tx() as conn:
            rows = conn.execute(select(t.credentials.c.access_key, t.credentials.c.name,
                                       t.credentials.c.role, t.credentials.c.created,
                                       t.credentials.c.revoked, t.credentials.c.expires,
                                       t.credentials.c.instance, t.credentials.c.minted_by)).all()
        return [dict(row._mapping) for row in rows]

    def get(self, access_key: str) -> dict | None:
        """One key's row without its secret hash, or None."""
        with self.store.tx() as conn:
            row = conn.execute(select(t.credentials).where(t.credentials.c.access_key == access_key)).first()
        if row is None:
            return None
        return {k: v for k, v in row._mapping.items() if k != "secret_hash"}

    def revoke(self, access_key: str) -> bool:
        """Revoke the key; every replica drops its cached check of it when this commits."""
        with self.store.tx() as conn:
            count = conn.execute(update(t.credentials).where(t.credentials.c.access_key == access_key)
                                 .values(revoked=True)).rowcount
            publish_key(conn, access_key)
        self._verified.clear()
        return count > 0

    def relabel(self, access_key: str, name: str) -> bool:
        """Give a live key a new label (its user's display name); False for an unknown or revoked key."""
        with self.store.tx() as conn:
            count = conn.execute(update(t.credentials).where(t.credentials.c.access_key == access_key)
                                 .where(t.credentials.c.revoked.is_(False)).values(name=name)).rowcount
        return count > 0

    def extend(self, access_key: str, expires: float) -> bool:
        """Move the expiry of a live short-lived key; False for an unknown, revoked, expired or
        permanent key (an expired key stays dead; a permanent one never starts expiring here)."""
        with self.store.tx() as conn:
            count = conn.execute(update(t.credentials).where(t.credentials.c.access_key == access_key)
                                 .where(t.credentials.c.revoked.is_(False))
                                 .where(t.credentials.c.expires > clock.now())
                                 .values(expires=expires)).rowcount
            publish_key(conn, access_key)
        return count > 0

    def active_until(self, access_key: str) -> tuple[bool, float | None]:
        """(active now, expiry or None): unknown, revoked and expired keys are inactive."""
        with self.store.tx() as conn:
            row = conn.execute(select(t.credentials.c.revoked, t.credentials.c.expires)
                               .where(t.credentials.c.access_key == access_key)).first()
        return _activity(row)

    def active_many(self, access_keys: Sequence[str], chunk: int = 1000) -> dict[str, tuple[bool, float | None]]:
        """`active_until` of many keys, a statement per `chunk` of them (an unknown key: inactive)."""
        out: dict[str, tuple[bool, float | None]] = {key: (False, None) for key in access_keys}
        with self.store.tx() as conn:
            for start in range(0, len(access_keys), chunk):
                part = list(access_keys[start:start + chunk])
                for row in conn.execute(select(t.credentials.c.access_key, t.credentials.c.revoked,
                                               t.credentials.c.expires)
                                        .where(t.credentials.c.access_key.in_(part))):
                    out[row.access_key] = _activity(row)
        return out

    def is_active(self, access_key: str) -> bool:
        return self.active_until(access_key)[0]

    def count(self) -> int:
        return len(self.list())

    async def verify_off_loop(self, access_key: str, secret_key: str) -> Identity:
        """Check a key pair: the row is read every time (revocation is immediate); the PBKDF2
        comparison runs on the key store's hashing threads and is skipped for a pair that
        already matched this row's hash. Unknown key and wrong secret: one message, one cost."""
        row = await self._row_off_loop(access_key)
        matched = self._remembered(access_key, secret_key, row)
        if not matched:
            loop = asyncio.get_running_loop()
            matched = await loop.run_in_executor(self._hasher(), self._check, secret_key, row)
        return self._identity(access_key, secret_key, row, matched)

    async def _row_off_loop(self, access_key: str) -> Any:
        """`_row` from the event loop: on PostgreSQL (no gate) on the hashing threads, so the loop
        does not wait through its round trips (a thousand agents signing in at once stalled every
        other request); on SQLite here, one local read."""
        if self.store.gate is not None:
            return self._row(access_key)
        return await asyncio.get_running_loop().run_in_executor(self._hasher(), self._row, access_key)

    def _row(self, access_key: str) -> Any:
        """The key's row, read every time (a revocation takes effect at once)."""
        with self.store.tx() as conn:
            return conn.execute(select(t.credentials).where(t.credentials.c.access_key == access_key)).first()

    def _remembered(self, access_key: str, secret_key: str, row: Any) -> bool:
        """True for a pair that already matched this row's hash (the slow comparison is skipped)."""
        return row is not None and self._cache_key(access_key, secret_key, row) in self._verified

    def _check(self, secret_key: str, row: Any) -> bool:
        """The slow comparison; an unknown key costs the same, against a hash nobody's secret matches."""
        if row is None:
            return verify_secret(secret_key, self._dummy())
        if verify_secret(secret_key, row.secret_hash):
            return True
        if not is_stretched(row.secret_hash):
            verify_secret(secret_key, self._dummy())  # a wrong secret costs what an unknown key does
        return False

    def _identity(self, access_key: str, secret_key: str, row: Any, matched: bool) -> Identity:
        if row is None or not matched:
            raise errors.unauthorized(BAD_PAIR, Subcode.BAD_CREDENTIALS)
        if row.revoked:  # said only to whoever proved they hold the secret
            raise errors.unauthorized("Invalid credentials: the access key was revoked", Subcode.BAD_CREDENTIALS)
        if not _unexpired(row.expires):
            raise errors.unauthorized("Invalid credentials: the access key expired", Subcode.BAD_CREDENTIALS)
        self._verified[self._cache_key(access_key, secret_key, row)] = row.role
        return Identity(user=access_key, user_name=access_key, role=row.role)

    @staticmethod
    def _cache_key(access_key: str, secret_key: str, row: Any) -> tuple[str, str, str]:
        return access_key, hashlib.sha256(secret_key.encode()).hexdigest(), row.secret_hash

    def _dummy(self) -> str:
        if self._dummy_hash is None:  # made on first use, on a hashing thread
            self._dummy_hash = hash_secret(secrets.token_urlsafe(24))
        return self._dummy_hash

    def close(self) -> None:
        """Stop the hashing threads (server shutdown, before the store closes): a sign-in already
        on them finishes; a later one is the retryable 503 of a stopping server."""
        self._closed = True
        if self._executor is not None:
            self._executor.shutdown(wait=False)

    def _hasher(self) -> ThreadPoolExecutor:
        if self._closed:
            raise errors.shutting_down()
        if self._executor is None:
            self._executor = ThreadPoolExecutor(_HASH_THREADS, thread_name_prefix="pbkdf2")
        return self._executor


def _activity(row: Any) -> tuple[bool, float | None]:
    """(active now, expiry or None) of a credentials row with `revoked` and `expires` (None: unknown)."""
    if row is None or row.revoked:
        return False, None
    return _unexpired(row.expires), row.expires


def _unexpired(expires: float | None) -> bool:
    return expires is None or clock.now() < expires


class TokenSigner:
    _CACHE_MAX = 4096

    def __init__(self, secret: str, ttl_s: int = DEFAULT_TOKEN_TTL_S, previous: Sequence[str] = ()):
        """Tokens are issued with `secret`; those signed with a `previous` one are still accepted
        (a rotation across replicas: every replica accepts both before any issues with the new)."""
        self.secret = secret
        self.previous = tuple(p for p in previous if p and p != secret)
        self.ttl_s = ttl_s
        # token -> (identity, exp): a signature checked once stays valid, so later calls with
        # the same token only compare the expiry (signature checks were ~10% of a request).
        self._verified: dict[str, tuple[Identity, float]] = {}

    def issue(self, identity: Identity, ttl_s: int | None = None) -> str:
        now = int(clock.now())
        claims = {
            "identity": identity.as_claim(), "iat": now, "exp": now + int(ttl_s or self.ttl_s),
            "env": "shipyard", "api_version": API_VERSION, "server_version": SERVER_VERSION,
            "server_build": f"shipyard-{__version__}", "feature_set": "basic",
            "session_id": secrets.token_hex(8),
        }
        return jwt.encode(claims, self.secret, algorithm="HS256")

    def verify(self, token: str) -> Identity:
        cached = self._verified.get(token)
        if cached is not None:
            if clock.now() < cached[1]:
                return cached[0]
            del self._verified[token]
        identity, exp = self._verify_signature(token)
        if len(self._verified) >= self._CACHE_MAX:
            self._verified.clear()
        self._verified[token] = (identity, exp)
        return identity

    def _verify_signature(self, token: str) -> tuple[Identity, float]:
        claims = self._decode(token)
        ident = claims.get("identity") or {}
        identity = Identity(user=str(ident.get("user", "")), user_name=str(ident.get("user_name", "")),
                            role=str(ident.get("role", "user")))
        return identity, float(claims["exp"])


    def _decode(self, token: str) -> dict:
        for secret in (self.secret, *self.previous):
            try:
                return jwt.decode(token, secret, algorithms=["HS256"], options={"require": ["exp", "identity"]})
            except jwt.ExpiredSignatureError:
                raise errors.unauthorized("Token expired", Subcode.TOKEN_EXPIRED) from None
            except jwt.InvalidSignatureError as exc:
                failure: jwt.InvalidTokenError = exc  # perhaps signed with the next secret
            except jwt.InvalidTokenError as exc:
                raise errors.unauthorized(f"Invalid token: {exc}", Subcode.INVALID_TOKEN) from None
        raise errors.unauthorized(f"Invalid token: {failure}", Subcode.INVALID_TOKEN)


def parse_basic(header: str) -> tuple[str, str]:
    try:
        raw = base64.b64decode(header.split(" ", 1)[1].strip()).decode()
        access, secret = raw.split(":", 1)
    except (IndexError, ValueError, UnicodeDecodeError):
        raise errors.unauthorized("Malformed Basic authorization header", Subcode.INVALID_CREDENTIALS) from None
    return access, secret


def load_token_secret(store: Store) -> str:
    """The signing secret, generated once per database and kept in it (so every replica on one
    PostgreSQL shares it). Replicas starting together: one insert wins, the others read it."""
    for _ in range(3):
        try:
            with store.tx() as conn:
                secret = store.meta_get(conn, "token_secret")
                if secret is None:
                    secret = secrets.token_hex(32)
                    store.meta_set(conn, "token_secret", secret)
            return secret
        except IntegrityError:
            continue  # another replica inserted it first
    raise RuntimeError("could not read or store the token secret")
