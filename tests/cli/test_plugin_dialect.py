"""
C{mackerel-plugin-smartmeter} with a dialect forced that the module does not
speak: the console entry point in a subprocess, on the built-in emulator.
"""

import os
import sys

from twisted.internet import defer, utils
from twisted.trial.unittest import TestCase

from smartmeter_tx.cli.common import EXIT_USAGE
from tests.emuloop import pinned

ENTRY = "from smartmeter_tx.cli.plugin import main; main()"


class ForcedDialectTests(TestCase):
    timeout = 60  # only catches a hang

    async def plugin(self, module, *argv):
        """@return: C{(exit status, stdout, stderr)} of one run on a C{module} emulator."""
        workdir = os.path.abspath(self.mktemp())
        os.makedirs(workdir)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SMARTMETER_")}
        env["MACKEREL_PLUGIN_WORKDIR"] = workdir
        spec = pinned(f"emulator:{module}?time-scale=0.01")
        out, err, code = await utils.getProcessOutputAndValue(
            sys.executable, ["-c", ENTRY, "--device", spec, *argv], env=env, path=workdir)
        return code, out.decode(), err.decode()

    async def _each(self):
        for module, flag, spoken in (("dse", "--dse=false", "DSE"), ("standard", "--dse",
                                                                     "standard")):
            code, out, err = await self.plugin(module, flag)
            self.assertEqual((code, out), (EXIT_USAGE, ""), err)
            forced = "standard" if spoken == "DSE" else "DSE"
            self.assertEqual(err.splitlines(), [
                f"mackerel-plugin-smartmeter: {flag}: the module rejects the commands of the "
                f"{forced} SK dialect (FAIL ER05), so it speaks the {spoken} one; leave out "
                f"{flag} and the dialect is detected"])

    def test_wrongDialectIsAUsageError(self):
        """
        --dse=false on a DSE module and --dse on a standard one: exit 2 and
        one line naming the flag given and the dialect the module speaks.
        """
        return defer.Deferred.fromCoroutine(self._each())
