"""
Tests for L{smartmeter_tx.session.state}: the state file that lets runs skip the scan.
"""

import os
import stat

from twisted.trial.unittest import SynchronousTestCase

from smartmeter_tx.session import state as S


class StateFileTests(SynchronousTestCase):
    def setUp(self):
        self.dir = self.mktemp()
        self.path = os.path.join(self.dir, "sub", "state.json")

    def test_roundTrip(self):
        """save_state then load_state gives the same MeterLink."""
        link = S.MeterLink(channel=0x3B, pan_id=0x8888, mac="001D129012345678",
                           ipaddr="FE80:0000:0000:0000:021D:1290:1234:5678", dialect="dse",
                           coefficient=1, unit="0.01", digits=6, lqi=0xB2)
        S.save_state(self.path, link)
        self.assertEqual(S.load_state(self.path), link)
        self.assertTrue(link.joinable)

    def test_mode0600(self):
        """The state file is created with mode 0600 and no temporary file is left."""
        S.save_state(self.path, S.MeterLink(channel=0x21))
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)
        self.assertEqual(os.listdir(os.path.dirname(self.path)), ["state.json"])

    def test_missingOrCorrupt(self):
        """A missing, corrupt or foreign state file loads as an empty MeterLink."""
        self.assertEqual(S.load_state(self.path), S.MeterLink())
        os.makedirs(os.path.dirname(self.path))
        for content in ("{not json", "[1, 2]", '{"channel": [1]}', '{"bogus": 1}'):
            with open(self.path, "w") as f:
                f.write(content)
            link = S.load_state(self.path)
            self.assertIsNone(link.channel)
            self.assertFalse(link.joinable)

    def test_deeplyNested(self):
        """A state file nested past the recursion limit is corrupt: it loads as no link at all."""
        os.makedirs(os.path.dirname(self.path))
        for content in ("[" * 100000, '{"channel":' * 100000, "[" * 100000 + "]" * 100000):
            with open(self.path, "w") as f:
                f.write(content)
            self.assertEqual(S.load_state(self.path), S.MeterLink())

    def test_noSecrets(self):
        """MeterLink has no field for the B-route ID or password."""
        names = {f for f in S.MeterLink.__dataclass_fields__}
        self.assertFalse(names & {"id", "rbid", "password"})

    def test_defaultPath(self):
        """default_state_path uses MACKEREL_PLUGIN_WORKDIR when set, else XDG state."""
        p = S.default_state_path("/dev/ttyUSB0", {"MACKEREL_PLUGIN_WORKDIR": "/var/tmp/m"})
        self.assertTrue(p.startswith("/var/tmp/m/smartmeter-"))
        q = S.default_state_path("/dev/ttyUSB0", {"HOME": "/home/pi"}, euid=1000)
        self.assertTrue(q.startswith("/home/pi/.local/state/smartmeter_tx/"))
        self.assertNotEqual(S.default_state_path("/dev/ttyUSB1", {"HOME": "/h"}),
                            S.default_state_path("/dev/ttyUSB0", {"HOME": "/h"}))

    def test_rootInAUsersHome(self):
        """
        Root with another user's HOME (sudo -E) keeps its state out of that
        home, in /var/lib/smartmeter_tx; root in its own home, or with
        MACKEREL_PLUGIN_WORKDIR, as before.
        """
        owners = {"/home/pi": 1000, "/root": 0}
        path = S.default_state_path("/dev/ttyUSB0", {"HOME": "/home/pi"}, euid=0,
                                    owner=owners.get)
        self.assertTrue(path.startswith("/var/lib/smartmeter_tx/smartmeter-"), path)
        path = S.default_state_path("/dev/ttyUSB0", {"HOME": "/root"}, euid=0, owner=owners.get)
        self.assertTrue(path.startswith("/root/.local/state/smartmeter_tx/"), path)
        path = S.default_state_path("/dev/ttyUSB0", {"HOME": "/home/pi",
                                                     "MACKEREL_PLUGIN_WORKDIR": "/var/tmp/m"},
                                    euid=0, owner=owners.get)
        self.assertTrue(path.startswith("/var/tmp/m/"), path)


class OverrideTests(SynchronousTestCase):
    """
    MeterLink.with_overrides puts the command line over the saved link, and
    forget_meter drops where the meter was.
    """

    IP = "FE80:0000:0000:0000:021D:1290:1234:5678"
    OTHER_IP = "FE80:0000:0000:0000:C2F9:4500:4058:B5FB"

    def saved(self):
        return S.MeterLink(channel=0x3B, pan_id=0x8888, mac="001D129012345678", ipaddr=self.IP,
                           dialect="dse", coefficient=10, unit="0.01", digits=6, lqi=0xB2,
                           join_failures=2)

    def test_noOverrides(self):
        """No overrides give an equal copy, not the same object, that does not share changes."""
        link = self.saved()
        copy = link.with_overrides()
        self.assertEqual(copy, link)
        self.assertIsNot(copy, link)
        copy.pan_id = 1
        self.assertEqual(link.pan_id, 0x8888)

    def test_sameChannel(self):
        """The saved channel given again keeps every saved field."""
        link = self.saved()
        self.assertEqual(link.with_overrides(channel=0x3B), link)

    def test_otherChannel(self):
        """Another channel drops the meter's address, MAC, PAN ID, scale and LQI but keeps
        the dialect (a property of the module)."""
        link = self.saved()
        moved = link.with_overrides(channel=0x21)
        self.assertEqual(moved, S.MeterLink(channel=0x21, dialect="dse"))
        self.assertFalse(moved.joinable)
        self.assertEqual(link, self.saved())

    def test_channelOverEmpty(self):
        """A channel given over a link that saved none keeps the other saved fields."""
        link = S.MeterLink(dialect="standard", unit="0.1")
        self.assertEqual(link.with_overrides(channel=0x22),
                         S.MeterLink(channel=0x22, dialect="standard", unit="0.1"))

    def test_sameIpaddr(self):
        """The saved address given again keeps every saved field."""
        link = self.saved()
        self.assertEqual(link.with_overrides(ipaddr=self.IP), link)

    def test_otherIpaddr(self):
        """Another address drops PAN ID, MAC and scale, keeps the channel and the dialect."""
        moved = self.saved().with_overrides(ipaddr=self.OTHER_IP)
        self.assertEqual(moved, S.MeterLink(channel=0x3B, ipaddr=self.OTHER_IP, dialect="dse"))
        self.assertIsNone(moved.pan_id)
        self.assertIsNone(moved.mac)
        self.assertEqual((moved.coefficient, moved.unit, moved.digits), (None, None, None))

    def test_panId(self):
        """A PAN ID override replaces the saved one and keeps the rest."""
        link = self.saved()
        over = link.with_overrides(pan_id=0x1234)
        self.assertEqual(over.pan_id, 0x1234)
        self.assertEqual(over.mac, link.mac)
        self.assertEqual(over.unit, link.unit)
        self.assertEqual(S.MeterLink().with_overrides(pan_id=0).pan_id, 0)

    def test_allOverrides(self):
        """Channel, PAN ID and address all given over an empty link make it joinable."""
        link = S.MeterLink().with_overrides(0x3B, 0x8888, self.IP)
        self.assertEqual(link, S.MeterLink(channel=0x3B, pan_id=0x8888, ipaddr=self.IP))
        self.assertTrue(link.joinable)

    def test_otherChannelAndAddress(self):
        """Another channel and address with a PAN ID give just those and the dialect."""
        moved = self.saved().with_overrides(0x21, 0x1234, self.OTHER_IP)
        self.assertEqual(moved, S.MeterLink(channel=0x21, pan_id=0x1234, ipaddr=self.OTHER_IP,
                                            dialect="dse"))

    def test_forgetMeter(self):
        """forget_meter drops PAN ID, address, MAC and channel; the module's dialect stays."""
        link = self.saved()
        link.forget_meter()
        self.assertEqual((link.channel, link.pan_id, link.ipaddr, link.mac),
                         (None, None, None, None))
        self.assertEqual(link.dialect, "dse")
        self.assertFalse(link.joinable)

    def test_forgetMeterKeepChannel(self):
        """forget_meter(keep_channel=True) keeps the (pinned) channel."""
        link = self.saved()
        link.forget_meter(keep_channel=True)
        self.assertEqual(link.channel, 0x3B)
        self.assertEqual((link.pan_id, link.ipaddr, link.mac), (None, None, None))
