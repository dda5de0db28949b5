"""
Tests for L{smartmeter_tx.state}: the state file that lets runs skip the scan.
"""

import os
import stat

from twisted.trial.unittest import SynchronousTestCase

from smartmeter_tx import state as S


class StateFileTests(SynchronousTestCase):
    def setUp(self):
        self.dir = self.mktemp()
        self.path = os.path.join(self.dir, "sub", "state.json")

    def test_round_trip(self):
        """save_state then load_state gives the same MeterLink."""
        link = S.MeterLink(channel=0x3B, pan_id=0x8888, mac="001D129012345678",
                           ipaddr="FE80:0000:0000:0000:021D:1290:1234:5678", dialect="dse",
                           coefficient=1, unit="0.01", digits=6, lqi=0xB2)
        S.save_state(self.path, link)
        self.assertEqual(S.load_state(self.path), link)
        self.assertTrue(link.joinable)

    def test_mode_0600(self):
        """The state file is created with mode 0600 and no temporary file is left."""
        S.save_state(self.path, S.MeterLink(channel=0x21))
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)
        self.assertEqual(os.listdir(os.path.dirname(self.path)), ["state.json"])

    def test_missing_or_corrupt(self):
        """A missing, corrupt or foreign state file loads as an empty MeterLink."""
        self.assertEqual(S.load_state(self.path), S.MeterLink())
        os.makedirs(os.path.dirname(self.path))
        for content in ("{not json", "[1, 2]", '{"channel": [1]}', '{"bogus": 1}'):
            with open(self.path, "w") as f:
                f.write(content)
            link = S.load_state(self.path)
            self.assertIsNone(link.channel)
            self.assertFalse(link.joinable)

    def test_no_secrets(self):
        """MeterLink has no field for the B-route ID or password."""
        names = {f for f in S.MeterLink.__dataclass_fields__}
        self.assertFalse(names & {"id", "rbid", "password"})

    def test_default_path(self):
        """default_state_path uses MACKEREL_PLUGIN_WORKDIR when set, else XDG state."""
        p = S.default_state_path("/dev/ttyUSB0", {"MACKEREL_PLUGIN_WORKDIR": "/var/tmp/m"})
        self.assertTrue(p.startswith("/var/tmp/m/smartmeter-"))
        q = S.default_state_path("/dev/ttyUSB0", {"HOME": "/home/pi"})
        self.assertTrue(q.startswith("/home/pi/.local/state/smartmeter_tx/"))
        self.assertNotEqual(S.default_state_path("/dev/ttyUSB1", {"HOME": "/h"}),
                            S.default_state_path("/dev/ttyUSB0", {"HOME": "/h"}))
