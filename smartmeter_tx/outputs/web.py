"""
The service's HTTP face, on loopback by default: C{/} (the dashboard),
C{/latest} (the newest reading as JSON, with its time and age), C{/history}
(the logged 30-minute slots) and C{/metrics} (Prometheus exposition of the
readings and of link health).

Every resource reads the service through its L{ServiceView}.  The metrics are
collected when scraped (written in the exposition format by L{exposition}), so nothing
here runs on the poll path.
"""

from __future__ import annotations

import datetime
import json
from typing import Callable, Iterator, Optional

from twisted.application.internet import StreamServerEndpointService
from twisted.internet.error import CannotListenError
from twisted.web import resource, server
from zope.interface import implementer

from smartmeter_tx.outputs import dashboard
from smartmeter_tx.outputs.exposition import CONTENT_TYPE, Family, counter, exposition, gauge
from smartmeter_tx.service.interfaces import IMetricsSource, figures
from smartmeter_tx.service.view import ServiceView
from smartmeter_tx import model
from smartmeter_tx.model import json_value

__all__ = ["make_root", "ViewCollector", "QuietSite", "DashboardResource", "WebService"]


class QuietSite(server.Site):
    """
    A Site without access logs: a Prometheus scrape every few seconds would
    otherwise drown the service's own log.  Without them it has no use for
    the date Twisted's HTTP factory keeps for their lines, which it
    refreshes every second: the one timer that would wake an idle service
    between two polls.
    """

    noisy = False

    def log(self, request) -> None:
        pass

    def _updateLogDateTime(self) -> None:
        pass


class _Plain(resource.Resource):
    """
    A leaf that answers GET, HEAD (the GET's headers, no body) and nothing
    else, in plain words: Twisted's own pages for the rest tell jokes, and
    its HEAD on a GET resource logs one.
    """

    isLeaf = True
    #: The leaf's answer to GET (each subclass has its own).
    render_GET: Callable[[server.Request], bytes]

    def render(self, request):
        if request.method == b"HEAD":
            body = self.render_GET(request)
            request.setHeader(b"content-length", b"%d" % len(body))
            return b""
        if request.method != b"GET":
            request.setResponseCode(405)
            request.setHeader(b"allow", b"GET, HEAD")
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"method not allowed: GET or HEAD only\n"
        return self.render_GET(request)


class _NotFound(_Plain):
    def render_GET(self, request):
        request.setResponseCode(404)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"not found: the service serves /, /latest, /history and /metrics\n"


class _Root(resource.Resource):
    """The site root: its children, and a plain 404 for any other path."""

    def getChild(self, path, request):
        return _NotFound()


class _ViewResource(_Plain):
    """A leaf resource over the service's view, with the wall clock."""

    def __init__(self, view: ServiceView, clock_now: Callable[[], float]) -> None:
        super().__init__()
        self.view = view
        self.clock_now = clock_now


class DashboardResource(_ViewResource):
    """
    C{/}: the dashboard page (L{smartmeter_tx.outputs.dashboard}), in Japanese or
    English by C{Accept-Language} (or C{?lang=ja|en}).
    """

    def __init__(self, view: ServiceView, clock_now: Callable[[], float],
                 sources: Optional[list[IMetricsSource]] = None,
                 band_of: Optional[Callable] = None) -> None:
        """
        @param sources: the L{IMetricsSource}s whose figures the page shows.
        @param band_of: under a time-of-use tariff, a slot's band (the bars'
            colours).
        """
        super().__init__(view, clock_now)
        self.sources = [] if sources is None else sources
        self.band_of = band_of

    def render_GET(self, request):
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        header = request.getHeader(b"accept-language")
        choice = (request.args.get(b"lang") or [b""])[0].decode("ascii", "replace")
        if isinstance(header, bytes):
            header = header.decode("latin-1")
        lang = dashboard.language(header, choice)
        snap = dashboard.snapshot(self.view, self.clock_now(), figures(self.sources),
                                  self.band_of)
        return dashboard.render(snap, lang).encode("utf-8")


class LatestResource(_ViewResource):
    """
    C{/latest}: the newest reading's record (L{LatestStore.latest_record}) with
    its C{age}, whether the session is up and sends are held (and rate
    limited), the rejoins of the last hour, the time of the meter's last
    EA/EB (C{fixed_time}), and the C{device} the service reads; and, while
    the service has no session because its joins fail, why (C{cause}); with
    an ampere contract (C{--tariff}), C{contract_a} and C{contract_warning_a}
    (what C{check-smartmeter} takes its current thresholds from).
    """

    def __init__(self, view: ServiceView, clock_now: Callable[[], float],
                 sources: Optional[list[IMetricsSource]] = None) -> None:
        super().__init__(view, clock_now)
        self.sources = [] if sources is None else sources

    def render_GET(self, request):
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        store, state = self.view.store, self.view.state
        body = store.latest_record()
        if body is None:
            request.setResponseCode(503)
            body = {"error": "no reading yet", "held": state.held, "link": state.session.value}
        else:
            now = self.view.clock.seconds()  # ages on the service's clock, not the wall's
            age = store.age(now)
            assert age is not None  # there is a reading, so it has an age
            body["age"] = round(age, 3)
            fixed_age = store.fixed_age(now)
            if fixed_age is not None:
                body["fixed_age"] = round(fixed_age, 3)
            poll_age = store.poll_age(now)
            if poll_age is not None:
                body["poll_age"] = round(poll_age, 3)
                body["interval"] = self.view.interval
            body["session"] = state.session_up
            body["link"] = state.session.value
            body["held"] = state.held
            body["rate_limited"] = state.rate_limited
            body["rejoins_last_hour"] = store.rejoins_since(self.view.clock.seconds() - 3600)
        if store.join_failure is not None:
            # A wrong password shows here, not only in the journal.
            body["cause"] = store.join_failure.text
        if self.view.device:
            # Which dongle: a plugin that finds a port held reads this service
            # instead only when it is the same one.
            body["device"] = self.view.device
        if self.view.link is not None and self.view.link.mac:
            body["meter_mac"] = self.view.link.mac  # names its HA statistics
        shown = figures(self.sources)
        for key, name in (("contract_a", "smartmeter_contract_amperes"),
                          ("contract_warning_a", "smartmeter_contract_warning_amperes")):
            if shown.get(name) is not None:
                body[key] = shown[name]
        return (json.dumps(body, sort_keys=True) + "\n").encode()


class HistoryResource(_ViewResource):
    """
    C{/history?since=...&until=...}: the logged 30-minute slots starting in
    [since, until), oldest first, as C{{"slots": [record, ...]}}.  Times are
    ISO 8601 (without an offset: Japan's time, as the meter keeps it) or
    epoch seconds; by default the last 24 hours.
    """

    def render_GET(self, request):
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        now = datetime.datetime.fromtimestamp(self.clock_now(), model.JST)
        try:
            since = _when(request, b"since", now - datetime.timedelta(days=1))
            until = _when(request, b"until", now)
        except ValueError as e:
            request.setResponseCode(400)
            return (json.dumps({"error": str(e)}) + "\n").encode()
        backfill = self.view.backfill
        slots = [] if backfill is None else backfill.between(since, until)
        body = {"since": since.isoformat(), "until": until.isoformat(),
                "slots": [slot.to_record() for slot in slots]}
        return (json.dumps(body, sort_keys=True) + "\n").encode()


def _when(request, name: bytes, default: datetime.datetime) -> datetime.datetime:
    values = request.args.get(name)
    if not values:
        return default
    text = values[0].decode("utf-8", "replace").strip()
    try:
        return datetime.datetime.fromtimestamp(float(text), model.JST)
    except (ValueError, OverflowError, OSError):
        pass
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{name.decode()} must be ISO 8601 or epoch seconds, "
                         f"not {text[:40]!r}") from None
    return when.replace(tzinfo=model.JST) if when.tzinfo is None else when


def _value_of(reading, name: str):
    return None if reading is None else json_value(getattr(reading, name))


def _labelled(label: str, values: dict) -> tuple:
    """The samples of one label's C{values}, those known."""
    return tuple((((label, key),), value) for key, value in values.items() if value is not None)


class ViewCollector:
    """
    The figures of the service's view (its store, link state and backfill),
    read at scrape time.
    """

    def __init__(self, view: ServiceView) -> None:
        self.view = view

    def collect(self) -> Iterator[Family]:
        yield from self._readings()
        yield from self._counters()
        yield from self._link()

    def _readings(self) -> Iterator[Family]:
        store = self.view.store
        latest, energy = store.latest, store.energy
        yield gauge("smartmeter_power_watts", "Instantaneous power (E7); negative = selling",
                    _value_of(latest, "power_w"))
        yield Family("smartmeter_current_amperes", "gauge",
                     "Instantaneous current per phase (E8)",
                     _labelled("phase", {phase: _value_of(latest, f"current_{phase}_a")
                                         for phase in ("r", "t")}))
        yield Family("smartmeter_energy_kwh", "gauge",
                     "Cumulative energy bought (direction normal, E0) and sold "
                     "(direction reverse, E3)",
                     _labelled("direction", {d: _value_of(energy, f"energy_{d}_kwh")
                                             for d in ("normal", "reverse")}))
        now = self.view.clock.seconds()
        yield gauge("smartmeter_reading_age_seconds", "Seconds since the newest reading",
                    store.age(now))
        yield gauge("smartmeter_last_poll_age_seconds",
                    "Seconds since the poll loop last ticked (grows while it is stalled)",
                    store.poll_age(now))

    def _counters(self) -> Iterator[Family]:
        s, state, backfill = self.view.store.stats, self.view.state, self.view.backfill
        for name, doc, value in (
            ("smartmeter_polls_answered", "Polls answered by the meter", s.polls_answered),
            ("smartmeter_polls_failed", "Polls without an answer", s.polls_failed),
            ("smartmeter_polls_skipped", "Polls skipped while sends were held", s.polls_skipped),
            ("smartmeter_rejoins", "PANA joins tried after a session had been up",
             s.rejoins),
            ("smartmeter_reopens", "Serial port reopened after it was lost", s.reopens),
            ("smartmeter_rate_limited", "Times the transmit-time limit engaged (EVENT 32)",
             state.rate_limited_count),
            ("smartmeter_frames_sent", "ECHONET frames sent (SKSENDTO)", s.frames_sent),
            ("smartmeter_module_busy", "SKSENDTOs sent again after the module was busy (ER10)",
             s.busy_retries),
            ("smartmeter_junk_dropped", "Garbage lines from the module dropped", s.junk_dropped),
            ("smartmeter_backfill_slots", "30-minute slots logged from the meter's own record",
             backfill.written if backfill else 0),
            ("smartmeter_backfill_frames", "Frames spent reading the meter's record",
             backfill.frames if backfill else 0),
        ):
            yield counter(name, doc, value)

    def _link(self) -> Iterator[Family]:
        state, backfill = self.view.state, self.view.backfill
        yield gauge("smartmeter_rate_limited_now", "1 while EVENT 32 holds all sends",
                    1 if state.rate_limited else 0)
        yield gauge("smartmeter_session_up", "1 while a PANA session is known to be up",
                     1 if state.session_up else 0)
        yield gauge("smartmeter_session_age_seconds", "Seconds since the session came up",
                     None if state.session_since is None
                     else self.view.clock.seconds() - state.session_since)
        yield gauge("smartmeter_last_event", "Number of the last EVENT from the module",
                     state.last_event)
        yield gauge("smartmeter_rssi_dbm", "Last received signal strength (dBm)",
                     state.last_rssi)
        yield gauge("smartmeter_lqi", "Last link quality indicator from a scan", state.last_lqi)
        yield gauge("smartmeter_backfill_missing_slots",
                     "Slots of the backfill window the log does not hold yet",
                     backfill.missing if backfill else None)


class SourcesCollector:
    """
    The figures of the parts the view does not hold (the data log, the
    outputs): each source provides L{IMetricsSource}.
    """

    def __init__(self, sources: list[IMetricsSource]) -> None:
        # The list itself, read at each scrape: a source may join it later.
        self.sources = sources

    def collect(self) -> Iterator[Family]:
        for source in self.sources:
            labelled: dict[str, list] = {}
            for figure in source.metrics():
                if figure.labels:
                    labelled.setdefault(figure.name, []).append(figure)
                elif figure.kind == "counter":
                    yield counter(figure.name, figure.help, figure.value)
                else:
                    yield gauge(figure.name, figure.help, figure.value)
            for name, family in labelled.items():
                first = family[0]
                full = name + "_total" if first.kind == "counter" else name
                yield Family(full, first.kind, first.help,
                             tuple((f.labels, f.value) for f in family if f.value is not None))


class MetricsResource(_Plain):
    isLeaf = True

    def __init__(self, collectors: list) -> None:
        super().__init__()
        self.collectors = collectors

    def render_GET(self, request):
        request.setHeader(b"content-type", CONTENT_TYPE.encode())
        return exposition(family for c in self.collectors for family in c.collect())


def make_root(view: ServiceView, clock_now: Callable[[], float],
              sources: Optional[list[IMetricsSource]] = None,
              band_of: Optional[Callable] = None) -> resource.Resource:
    """
    The site root: the dashboard at C{/}, C{/latest}, C{/metrics} and
    C{/history}, over the service's C{view}, with C{clock_now} the wall clock.

    @param sources: the L{IMetricsSource}s of the data log and the outputs,
        for C{/metrics} and the page; the list is read at each request.
    @param band_of: under a time-of-use tariff, a slot's band, for the page.
    """
    sources = [] if sources is None else sources
    collectors = [ViewCollector(view), SourcesCollector(sources)]
    root = _Root()
    root.putChild(b"", DashboardResource(view, clock_now, sources, band_of))
    root.putChild(b"latest", LatestResource(view, clock_now, sources))
    root.putChild(b"metrics", MetricsResource(collectors))
    root.putChild(b"history", HistoryResource(view, clock_now))
    return root


@implementer(IMetricsSource)
class WebService(StreamServerEndpointService):
    """
    The HTTP endpoint as an output of the service: its site's figures (the
    connection limits of L{smartmeter_tx.outputs.guard.HttpGuard}) are on
    C{/metrics}, and a port that cannot be bound is said in one line.

    The site is set once the service's view exists (C{factory}).
    """

    # The bind fails the start at once, in privilegedStartService: before
    # the serial port is opened by anyone's startService.
    _raiseSynchronously = True

    def __init__(self, endpoint, cannot_listen: Callable[[str], None]) -> None:
        """
        @param cannot_listen: called with why the endpoint cannot be bound
            (strports' service would end with a traceback).
        """
        super().__init__(endpoint, None)
        self.cannot_listen = cannot_listen

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except CannotListenError as e:
            error = e.socketError
            self.cannot_listen(str(getattr(error, "strerror", None) or e))

    def metrics(self) -> list:
        """@return: the site's L{Figure}s, if it has any."""
        if IMetricsSource.providedBy(self.factory):
            return self.factory.metrics()
        return []
