"""Account and session logic behind AuthService, free of gRPC.

Registration, sign-in, token refresh and sign-out, each in one database
transaction; password hashing runs in the server's blocking pool.
"""

from __future__ import annotations

import logging
import math
import unicodedata
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from email_validator import EmailNotValidError, validate_email

from qrsys_grpc import errors
from qrsys_grpc.auth import passwords
from qrsys_grpc.auth.caller import Caller
from qrsys_grpc.auth.throttle import ThrottlePolicy, account_key, address_key
from qrsys_grpc.auth.tokens import TokenIssuer, new_refresh_token, refresh_token_digest
from qrsys_grpc.blocking import BlockingRunner
from qrsys_grpc.repository.database import Database
from qrsys_grpc.repository.live_sessions import LiveSessions
from qrsys_grpc.repository.login_failures import LoginFailureRepository
from qrsys_grpc.repository.sessions import SessionRepository
from qrsys_grpc.repository.users import UserRecord, UserRepository
from qrsys_grpc.text import check_no_controls

logger = logging.getLogger(__name__)

MAX_EMAIL_LENGTH = 254
MAX_DISPLAY_NAME_LENGTH = 100
MAX_TOKEN_LENGTH = 4096


@dataclass(frozen=True)
class IssuedTokens:
    """A token pair as issued to a client."""

    access_token: str
    refresh_token: str
    access_expire_time: datetime
    refresh_expire_time: datetime


@dataclass(frozen=True)
class SignedIn:
    """An account with the tokens of its new session."""

    user: UserRecord
    tokens: IssuedTokens


def normalize_email(email: str, *, field: str = "email") -> str:
    """Return the normalised form of an email address.

    Raises:
        errors.InvalidArgument: not a syntactically valid address.
    """
    if not email:
        raise errors.InvalidArgument.field(field, "is required")
    if len(email) > MAX_EMAIL_LENGTH:
        raise errors.InvalidArgument.field(
            field, f"must be at most {MAX_EMAIL_LENGTH} characters"
        )
    check_no_controls(email, field)
    # NFKC first, so that a fullwidth or other compatibility spelling is the
    # same address as its plain form, not a second account that looks alike;
    # strict, so that the local part's 64-octet bound holds too.
    email = unicodedata.normalize("NFKC", email)
    try:
        return validate_email(email, check_deliverability=False, strict=True).normalized
    except EmailNotValidError as exc:
        raise errors.InvalidArgument.field(
            field, f"is not a valid email address: {exc}"
        ) from exc


def check_display_name(name: str) -> str:
    """Return ``name`` unchanged if it is an acceptable display name.

    Raises:
        errors.InvalidArgument: too long or containing control characters.
    """
    if len(name) > MAX_DISPLAY_NAME_LENGTH:
        raise errors.InvalidArgument.field(
            "display_name", f"must be at most {MAX_DISPLAY_NAME_LENGTH} characters"
        )
    check_no_controls(name, "display_name")
    return name


class Accounts:
    """Registers users, signs them in and out, and guards their sessions."""

    def __init__(
        self,
        database: Database,
        blocking: BlockingRunner,
        tokens: TokenIssuer,
        throttle: ThrottlePolicy | None = None,
        refresh_reuse_grace: timedelta = timedelta(0),
        live_sessions: LiveSessions | None = None,
    ) -> None:
        self._db = database
        self._live = (
            live_sessions
            if live_sessions is not None
            else LiveSessions(database, max_entries=0)
        )
        self._blocking = blocking
        self._tokens = tokens
        self._throttle = throttle or ThrottlePolicy()
        self._refresh_grace = refresh_reuse_grace

    async def _start_session(
        self, sessions: SessionRepository, user_id: uuid.UUID
    ) -> IssuedTokens:
        refresh, digest = new_refresh_token()
        refresh_expires = self._tokens.refresh_expire_time()
        session = await sessions.create(
            user_id=user_id, refresh_token_hash=digest, expire_time=refresh_expires
        )
        access, access_expires = self._tokens.issue_access(user_id, session.id)
        return IssuedTokens(access, refresh, access_expires, refresh_expires)

    async def register(self, email: str, password: str, display_name: str) -> SignedIn:
        """Create an account and its first session.

        Raises:
            errors.InvalidArgument: a field is malformed.
            errors.AlreadyExists: the email is registered already.
        """
        email = normalize_email(email)
        password = passwords.normalize(password, field="password")
        display_name = check_display_name(display_name)

        password_hash = await self._blocking.run(passwords.hash_password, password)
        async with self._db.transaction() as conn:
            user = await UserRepository(conn).create(
                email=email, display_name=display_name, password_hash=password_hash
            )
            tokens = await self._start_session(SessionRepository(conn), user.id)

        logger.info("registered user %s", user.id)
        return SignedIn(user, tokens)

    async def _check_password(
        self, email: str, password: str
    ) -> tuple[UserRecord, str]:
        """Return the account and the normalised password if both match.

        Raises:
            errors.InvalidArgument: the email or password is empty.
            errors.InvalidCredentials: either is wrong (one answer for both).
        """
        if not email:
            raise errors.InvalidArgument.field("email", "is required")
        if not password:
            raise errors.InvalidArgument.field("password", "is required")
        password = passwords.normalize_lenient(password)
        try:
            email = normalize_email(email)
        except errors.InvalidArgument:
            user = None
        else:
            async with self._db.read() as conn:
                user = await UserRepository(conn).find_by_email(email)
        if user is None:
            await self._blocking.run(passwords.verify_unknown_user, password)
            raise errors.InvalidCredentials()
        if not await self._blocking.run(
            passwords.verify_password, user.password_hash, password
        ):
            raise errors.InvalidCredentials()
        return user, password

    async def login(self, email: str, password: str, peer: str = "") -> SignedIn:
        """Start a session for the account with this email and password.

        Failed attempts are counted per account and per client address;
        past the free allowance each key is blocked for a doubling delay.

        Raises:
            errors.InvalidArgument: the email or password is empty.
            errors.TooManyAttempts: the account or address is blocked.
            errors.InvalidCredentials: wrong email or password.
        """
        if not email:
            raise errors.InvalidArgument.field("email", "is required")
        try:
            canonical = normalize_email(email)
        except errors.InvalidArgument:
            canonical = email
        account = account_key(canonical)
        address = address_key(peer)
        keys = [account] if address is None else [account, address]
        async with self._db.read() as conn:
            blocked = await LoginFailureRepository(conn).seconds_blocked(keys)
        if blocked is not None:
            raise errors.TooManyAttempts(
                f"too many failed sign-ins; try again in {math.ceil(blocked)} s",
                retry_after_seconds=blocked,
            )

        try:
            user, password = await self._check_password(email, password)
        except errors.InvalidCredentials:
            await self._record_failure(account, address)
            raise
        new_hash = None
        if passwords.needs_rehash(user.password_hash):
            new_hash = await self._blocking.run(passwords.hash_password, password)
        async with self._db.transaction() as conn:
            if new_hash is not None:
                await UserRepository(conn).set_password_hash(
                    user.id, new_hash, replacing=user.password_hash
                )
            await LoginFailureRepository(conn).clear(account)
            tokens = await self._start_session(SessionRepository(conn), user.id)

        logger.info("user %s signed in", user.id)
        return SignedIn(user, tokens)

    async def _record_failure(self, account: str, address: str | None) -> None:
        """Count a wrong password against the account and the address."""
        policy = self._throttle
        async with self._db.transaction() as conn:
            failures = LoginFailureRepository(conn)
            count = await failures.record_failure(
                account,
                window=policy.window,
                delay_for=lambda n: policy.delay(n, policy.free_failures_per_account),
            )
            if address is not None:
                await failures.record_failure(
                    address,
                    window=policy.window,
                    delay_for=lambda n: policy.delay(
                        n, policy.free_failures_per_address
                    ),
                )
        if count > policy.free_failures_per_account:
            logger.warning("sign-ins throttled after %d failures", count)

    async def refresh(self, refresh_token: str) -> IssuedTokens:
        """Rotate a refresh token: the old one stops working.

        A refresh token that was already rotated ends its session, since
        someone else may hold the newer one; within the grace window after
        its rotation it is accepted once more instead, for a client that lost
        the answer.

        Raises:
            errors.InvalidArgument: the token is empty.
            errors.Unauthenticated: the token is unknown, used, or expired.
        """
        if not refresh_token:
            raise errors.InvalidArgument.field("refresh_token", "is required")
        if len(refresh_token) > MAX_TOKEN_LENGTH:
            raise errors.Unauthenticated(
                "the refresh token is invalid", reason="TOKEN_INVALID"
            )

        old_digest = refresh_token_digest(refresh_token)
        new_token, new_digest = new_refresh_token()
        refresh_expires = self._tokens.refresh_expire_time()
        async with self._db.transaction() as conn:
            sessions = SessionRepository(conn)
            session = await sessions.rotate(
                old_hash=old_digest,
                new_hash=new_digest,
                expire_time=refresh_expires,
                grace=self._refresh_grace,
            )
            reused = None
            if session is None:
                reused = await sessions.revoke_by_used_token(old_digest)
        if reused is not None:
            await self._live.ended_here([reused])
            logger.warning("a rotated refresh token was replayed; session ended")
        if session is None:
            raise errors.Unauthenticated(
                "the refresh token is invalid, used or expired", reason="TOKEN_INVALID"
            )

        access, access_expires = self._tokens.issue_access(session.user_id, session.id)
        return IssuedTokens(access, new_token, access_expires, refresh_expires)

    async def authenticate(self, access_token: str) -> Caller:
        """Verify an access token and that its session is live.

        Raises:
            errors.Unauthenticated: the token is bad or its session ended.
        """
        if len(access_token) > MAX_TOKEN_LENGTH:
            raise errors.Unauthenticated(
                "the access token is invalid", reason="TOKEN_INVALID"
            )
        claims = self._tokens.verify_access(access_token)
        caller = Caller(claims.user_id, claims.session_id)
        await self.ensure_live(caller)
        return caller

    async def logout(self, caller: Caller) -> None:
        """End the caller's session."""
        async with self._db.transaction() as conn:
            ended = await SessionRepository(conn).revoke(caller.session_id)
        await self._live.ended_here([caller.session_id] if ended else [])
        logger.info("user %s signed out", caller.user_id)

    async def logout_all(self, caller: Caller) -> int:
        """End every session of the caller; return how many were live."""
        async with self._db.transaction() as conn:
            ended = await SessionRepository(conn).revoke_all(caller.user_id)
        await self._live.ended_here(ended)
        logger.info("user %s signed out of %d sessions", caller.user_id, len(ended))
        return len(ended)

    async def current_user(self, caller: Caller) -> UserRecord:
        """The caller's account.

        Raises:
            errors.Unauthenticated: the account was deleted meanwhile.
        """
        async with self._db.read() as conn:
            user = await UserRepository(conn).get(caller.user_id)
        if user is None:
            raise errors.Unauthenticated(
                "the account no longer exists", reason="SESSION_REVOKED"
            )
        return user

    async def _confirm_password(self, user: UserRecord, password: str) -> None:
        """Check a signed-in user's password before a sensitive change.

        Failures count against the account as failed logins do, so a stolen
        access token cannot be used to guess the password.

        Raises:
            errors.TooManyAttempts: the account is blocked.
            errors.InvalidCredentials: the password is wrong.
        """
        account = account_key(user.email)
        async with self._db.read() as conn:
            blocked = await LoginFailureRepository(conn).seconds_blocked([account])
        if blocked is not None:
            raise errors.TooManyAttempts(
                f"too many wrong passwords; try again in {math.ceil(blocked)} s",
                retry_after_seconds=blocked,
            )
        if not await self._blocking.run(
            passwords.verify_password,
            user.password_hash,
            passwords.normalize_lenient(password),
        ):
            await self._record_failure(account, None)
            raise errors.InvalidCredentials()

    async def change_password(
        self, caller: Caller, current_password: str, new_password: str
    ) -> IssuedTokens:
        """Replace the password, end every other session, and return fresh
        tokens for this one.

        Raises:
            errors.InvalidArgument: the new password breaks the rules.
            errors.TooManyAttempts: too many wrong passwords lately.
            errors.InvalidCredentials: the current password is wrong, or was
                changed by another call meanwhile.
        """
        new_password = passwords.normalize(new_password, field="new_password")
        user = await self.current_user(caller)
        await self._confirm_password(user, current_password)
        new_hash = await self._blocking.run(passwords.hash_password, new_password)

        refresh, digest = new_refresh_token()
        refresh_expires = self._tokens.refresh_expire_time()
        async with self._db.transaction() as conn:
            replaced = await UserRepository(conn).set_password_hash(
                user.id, new_hash, replacing=user.password_hash
            )
            if not replaced:
                raise errors.InvalidCredentials()
            sessions = SessionRepository(conn)
            ended = await sessions.revoke_all(user.id, keep=caller.session_id)
            await sessions.replace_refresh_token(
                caller.session_id, new_hash=digest, expire_time=refresh_expires
            )
        await self._live.ended_here(ended)
        access, access_expires = self._tokens.issue_access(user.id, caller.session_id)

        logger.info("user %s changed their password", user.id)
        return IssuedTokens(access, refresh, access_expires, refresh_expires)

    async def delete_account(self, caller: Caller, password: str) -> None:
        """Remove the account with its sessions and codes, in one transaction.

        Raises:
            errors.TooManyAttempts: too many wrong passwords lately.
            errors.InvalidCredentials: the password is wrong.
        """
        user = await self.current_user(caller)
        await self._confirm_password(user, password)
        async with self._db.transaction() as conn:
            ended = await SessionRepository(conn).revoke_all(user.id)
            await UserRepository(conn).delete(user.id)
        await self._live.ended_here(ended)
        logger.info("user %s deleted their account", user.id)

    async def ensure_live(self, caller: Caller) -> None:
        """Check, again, that the caller's session has not ended.

        Raises:
            errors.Unauthenticated: it has.
        """
        if self._live.is_live(caller.session_id, caller.user_id):
            return
        mark = self._live.mark()
        async with self._db.read() as conn:
            expire_time = await SessionRepository(conn).live_until(
                caller.session_id, caller.user_id
            )
        if expire_time is None:
            raise errors.Unauthenticated(
                "the session has ended; sign in again", reason="SESSION_REVOKED"
            )
        self._live.remember(caller.session_id, caller.user_id, expire_time, mark)

    async def introspect(self, token: str) -> Caller | None:
        """Return the caller a live access token stands for, else ``None``."""
        try:
            return await self.authenticate(token)
        except errors.Unauthenticated:
            return None

    def access_expire_time(self, token: str) -> datetime:
        """The expiry of an access token already verified."""
        return self._tokens.verify_access(token).expire_time
