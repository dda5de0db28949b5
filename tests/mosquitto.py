"""
A real MQTT broker for the tests and the fault bench: Debian's mosquitto on a
free loopback port, started and killed by its user, optionally with TLS (the
certificates made here, by L{make_certificates}); and a paho subscriber in
its own thread that records what arrives.
"""

import datetime
import os
import shutil
import signal
import socket
import subprocess
import threading
import time

from twisted.internet import defer, reactor, task

MOSQUITTO = shutil.which("mosquitto", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd",
                                path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
WAIT = 10.0

try:
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion
except ImportError:  # pragma: no cover
    paho = None


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Broker:
    """A mosquitto subprocess on 127.0.0.1."""

    def __init__(self, directory: str, extra: str = "", persistence: bool = False,
                 tls: "Certificates | None" = None) -> None:
        """
        @param extra: more lines of mosquitto.conf.
        @param tls: the listener speaks TLS only, with this server certificate.
        """
        self.directory = directory
        self.extra = extra
        self.persistence = persistence
        self.tls = tls
        self.port = None
        self.process = None

    @defer.inlineCallbacks
    def start(self, port=None):
        """Start it (on C{port}, or a free one); fire once it accepts connections."""
        for attempt in range(5):
            self.port = port or free_port()
            conf = os.path.join(self.directory, "mosquitto.conf")
            lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true" if "password_file"
                     not in self.extra else "allow_anonymous false"]
            if self.tls is not None:
                lines += [f"cafile {self.tls.ca}", f"certfile {self.tls.server}",
                          f"keyfile {self.tls.server_key}"]
            if os.geteuid() == 0:
                lines.append("user root")
            if self.persistence:
                lines += ["persistence true", f"persistence_location {self.directory}/",
                          "autosave_interval 0"]
            else:
                lines.append("persistence false")
            lines.append(self.extra)
            with open(conf, "w") as f:
                f.write("\n".join(lines) + "\n")
            log = open(os.path.join(self.directory, "mosquitto.log"), "ab")
            self.process = subprocess.Popen([MOSQUITTO, "-c", conf], stdout=log, stderr=log)
            log.close()
            deadline = time.monotonic() + WAIT
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    break
                try:
                    socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                    return
                except OSError:
                    # Wait on the reactor, never by blocking it.
                    yield task.deferLater(reactor, 0.05, lambda: None)
            self.kill()
            if port is not None and attempt >= 2:
                break
        raise RuntimeError(f"mosquitto did not start on port {self.port}")

    def stop(self, sig=signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(WAIT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


class Subscriber:
    """A paho client in its own thread (test side only), recording what arrives."""

    def __init__(self, port: int, topics, username=None, password=None, client_id="",
                 clean=True, ca=None) -> None:
        """@param ca: connect with TLS, trusting this CA file."""
        self.messages = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  clean_session=clean, protocol=paho.MQTTv311)
        if username:
            self.client.username_pw_set(username, password)
        if ca is not None:
            self.client.tls_set(ca_certs=ca)
        self.topics = topics

        def on_connect(client, userdata, flags, rc, props):
            client.subscribe([(t, 1) for t in self.topics])

        def on_subscribe(client, userdata, mid, rcs, props):
            self.subscribed.set()

        def on_message(client, userdata, message):
            with self.lock:
                self.messages.append((message.topic, message.payload, message.retain))
        self.client.on_connect = on_connect
        self.client.on_subscribe = on_subscribe
        self.client.on_message = on_message
        self.client.connect("127.0.0.1", port, 30)
        self.client.loop_start()
        if not self.subscribed.wait(WAIT):
            self.close()
            raise RuntimeError("the test subscriber could not subscribe")

    def got(self, topic=None):
        with self.lock:
            return [m for m in self.messages if topic is None or m[0] == topic]

    def clear(self) -> None:
        with self.lock:
            del self.messages[:]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@defer.inlineCallbacks
def wait_for(predicate, what: str, timeout: float = WAIT, step: float = 0.05):
    """
    Poll C{predicate} every C{step} seconds on the reactor; fail (never hang)
    after C{timeout}.

    @return: a Deferred firing with C{predicate}'s true value.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        yield task.deferLater(reactor, step, lambda: None)




class Certificates:
    """
    A CA and a server certificate for 127.0.0.1 signed by it, in a
    directory; and a second CA that signed nothing (the wrong CA).

    @ivar ca: the CA's certificate (PEM); C{wrong_ca} the other CA's.
    @ivar server: the server's certificate; C{server_key} its key.
    """

    def __init__(self, directory: str) -> None:
        import ipaddress

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        now = datetime.datetime.now(datetime.timezone.utc)

        def name(text):
            return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

        def certificate(subject, key, issuer, issuer_key, ca, extension=None):
            builder = (x509.CertificateBuilder().subject_name(name(subject))
                       .issuer_name(name(issuer)).public_key(key.public_key())
                       .serial_number(x509.random_serial_number())
                       .not_valid_before(now - datetime.timedelta(minutes=5))
                       .not_valid_after(now + datetime.timedelta(days=1))
                       .add_extension(x509.BasicConstraints(ca=ca, path_length=None),
                                      critical=True))
            if extension is not None:
                builder = builder.add_extension(extension, critical=False)
            return builder.sign(issuer_key, hashes.SHA256())

        def write(filename, data):
            path = os.path.join(directory, filename)
            with open(path, "wb") as f:
                f.write(data)
            return path

        def pem(cert):
            return cert.public_bytes(serialization.Encoding.PEM)

        def key_pem(key):
            return key.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())

        ca_key, wrong_key, server_key = (ec.generate_private_key(ec.SECP256R1())
                                         for _ in range(3))
        ca = certificate("test CA", ca_key, "test CA", ca_key, True)
        wrong = certificate("wrong CA", wrong_key, "wrong CA", wrong_key, True)
        alt = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                           x509.DNSName("localhost")])
        server = certificate("127.0.0.1", server_key, "test CA", ca_key, False, alt)
        self.ca = write("ca.pem", pem(ca))
        self.wrong_ca = write("wrong-ca.pem", pem(wrong))
        self.server = write("server.pem", pem(server))
        self.server_key = write("server.key", key_pem(server_key))
        os.chmod(self.server_key, 0o600)
