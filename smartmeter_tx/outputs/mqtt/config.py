"""
Where and how the MQTT publisher publishes: the broker's URL, the topic and
discovery prefixes, TLS and the queue's bound, checked once at start.

Pure: no Twisted, no I/O.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field
from typing import Optional

from smartmeter_tx.errors import ArgumentError

__all__ = ["MqttConfig", "PAHO_MISSING"]

PAHO_MISSING = "MQTT needs paho-mqtt: pip install 'smartmeter_tx[mqtt]'"


_TOPIC_FORBIDDEN = set("+#\0")


def _check_prefix(prefix: str, what: str) -> str:
    prefix = prefix.strip().strip("/")
    if not prefix or _TOPIC_FORBIDDEN & set(prefix):
        raise ArgumentError(f"{what} must be a non-empty MQTT topic without + or #")
    return prefix


@dataclass(frozen=True)
class MqttConfig:
    """
    Where and how to publish.  Build it with L{from_options}.

    @ivar discovery_prefix: Home Assistant's discovery prefix, or C{None} for
        no discovery.
    @ivar ca_file: the CA certificates (PEM) that sign the broker's
        certificate, or C{None} for the system's.
    @ivar cert_file: a client certificate (PEM), with its key unless
        C{key_file} holds it.
    @ivar queue_limit: the most messages kept for the broker while it is
        away or slow.
    """

    host: str
    port: int
    tls: bool = False
    username: Optional[str] = None
    password: Optional[str] = field(default=None, repr=False)
    topic_prefix: str = "smartmeter"
    discovery_prefix: Optional[str] = "homeassistant"
    ca_file: Optional[str] = None
    cert_file: Optional[str] = None
    key_file: Optional[str] = None
    queue_limit: int = 10000
    keepalive: int = 60

    @classmethod
    def from_options(cls, url: str, password: Optional[str], topic_prefix: str = "smartmeter",
                     discovery_prefix: Optional[str] = "homeassistant",
                     ca_file: Optional[str] = None, cert_file: Optional[str] = None,
                     key_file: Optional[str] = None,
                     queue_limit: int = 10000) -> "MqttConfig":
        """
        Parse C{mqtt://[user@]host[:port]} or C{mqtts://[user@]host[:port]}.

        @param discovery_prefix: C{None} or C{"none"} disables discovery.
        @raise ArgumentError: a one-line message (it never holds the password).
        """
        try:
            parts = urllib.parse.urlsplit(url.strip())
            port = parts.port
        except ValueError:
            raise ArgumentError("--mqtt: not a URL of the form mqtt://[user@]host[:port]") from None
        if parts.scheme not in ("mqtt", "mqtts"):
            raise ArgumentError("--mqtt: the URL must start with mqtt:// or mqtts://")
        if parts.password is not None:
            raise ArgumentError("--mqtt: no password in the URL; use --mqtt-password-file "
                                "or SMARTMETER_MQTT_PASSWORD")
        if not parts.hostname:
            raise ArgumentError("--mqtt: the URL has no host")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ArgumentError("--mqtt: the URL must be mqtt://[user@]host[:port], nothing after it")
        tls = parts.scheme == "mqtts"
        for flag, value in (("--mqtt-ca", ca_file), ("--mqtt-cert", cert_file),
                            ("--mqtt-key", key_file)):
            if value is not None and not tls:
                raise ArgumentError(f"{flag} needs an mqtts:// URL")
        if key_file is not None and cert_file is None:
            raise ArgumentError("--mqtt-key needs --mqtt-cert")
        if isinstance(discovery_prefix, str) and discovery_prefix.strip().lower() == "none":
            discovery_prefix = None
        if discovery_prefix is not None:
            discovery_prefix = _check_prefix(discovery_prefix, "--ha-discovery")
        if queue_limit < 1:
            raise ArgumentError("the MQTT queue limit must be 1 or more")
        username = urllib.parse.unquote(parts.username) if parts.username else None
        return cls(host=parts.hostname, port=port or (8883 if tls else 1883), tls=tls,
                   username=username, password=password or None,
                   topic_prefix=_check_prefix(topic_prefix, "--mqtt-topic"),
                   discovery_prefix=discovery_prefix, ca_file=ca_file,
                   cert_file=cert_file, key_file=key_file, queue_limit=queue_limit)

    @property
    def display_url(self) -> str:
        """The broker's URL as diagnostics show it: the user name, no secret."""
        user = f"{urllib.parse.quote(self.username)}@" if self.username else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{host}:{self.port}"
