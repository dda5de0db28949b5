"""
The contracts between the service and its outputs, declared with
zope.interface as Twisted declares its own.

An output is a C{Service} that provides one or both of them and is
registered once (L{smartmeter_tx.service.tree.ServiceTree.addOutput}):
  - L{IRecordReceiver}: it gets every record of the service, in the order
    the service logs them;
  - L{IMetricsSource}: its figures are on C{/metrics}.
What an output reads of the running service it reads through the
L{smartmeter_tx.service.view.ServiceView} it was made with.
"""

from __future__ import annotations

from typing import Iterable, NamedTuple, Optional, Union

from zope.interface import Interface

__all__ = ["IRecordReceiver", "IMetricsSource", "Figure", "figures"]


class Figure(NamedTuple):
    """
    One figure for C{/metrics}: a Prometheus sample, or none.  Figures of
    one name with different C{labels} are the samples of one family.

    @ivar kind: C{"gauge"} or C{"counter"}.
    @ivar value: C{None} when there is nothing to say (no sample is given).
    @ivar labels: C{(name, value)} pairs of a labelled sample.
    """

    name: str
    kind: str
    help: str
    value: Optional[Union[int, float]]
    labels: tuple[tuple[str, str], ...] = ()


class IRecordReceiver(Interface):
    """What receives the service's records."""

    def recordReceived(record: dict, when: float) -> None:
        """
        One record, in the order the service logs them: a reading
        (L{smartmeter_tx.model.Reading.to_record}), the meter's own
        half-hourly reading (C{"kind": "fixed"}), or a 30-minute slot of its
        record (C{"kind": "history"}, only once the data log holds it).

        It must not block.  An exception is logged, and the other outputs
        still get the record.

        @param when: the epoch seconds it was taken (a slot: when it was logged).
        """


class IMetricsSource(Interface):
    """What has figures for C{/metrics}."""

    def metrics() -> list[Figure]:
        """
        @return: the figures now, as L{Figure}s (read at each scrape).
        """


def figures(sources: Iterable[IMetricsSource]) -> dict[str, Optional[Union[int, float]]]:
    """
    @return: the unlabelled figures of every L{IMetricsSource} in
        C{sources} now, by name (what the page reads).
    """
    return {figure.name: figure.value for source in sources for figure in source.metrics()
            if not figure.labels}
