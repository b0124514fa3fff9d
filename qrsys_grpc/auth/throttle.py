"""How failed sign-ins slow an attacker down: the policy, free of I/O.

The first ``free_failures - 1`` failures in a window cost nothing; the next
blocks the key for one second, and each one after that for twice as long as
the one before, capped at ``max_delay``. A success clears the account's
count.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True)
class ThrottlePolicy:
    """Free failures per key kind, the doubling delay and its cap."""

    free_failures_per_account: int = 5
    free_failures_per_address: int = 50
    base_delay: timedelta = timedelta(seconds=1)
    max_delay: timedelta = timedelta(minutes=15)
    window: timedelta = timedelta(minutes=15)

    def delay(self, failures: int, free: int) -> timedelta:
        """How long a key is blocked after its ``failures``-th failure.

        The ``free``-th failure blocks for ``base_delay``, and each later one
        for twice as long as the one before.
        """
        excess = failures - free
        if excess < 0:
            return timedelta(0)
        seconds = self.base_delay.total_seconds() * 2 ** min(excess, 30)
        return min(timedelta(seconds=seconds), self.max_delay)


def account_key(email: str) -> str:
    """The throttle key of an account: a digest of its lower-cased email, so
    that the table holds no addresses and any string makes a valid key."""
    digest = hashlib.sha256(email.lower().encode("utf-8", "surrogatepass")).hexdigest()
    return f"account:{digest}"


def address_key(peer: str) -> str | None:
    """The throttle key of a gRPC peer such as ``ipv4:10.0.0.7:51234``.

    IPv6 addresses are grouped by their /64, which one host usually owns.
    Returns ``None`` for peers without an IP address (Unix sockets).
    """
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        host = rest.rsplit(":", 1)[0]
    elif kind == "ipv6":
        host = rest.rsplit(":", 1)[0].strip("[]")
    else:
        return None
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if address.version == 6:
        network = ipaddress.ip_network(f"{address}/64", strict=False)
        return f"address:{network}"
    return f"address:{address}"
