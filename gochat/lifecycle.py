"""Service lifecycle helpers shared by both roles."""

from __future__ import annotations

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger

_log = Logger()


class StopInReverse(MultiService):
    """Stops its children one at a time, last added first, each once the one before has finished.

    ``MultiService`` stops all children at once. A gateway must first stop
    listening, then drain its sessions (which still talk to logic and still
    need the heartbeat to bound the closing handshakes), and only then stop
    the wheel and logic itself; logic must finish its RPCs, then commit its
    last batch, then close its store.
    """

    def stopService(self) -> Deferred[None]:
        Service.stopService(self)
        return Deferred.fromCoroutine(self._stop_children())

    async def _stop_children(self) -> None:
        for service in reversed(list(self)):
            try:
                await maybeDeferred(service.stopService)
            except Exception:
                _log.failure("stopping {service} failed", service=service)
