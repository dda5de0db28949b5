"""
What a session needs from the user, whichever front end took it: the
credentials, the saved link with the command line's overrides applied, and a
forced dialect.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional

from twisted.internet.interfaces import IReactorTime

from smartmeter_tx.session.client import BRouteClient
from smartmeter_tx.session.join import Credentials
from smartmeter_tx.session.linkstate import LinkState
from smartmeter_tx.session.state import MeterLink
from smartmeter_tx.session.steps import ONESHOT_DIALECT_FLAGS, SERVICE_DIALECT_FLAGS
from smartmeter_tx.sk.protocol import SKStackProtocol
from smartmeter_tx.sk.values import Dialect

__all__ = ["SessionConfig", "Connection", "ONESHOT_DIALECT_FLAGS", "SERVICE_DIALECT_FLAGS"]

#: The SK protocol of one connection, as the layers above the session name it
#: (L{SessionConfig.new_protocol} makes it, L{SessionConfig.client} reads through it).
Connection = SKStackProtocol


@dataclass
class SessionConfig:
    """
    Built once by L{smartmeter_tx.cli.options} for either front end; each
    connection gets its client from L{client}.
    """

    credentials: Optional[Credentials] = None
    link: MeterLink = field(default_factory=MeterLink)
    dialect: Optional[Dialect] = None
    #: the --device it reads through, as given (for /latest and the logs)
    device: Optional[str] = None

    def new_protocol(self, clock: IReactorTime) -> SKStackProtocol:
        """
        @return: the SK protocol of a new connection, on C{clock}; L{client}
            registers the credentials with it as secrets.
        """
        return SKStackProtocol(clock=clock)

    def client(self, sk: SKStackProtocol, clock: IReactorTime, state: Optional[LinkState] = None,
               rssi: bool = False,
               dialect_flags: Mapping[Dialect, str] = ONESHOT_DIALECT_FLAGS) -> BRouteClient:
        """
        @param dialect_flags: how the front end spells the option that forces
            each dialect (L{SERVICE_DIALECT_FLAGS} for the service).
        @return: a L{BRouteClient} over C{sk}, sharing this config's link; the
            credentials are registered with C{sk} as secrets first.
        """
        if self.credentials is not None:
            sk.add_secret(self.credentials.rbid)
            sk.add_secret(self.credentials.password)
        flag = None if self.dialect is None else dialect_flags[self.dialect]
        return BRouteClient(sk, self.credentials, clock, link=self.link, dialect=self.dialect,
                            state=state, rssi=rssi, dialect_flag=flag)
