"""
The service's root and its records' way out: the poller with its data log,
and the outputs registered on it.

Every record (a reading, the meter's fixed reading, a 30-minute slot) goes
through one L{RecordFanout}: into the data log first, then to each output
in the order they were registered.  Adding an output is one
L{ServiceTree.addOutput}; nothing else of the service changes.
"""

from __future__ import annotations

from typing import Callable, Optional

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger

from smartmeter_tx.errors import ArgumentError
from smartmeter_tx.service.datalog import DataLog
from smartmeter_tx.service.interfaces import IMetricsSource, IRecordReceiver
from smartmeter_tx.service.poller import MeterPoller
from smartmeter_tx.service.view import ServiceView

__all__ = ["RecordFanout", "ServiceTree"]


class RecordFanout:
    """
    Every record of the service, in order, to the data log and then to each
    L{IRecordReceiver}.  Called as the poller's C{on_reading} and the
    backfill's C{on_slot}.

    A 30-minute slot the data log cannot write goes nowhere: it stays
    missing, the backfill reads it again later, and no output gets it twice.
    A reading goes to the outputs whether or not the log took it: a full
    disk must not stop the live values.
    """

    log = Logger()

    def __init__(self, datalog: Optional[DataLog] = None) -> None:
        self.datalog = datalog
        self._receivers: list[IRecordReceiver] = []

    def add(self, receiver: object) -> None:
        """
        @param receiver: an L{IRecordReceiver}; it gets the records from now on.
        @raise ArgumentError: it does not provide L{IRecordReceiver}.
        """
        if not IRecordReceiver.providedBy(receiver):
            raise ArgumentError(f"{receiver!r} does not provide IRecordReceiver")
        self._receivers.append(receiver)

    @property
    def receivers(self) -> tuple[IRecordReceiver, ...]:
        return tuple(self._receivers)

    def __call__(self, record: dict, when: float) -> Optional[bool]:
        """
        @return: whether the data log wrote the record (C{None} without one).
        """
        written = None
        if self.datalog is not None:
            written = self.datalog.write(record, when)
            if written is False and record.get("kind") == "history":
                return False
        for receiver in self._receivers:
            try:
                receiver.recordReceived(record, when)
            except Exception:
                self.log.failure("the output {output!r} failed on a record; the others go on",
                                 output=receiver)
        return written


class ServiceTree(service.MultiService):
    """
    The root of C{twist smartmeter}'s services: the poller, and the outputs.

    @ivar poller: the L{MeterPoller}.
    @ivar records: the L{RecordFanout} the poller and its backfill write to.
    @ivar sources: the L{IMetricsSource}s, the data log's first; the list
        itself is what C{/metrics} reads at each scrape.
    """

    log = Logger()

    def __init__(self, poller: MeterPoller, records: RecordFanout) -> None:
        super().__init__()
        self.poller = poller
        self.records = records
        self.sources: list[IMetricsSource] = []
        self._after_stop: list[Callable[[], object]] = []
        if records.datalog is not None:
            self.sources.append(records.datalog)
            self.whenStopped(records.datalog.close)
        poller.setServiceParent(self)

    def view(self) -> ServiceView:
        """@return: what the outputs read of the service (one view for all)."""
        return self.poller.view()

    def addOutput(self, output: service.IService) -> None:
        """
        Register C{output}: a child service of the tree that gets every
        record if it provides L{IRecordReceiver} and whose figures are on
        C{/metrics} if it provides L{IMetricsSource}.
        """
        if IRecordReceiver.providedBy(output):
            self.records.add(output)
        if IMetricsSource.providedBy(output):
            self.sources.append(output)
        output.setServiceParent(self)

    def whenStopped(self, f: Callable[[], object]) -> None:
        """
        Call C{f()} once every service of the tree has stopped (the data
        log's close; an emulated device, which the poller's port reads).
        """
        self._after_stop.append(f)

    def stopService(self) -> defer.Deferred:
        """
        Stop the outputs and the poller (the last registered first), then
        what L{whenStopped} was given: nothing is logged after the data
        log's close.

        @return: a Deferred that fires once all of it is done.
        """
        d = defer.maybeDeferred(super().stopService)

        def after(result: object) -> object:
            for f in self._after_stop:
                try:
                    f()
                except Exception:
                    self.log.failure("stopping {f!r} failed", f=f)
            return result
        return d.addBoth(after)
