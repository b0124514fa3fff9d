"""AuthService handlers: protobuf in, protobuf out, logic in ``accounts``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from qrsys_grpc import errors
from qrsys_grpc.auth.accounts import Accounts, IssuedTokens
from qrsys_grpc.auth.caller import require_caller
from qrsys_grpc.repository.users import UserRecord
from qrsys_grpc.v1 import auth_pb2, auth_pb2_grpc

Context = grpc.aio.ServicerContext[Any, Any]


def timestamp(moment: datetime) -> Timestamp:
    """A protobuf Timestamp for an aware datetime."""
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def user_message(user: UserRecord) -> auth_pb2.User:
    """The public view of an account."""
    return auth_pb2.User(
        id=str(user.id),
        email=user.email,
        display_name=user.display_name,
        create_time=timestamp(user.create_time),
        update_time=timestamp(user.update_time),
    )


def token_pair(tokens: IssuedTokens) -> auth_pb2.TokenPair:
    """The wire form of an issued token pair."""
    return auth_pb2.TokenPair(
        access_token=tokens.access_token,
        refresh_token=tokens.refresh_token,
        token_type="Bearer",  # noqa: S106 - the scheme, not a secret
        access_token_expire_time=timestamp(tokens.access_expire_time),
        refresh_token_expire_time=timestamp(tokens.refresh_expire_time),
    )


class AuthServicer(auth_pb2_grpc.AuthServiceServicer):
    """Serves qrsys.v1.AuthService."""

    def __init__(self, accounts: Accounts) -> None:
        self._accounts = accounts

    async def Register(
        self, request: auth_pb2.RegisterRequest, context: Context
    ) -> auth_pb2.RegisterResponse:
        signed_in = await self._accounts.register(
            request.email, request.password, request.display_name
        )
        return auth_pb2.RegisterResponse(
            user=user_message(signed_in.user), tokens=token_pair(signed_in.tokens)
        )

    async def Login(
        self, request: auth_pb2.LoginRequest, context: Context
    ) -> auth_pb2.LoginResponse:
        signed_in = await self._accounts.login(
            request.email, request.password, context.peer() or ""
        )
        return auth_pb2.LoginResponse(
            user=user_message(signed_in.user), tokens=token_pair(signed_in.tokens)
        )

    async def RefreshToken(
        self, request: auth_pb2.RefreshTokenRequest, context: Context
    ) -> auth_pb2.RefreshTokenResponse:
        tokens = await self._accounts.refresh(request.refresh_token)
        return auth_pb2.RefreshTokenResponse(tokens=token_pair(tokens))

    async def Logout(
        self, request: auth_pb2.LogoutRequest, context: Context
    ) -> auth_pb2.LogoutResponse:
        await self._accounts.logout(require_caller())
        return auth_pb2.LogoutResponse()

    async def LogoutAll(
        self, request: auth_pb2.LogoutAllRequest, context: Context
    ) -> auth_pb2.LogoutAllResponse:
        count = await self._accounts.logout_all(require_caller())
        return auth_pb2.LogoutAllResponse(revoked_sessions=count)

    async def GetCurrentUser(
        self,
        request: auth_pb2.GetCurrentUserRequest,
        context: Context,
    ) -> auth_pb2.GetCurrentUserResponse:
        user = await self._accounts.current_user(require_caller())
        return auth_pb2.GetCurrentUserResponse(user=user_message(user))

    async def ChangePassword(
        self,
        request: auth_pb2.ChangePasswordRequest,
        context: Context,
    ) -> auth_pb2.ChangePasswordResponse:
        if not request.current_password:
            raise errors.InvalidArgument.field("current_password", "is required")
        tokens = await self._accounts.change_password(
            require_caller(), request.current_password, request.new_password
        )
        return auth_pb2.ChangePasswordResponse(tokens=token_pair(tokens))

    async def DeleteAccount(
        self,
        request: auth_pb2.DeleteAccountRequest,
        context: Context,
    ) -> auth_pb2.DeleteAccountResponse:
        if not request.password:
            raise errors.InvalidArgument.field("password", "is required")
        await self._accounts.delete_account(require_caller(), request.password)
        return auth_pb2.DeleteAccountResponse()

    async def IntrospectToken(
        self,
        request: auth_pb2.IntrospectTokenRequest,
        context: Context,
    ) -> auth_pb2.IntrospectTokenResponse:
        if not request.token:
            raise errors.InvalidArgument.field("token", "is required")
        caller = await self._accounts.introspect(request.token)
        if caller is None:
            return auth_pb2.IntrospectTokenResponse(active=False)
        return auth_pb2.IntrospectTokenResponse(
            active=True,
            user_id=str(caller.user_id),
            session_id=str(caller.session_id),
            expire_time=timestamp(self._accounts.access_expire_time(request.token)),
        )
