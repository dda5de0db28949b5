"""
The service's HTTP face, on loopback by default: C{/latest} (the newest
reading as JSON, with its time and age), C{/history} (the logged 30-minute
slots) and C{/metrics} (Prometheus exposition of the readings and of link
health).

The metrics are collected from the poller when scraped (a custom collector on
a private registry), so nothing here runs on the poll path.
"""

from __future__ import annotations

import datetime
import json

from twisted.web import resource, server

from smartmeter_tx.outputs import dashboard
from smartmeter_tx import model
from smartmeter_tx.model import json_value

__all__ = ["make_root", "PollerCollector", "QuietSite", "DashboardResource"]


class QuietSite(server.Site):
    """
    A Site without access logs: a Prometheus scrape every few seconds would
    otherwise drown the service's own log.
    """

    noisy = False

    def log(self, request) -> None:
        pass


class _PollerResource(resource.Resource):
    """A leaf resource over the poller's store and state, with the wall clock."""

    isLeaf = True

    def __init__(self, poller, clock_now) -> None:
        super().__init__()
        self.poller = poller
        self.clock_now = clock_now


class DashboardResource(_PollerResource):
    """
    C{/}: the dashboard page (L{smartmeter_tx.outputs.dashboard}), in Japanese or
    English by C{Accept-Language} (or C{?lang=ja|en}).
    """

    def render_GET(self, request):
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        header = request.getHeader(b"accept-language")
        choice = (request.args.get(b"lang") or [b""])[0].decode("ascii", "replace")
        if isinstance(header, bytes):
            header = header.decode("latin-1")
        lang = dashboard.language(header, choice)
        snap = dashboard.snapshot(self.poller, self.clock_now())
        return dashboard.render(snap, lang).encode("utf-8")


class LatestResource(_PollerResource):
    """
    C{/latest}: the newest reading's record (L{LatestStore.latest_record}) with
    its C{age}, whether the session is up and sends are held (and rate
    limited), the rejoins of the last hour, the time of the meter's last
    EA/EB (C{fixed_time}), and the C{device} the service reads.
    """

    def render_GET(self, request):
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        store, state = self.poller.store, self.poller.state
        body = store.latest_record()
        if body is None:
            request.setResponseCode(503)
            body = {"error": "no reading yet", "held": state.held}
        else:
            body["age"] = round(store.age(self.clock_now()), 3)
            body["session"] = state.session_up
            body["held"] = state.held
            body["rate_limited"] = state.rate_limited
            body["rejoins_last_hour"] = store.rejoins_since(self.poller.clock.seconds() - 3600)
        config = getattr(self.poller, "config", None)
        if config is not None and config.device:
            # Which dongle: a plugin that finds a port held reads this service
            # instead only when it is the same one.
            body["device"] = config.device
        return (json.dumps(body, sort_keys=True) + "\n").encode()


class HistoryResource(_PollerResource):
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
        backfill = getattr(self.poller, "backfill", None)
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


class PollerCollector:
    """
    A prometheus_client collector reading the poller's store and link state at
    scrape time.
    """

    def __init__(self, poller, clock_now) -> None:
        self.poller = poller
        self.clock_now = clock_now

    def describe(self):
        return []

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        p = self.poller
        store, state, s = p.store, p.state, p.store.stats
        backfill = getattr(p, "backfill", None)
        latest, energy = store.latest, store.energy

        def gauge(name, doc, value, labels=None):
            g = GaugeMetricFamily(name, doc, labels=list(labels or {}))
            if value is not None:
                g.add_metric(list((labels or {}).values()), float(value))
            return g

        def value_of(reading, field):
            return None if reading is None else json_value(getattr(reading, field))

        yield gauge("smartmeter_power_watts", "Instantaneous power (E7); negative = selling",
                    value_of(latest, "power_w"))
        current = GaugeMetricFamily("smartmeter_current_amperes",
                                    "Instantaneous current per phase (E8)", labels=["phase"])
        for phase in ("r", "t"):
            value = value_of(latest, f"current_{phase}_a")
            if value is not None:
                current.add_metric([phase], float(value))
        yield current
        family = GaugeMetricFamily("smartmeter_energy_kwh",
                                   "Cumulative energy (E0 normal, E3 reverse)",
                                   labels=["direction"])
        for direction in ("normal", "reverse"):
            value = value_of(energy, f"energy_{direction}_kwh")
            if value is not None:
                family.add_metric([direction], float(value))
        yield family
        yield gauge("smartmeter_reading_age_seconds", "Seconds since the newest reading",
                    store.age(self.clock_now()))
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
            c = CounterMetricFamily(name, doc)
            c.add_metric([], value)
            yield c
        yield gauge("smartmeter_rate_limited_now", "1 while EVENT 32 holds all sends",
                    1 if state.rate_limited else 0)
        yield gauge("smartmeter_session_up", "1 while a PANA session is known to be up",
                    1 if state.session_up else 0)
        yield gauge("smartmeter_session_age_seconds", "Seconds since the session came up",
                    None if state.session_since is None
                    else p.clock.seconds() - state.session_since)
        yield gauge("smartmeter_last_event", "Number of the last EVENT from the module",
                    state.last_event)
        yield gauge("smartmeter_rssi_dbm", "Last received signal strength (dBm)", state.last_rssi)
        yield gauge("smartmeter_lqi", "Last link quality indicator from a scan", state.last_lqi)
        yield gauge("smartmeter_backfill_missing_slots",
                    "Slots of the backfill window the log does not hold yet",
                    backfill.missing if backfill else None)


class MetricsResource(resource.Resource):
    isLeaf = True

    def __init__(self, registry) -> None:
        super().__init__()
        self.registry = registry

    def render_GET(self, request):
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode())
        return generate_latest(self.registry)


def make_root(poller, clock_now) -> resource.Resource:
    """
    The site root with C{/latest} and C{/metrics}.
    """
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(PollerCollector(poller, clock_now))
    root = resource.Resource()
    root.putChild(b"", DashboardResource(poller, clock_now))
    root.putChild(b"latest", LatestResource(poller, clock_now))
    root.putChild(b"metrics", MetricsResource(registry))
    root.putChild(b"history", HistoryResource(poller, clock_now))
    return root
