"""
The service's MQTT output: the readings, the meter's own half-hourly EA/EB
and the link's health as retained JSON states, plus Home Assistant discovery.

Topics (C{PREFIX} = C{--mqtt-topic}, default C{smartmeter}; C{ID} = the
meter's MAC address in lower case, the id of its HA statistics too)::

    PREFIX/ID/availability  online | offline (retained; the Last Will says offline)
    PREFIX/ID/state         {"power_w", "current_r_a", "current_t_a", "time"}
    PREFIX/ID/energy        {"energy_normal_kwh", "energy_reverse_kwh", "time"}
    PREFIX/ID/fixed         {"meter_time", "energy_normal_kwh", "energy_reverse_kwh", ..., "time"}
    PREFIX/ID/link          {"session", "session_up", "rate_limited", "held", "rssi_dbm",
                             "lqi", "reading_age_s", "polls_failed", "last_event", "time"}

Every state is retained and published with QoS 1; C{time} is the epoch
seconds at which the service took the reading (C{meter_time} is the meter's
own clock, ISO 8601 with +09:00).  A value the meter did not give is C{null}.

Until the meter's id is known (the module unplugged, the meter not yet
found) the service connects all the same and says where it stands on its own
topics, cleared (an empty retained message) once the meter is known::

    PREFIX/availability     online | offline (retained; the Last Will says offline)
    PREFIX/link             as PREFIX/ID/link

The modules: L{config} (the options, checked), L{payloads} (pure: topics'
id, states, link, discovery, an earlier version's topics), L{outbox} (pure: the ordered queue),
L{faults} (pure: which failures are the configuration's), L{driver}
(paho-mqtt on the reactor), L{connection} (connecting, reconnect backoff,
the sender) and L{publisher} (the policy: which id, Last Will, republishing).
"""
