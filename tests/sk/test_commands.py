"""
Tests for L{smartmeter_tx.sk.commands}: the command builders of both
dialects against the real host lines of the captures, their argument checks,
and the helpers beside them.

C{§n} names a section of L{tests.fixtures.captures}.
"""

from twisted.trial.unittest import SynchronousTestCase

from smartmeter_tx.errors import ArgumentError, RemoteDataError, SKParseError
from smartmeter_tx.sk.commands import (
    MAX_SENDTO, Completion, channel_mask, ll64, parse_command, ropt, sk_addnbr, sk_appver, sk_info,
    sk_join, sk_ll64, sk_reset, sk_scan, sk_sendto, sk_setpwd, sk_setrbid, sk_sreg, sk_table,
    sk_term, sk_ver, wopt,
)
from smartmeter_tx.sk.values import Address, lqi_to_dbm
from tests.fixtures import captures as cap
from tests.sktesting import CRLF, DSE, MAC, METER, STD, ZERO_IP


class CommandBuilderTests(SynchronousTestCase):
    """
    The command builders produce the exact bytes real hosts wrote.
    """

    def test_standardJoinSequence(self):
        """The builders reproduce the §1 host lines of a standard join, with CRLF."""
        pairs = [
            (sk_sreg("SFE", "0"), cap.S1_SEND_SREG_SFE),
            (sk_setpwd("000000000000"), cap.S1_SEND_SETPWD),
            (sk_setrbid("0" * 32), cap.S1_SEND_SETRBID),
            (sk_scan(STD), cap.S1_SEND_SCAN),
            (sk_ll64("0000000000000000"), cap.S1_SEND_LL64),
            (sk_sreg("S2", "3B"), cap.S1_SEND_SREG_S2),
            (sk_sreg("S3", "0000"), cap.S1_SEND_SREG_S3),
            (sk_join(ZERO_IP), cap.S1_SEND_JOIN),
        ]
        for command, line in pairs:
            self.assertEqual(command.to_bytes(), line + CRLF)

    def test_dseJoinSequence(self):
        """The builders reproduce the §4 DSE command lines, with CRLF."""
        pairs = [
            (sk_ver(), cap.S4_VER_ECHO),
            (sk_setpwd("0123456789AB"), cap.S4_SETPWD_ECHO),
            (sk_setrbid("00112233445566778899AABBCCDDEEFF"), cap.S4_SETRBID_ECHO),
            (sk_sreg("S2", "31"), cap.S4_SREG_S2_ECHO),
            (sk_sreg("S3", "B5FB"), cap.S4_SREG_S3_ECHO),
            (sk_ll64(MAC), cap.S4_LL64_ECHO),
        ]
        for command, line in pairs:
            self.assertEqual(command.to_bytes(), line + CRLF)

    def test_scan(self):
        """sk_scan takes 3 arguments on a standard module and adds SIDE on DSE."""
        self.assertEqual(sk_scan(STD).to_bytes(), b"SKSCAN 2 FFFFFFFF 6\r\n")
        self.assertEqual(sk_scan(DSE).to_bytes(), b"SKSCAN 2 FFFFFFFF 6 0\r\n")
        self.assertEqual(sk_scan(STD, mask=channel_mask([0x2A]), duration=7, mode=3).to_bytes(),
                         b"SKSCAN 3 00000200 7\r\n")
        self.assertEqual(sk_scan(DSE, duration=14, mode=0).to_bytes(),
                         b"SKSCAN 0 FFFFFFFF E 0\r\n")

    def test_scanCompletion(self):
        """sk_scan completes at EVENT 22 (EVENT 1F for an ED scan) and collects EPANDESC."""
        self.assertEqual(sk_scan(STD).completion,
                         Completion(success_events=frozenset({0x22}), collect_pandesc=True))
        self.assertEqual(sk_scan(DSE, mode=0).completion.success_events, frozenset({0x1F}))

    def test_scanTimeout(self):
        """sk_scan's timeout covers the 18.0 s full DUR 6 scan seen in §1, and shrinks with
        the mask."""
        full = sk_scan(STD).timeout
        one = sk_scan(STD, mask=channel_mask([0x3B])).timeout
        self.assertTrue(18.0 < full < 60.0, full)
        self.assertTrue(one < full, (one, full))
        self.assertTrue(one > 0.624, one)

    def test_sendtoStandard(self):
        """sk_sendto on a standard module writes the §1 text, a space and the raw data,
        with no CRLF."""
        payload = bytes.fromhex("1081000105FF010288016201D300")
        data = sk_sendto(STD, ZERO_IP, payload).to_bytes()
        self.assertEqual(data, cap.S1_SEND_SENDTO_HEAD + payload)
        self.assertEqual(data, b"SKSENDTO 1 " + ZERO_IP.encode() + b" 0E1A 1 000E " + payload)
        self.assertFalse(data.endswith(CRLF))

    def test_sendtoDse(self):
        """sk_sendto on DSE adds SIDE 0 and equals the §4 echo followed by the 14 data bytes."""
        data = sk_sendto(DSE, METER, cap.S4_SENDTO_PAYLOAD).to_bytes()
        self.assertEqual(data, cap.S4_SENDTO_ECHO + cap.S4_SENDTO_PAYLOAD)
        self.assertTrue(data.endswith(b"\x62\x01\xe7\x00"))

    def test_sendtoPayloadWithCrlf(self):
        """sk_sendto writes a payload containing CR LF unchanged, counting it in LEN."""
        data = sk_sendto(STD, METER, b"\r\n\x00").to_bytes()
        self.assertEqual(data, b"SKSENDTO 1 " + METER.encode() + b" 0E1A 1 0003 \r\n\x00")

    def test_sendtoLowercaseAddress(self):
        """sk_sendto writes the address upper case."""
        data = sk_sendto(STD, METER.lower(), b"\x00").to_bytes()
        self.assertTrue(data.startswith(b"SKSENDTO 1 " + METER.encode() + b" "))

    def test_sendtoCompletion(self):
        """sk_sendto completes at OK and collects EVENT 21."""
        command = sk_sendto(DSE, METER, cap.S4_SENDTO_PAYLOAD)
        self.assertEqual(command.completion.collect_events, frozenset({0x21}))
        self.assertTrue(command.completion.ok)

    def test_sendtoMax(self):
        """sk_sendto accepts the largest payload (0x04D0 bytes) and writes LEN 04D0."""
        data = sk_sendto(STD, METER, b"\x01" * MAX_SENDTO).to_bytes()
        self.assertIn(b" 04D0 ", data)
        self.assertEqual(len(data), len(b"SKSENDTO 1 ") + 39 + len(b" 0E1A 1 04D0 ") + 0x4D0)

    def test_roptWopt(self):
        """ropt and wopt end with a bare CR, as those commands require."""
        self.assertEqual(ropt().to_bytes(), b"ROPT\r")
        self.assertEqual(wopt(1).to_bytes(), b"WOPT 01\r")
        self.assertEqual(wopt(0).to_bytes(), b"WOPT 00\r")

    def test_simple(self):
        """The argument-less builders and SKTABLE / SKADDNBR write the expected lines."""
        self.assertEqual(sk_ver().to_bytes(), b"SKVER\r\n")
        self.assertEqual(sk_appver().to_bytes(), b"SKAPPVER\r\n")
        self.assertEqual(sk_info().to_bytes(), b"SKINFO\r\n")
        self.assertEqual(sk_term().to_bytes(), b"SKTERM\r\n")
        self.assertEqual(sk_reset().to_bytes(), b"SKRESET\r\n")
        self.assertEqual(sk_table("E").to_bytes(), b"SKTABLE E\r\n")
        self.assertEqual(sk_addnbr(METER, MAC.lower()).to_bytes(),
                         b"SKADDNBR " + METER.encode() + b" " + MAC.encode() + b"\r\n")

    def test_sreg(self):
        """sk_sreg writes a read without value and upper-cases register and value."""
        self.assertEqual(sk_sreg("SFE").to_bytes(), b"SKSREG SFE\r\n")
        self.assertEqual(sk_sreg("sa2", "1").to_bytes(), b"SKSREG SA2 1\r\n")
        self.assertEqual(sk_sreg("S3", "b5fb").to_bytes(), b"SKSREG S3 B5FB\r\n")

    def test_setpwdLength(self):
        """sk_setpwd writes the password length in hex (C for 12, 20 for 32, 1 for 1)."""
        self.assertEqual(sk_setpwd("0123456789AB").args, ("C", "0123456789AB"))
        self.assertEqual(sk_setpwd("p" * 32).args[0], "20")
        self.assertEqual(sk_setpwd("p").to_bytes(), b"SKSETPWD 1 p\r\n")

    def test_setpwdRedacted(self):
        """Command.redacted hides the SKSETPWD password but keeps its length."""
        command = sk_setpwd("0123456789AB")
        self.assertEqual(command.redacted(), "SKSETPWD C <redacted>")
        self.assertNotIn("0123456789AB", command.redacted())

    def test_setrbidRedacted(self):
        """Command.redacted hides the B-route ID of SKSETRBID."""
        rbid = "00112233445566778899AABBCCDDEEFF"
        command = sk_setrbid(rbid)
        self.assertEqual(command.redacted(), "SKSETRBID <redacted>")
        self.assertIn(rbid.encode(), command.to_bytes())

    def test_sendtoRedacted(self):
        """Command.redacted shows SKSENDTO's data as hex instead of raw bytes."""
        self.assertEqual(sk_sendto(DSE, METER, cap.S4_SENDTO_PAYLOAD).redacted(),
                         "SKSENDTO 1 %s 0E1A 1 0 000E <14 bytes: 10815253"
                         "05FF010288016201E700>" % METER)

    def test_otherRedacted(self):
        """Command.redacted leaves a command without secrets unchanged."""
        self.assertEqual(sk_scan(DSE).redacted(), "SKSCAN 2 FFFFFFFF 6 0")

    def test_joinCompletion(self):
        """sk_join completes at EVENT 25, fails at EVENT 24, and allows for PANA retries."""
        command = sk_join(METER)
        self.assertEqual(command.completion.success_events, frozenset({0x25}))
        self.assertEqual(command.completion.failure_events, frozenset({0x24}))
        self.assertTrue(command.timeout >= 40.0)

    def test_ll64Completion(self):
        """sk_ll64 completes on the bare Address line, with no OK."""
        completion = sk_ll64(MAC).completion
        self.assertFalse(completion.ok)
        self.assertIs(completion.result, Address)

    def test_termCompletion(self):
        """sk_term completes at EVENT 27 or 28."""
        self.assertEqual(sk_term().completion.success_events, frozenset({0x27, 0x28}))


class ValidationTests(SynchronousTestCase):
    """
    Builders reject bad arguments with ArgumentError before anything is written.
    """

    def test_argumentErrorIsLocal(self):
        """ArgumentError is a ValueError and not a RemoteDataError."""
        self.assertTrue(issubclass(ArgumentError, ValueError))
        self.assertFalse(issubclass(ArgumentError, RemoteDataError))

    def test_rbidLength(self):
        """sk_setrbid rejects B-route IDs that are not exactly 32 printable characters."""
        for rbid in ["0" * 31, "0" * 33, "", "0" * 31 + " ", "0" * 31 + "\u00e9", None]:
            self.assertRaises(ArgumentError, sk_setrbid, rbid)

    def test_password(self):
        """sk_setpwd rejects empty, 33-character and space-containing passwords."""
        for password in ["", "p" * 33, "pass word", "pass\tword", None]:
            self.assertRaises(ArgumentError, sk_setpwd, password)

    def test_channel(self):
        """channel_mask rejects channels outside 0x21-0x3C."""
        for channel in (0x20, 0x3D, 0, -1, "2A"):
            self.assertRaises(ArgumentError, channel_mask, [channel])

    def test_pan(self):
        """sk_sreg rejects a non-hex or too long PAN ID and bad register names."""
        self.assertRaises(ArgumentError, sk_sreg, "S3", "B5FG")
        self.assertRaises(ArgumentError, sk_sreg, "S3", "")
        self.assertRaises(ArgumentError, sk_sreg, "S3", "1" * 17)
        self.assertRaises(ArgumentError, sk_sreg, "SFE0", "0")
        self.assertRaises(ArgumentError, sk_sreg, "X3", "0")

    def test_ipv6ShortForm(self):
        """sk_join, sk_sendto and sk_addnbr reject an IPv6 address in short form."""
        for address in ["FE80::C2F9:4500:4058:B5FB", "FE80:0:0:0:C2F9:4500:4058:B5FB",
                        METER + ":0000", ""]:
            self.assertRaises(ArgumentError, sk_join, address)
            self.assertRaises(ArgumentError, sk_sendto, STD, address, b"\x00")
            self.assertRaises(ArgumentError, sk_addnbr, address, MAC)

    def test_payloadSize(self):
        """sk_sendto rejects an empty payload and one longer than 0x04D0 bytes."""
        self.assertRaises(ArgumentError, sk_sendto, STD, METER, b"")
        self.assertRaises(ArgumentError, sk_sendto, DSE, METER, b"\x00" * (MAX_SENDTO + 1))
        self.assertRaises(ArgumentError, sk_sendto, STD, METER, "1081")

    def test_sendtoFields(self):
        """sk_sendto rejects a bad handle, security flag or port."""
        self.assertRaises(ArgumentError, sk_sendto, STD, METER, b"\x00", handle=0)
        self.assertRaises(ArgumentError, sk_sendto, STD, METER, b"\x00", sec=3)
        self.assertRaises(ArgumentError, sk_sendto, STD, METER, b"\x00", port=0x10000)

    def test_mac(self):
        """sk_ll64, ll64 and sk_addnbr reject a MAC that is not 16 hex digits."""
        for mac in ["0011", "00112233445566GG", "001122334455667788", "", None]:
            self.assertRaises(ArgumentError, sk_ll64, mac)
            self.assertRaises(ArgumentError, ll64, mac)
            self.assertRaises(ArgumentError, sk_addnbr, METER, mac)

    def test_scanArguments(self):
        """sk_scan rejects mode 1, an empty or too wide mask and a duration over 14."""
        self.assertRaises(ArgumentError, sk_scan, STD, mode=1)
        self.assertRaises(ArgumentError, sk_scan, STD, mask=0)
        self.assertRaises(ArgumentError, sk_scan, STD, mask=1 << 32)
        self.assertRaises(ArgumentError, sk_scan, DSE, duration=15)
        self.assertRaises(ArgumentError, sk_scan, DSE, duration=-1)

    def test_trailingNewline(self):
        """The builders reject an address, MAC, register or value ending in LF, which would
        otherwise be written into the command line."""
        self.assertRaises(ArgumentError, sk_join, METER + "\n")
        self.assertRaises(ArgumentError, sk_sendto, STD, METER + "\n", b"\x00")
        self.assertRaises(ArgumentError, sk_addnbr, METER, MAC + "\n")
        self.assertRaises(ArgumentError, sk_ll64, MAC + "\n")
        self.assertRaises(ArgumentError, sk_sreg, "SFE", "0\n")
        self.assertRaises(ArgumentError, sk_sreg, "SFE\n", "0")

    def test_misc(self):
        """wopt and sk_table reject values outside their small sets."""
        self.assertRaises(ArgumentError, wopt, 2)
        self.assertRaises(ArgumentError, sk_table, "3")


class HelperTests(SynchronousTestCase):
    """
    ll64, channel_mask, lqi_to_dbm and parse_command.
    """

    def test_ll64(self):
        """ll64 flips the universal/local bit as SKLL64 does."""
        self.assertEqual(ll64("001D129012345678"), "FE80:0000:0000:0000:021D:1290:1234:5678")
        self.assertEqual(ll64("021d129012345678"), "FE80:0000:0000:0000:001D:1290:1234:5678")
        self.assertEqual(ll64("FFFFFFFFFFFFFFFF"), "FE80:0000:0000:0000:FDFF:FFFF:FFFF:FFFF")

    def test_channelMask(self):
        """channel_mask sets bit n for channel 0x21+n."""
        self.assertEqual(channel_mask([0x2A]), 1 << 9)
        self.assertEqual(channel_mask([0x21, 0x3C]), 1 | 1 << 27)
        self.assertEqual(channel_mask(range(0x21, 0x3D)), 0x0FFFFFFF)
        self.assertEqual(channel_mask([]), 0)

    def test_lqiToDbm(self):
        """lqi_to_dbm applies 0.275 x LQI - 104.27."""
        self.assertEqual(lqi_to_dbm(0), -104.27)
        self.assertEqual(lqi_to_dbm(0x9C), -61.37)

    def test_parseCommand(self):
        """parse_command splits a host line into an upper-case name and its arguments."""
        self.assertEqual(parse_command(b"SKSCAN 2 FFFFFFFF 6 0 \r\n"),
                         ("SKSCAN", ["2", "FFFFFFFF", "6", "0"]))
        self.assertEqual(parse_command(b"skver"), ("SKVER", []))

    def test_parseCommandErrors(self):
        """parse_command raises SKParseError for an empty or non-ASCII line."""
        self.assertRaises(SKParseError, parse_command, b"")
        self.assertRaises(SKParseError, parse_command, b"  \r\n")
        self.assertRaises(SKParseError, parse_command, b"SK\xffVER")
