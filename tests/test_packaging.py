"""
Tests of how C{twist smartmeter} is found: the Twisted plugin in the
checkout, and the wheel, built and installed into a temporary directory
(after django/daphne's C{tests/test_packaging.py}, which caught a release that
silently dropped its plugin).
"""

import importlib.util
import json
import os
import subprocess
import sys
import zipfile

from twisted.trial.unittest import SynchronousTestCase

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def python(code_or_args, cwd, pythonpath, timeout=60):
    """
    Run C{sys.executable} with C{-c code} (a str) or with the given arguments
    (a list), with C{PYTHONPATH} set to only C{pythonpath}.

    @return: the C{subprocess.CompletedProcess}, output as text.
    """
    args = ["-c", code_or_args] if isinstance(code_or_args, str) else code_or_args
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP")}
    env["PYTHONPATH"] = pythonpath
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


class PluginLayoutTests(SynchronousTestCase):
    def test_discovered(self):
        """getPlugins(IServiceMaker) finds exactly one 'smartmeter' plugin in the checkout."""
        result = python(
            "import json\n"
            "from twisted.plugin import getPlugins\n"
            "from twisted.application.service import IServiceMaker\n"
            "found = [p for p in getPlugins(IServiceMaker) if p.tapname == 'smartmeter']\n"
            "print(json.dumps([[p.tapname, p.module, p.options.__module__] for p in found]))\n",
            cwd=REPO_ROOT, pythonpath=REPO_ROOT)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(json.loads(result.stdout),
                         [["smartmeter", "smartmeter_tx.tap", "smartmeter_tx.tap"]])

    def test_importLight(self):
        """Importing the plugin module imports neither the reactor nor smartmeter_tx.tap."""
        result = python(
            "import twisted.plugins.smartmeter_plugin, sys\n"
            "print('twisted.internet.reactor' in sys.modules)\n"
            "print('smartmeter_tx.tap' in sys.modules)\n",
            cwd=REPO_ROOT, pythonpath=REPO_ROOT)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.split(), ["False", "False"])

    def test_noInitFiles(self):
        """The checkout has no __init__.py in twisted/ or twisted/plugins/."""
        self.assertTrue(os.path.isfile(
            os.path.join(REPO_ROOT, "twisted", "plugins", "smartmeter_plugin.py")))
        self.assertFalse(os.path.exists(os.path.join(REPO_ROOT, "twisted", "__init__.py")))
        self.assertFalse(os.path.exists(
            os.path.join(REPO_ROOT, "twisted", "plugins", "__init__.py")))


def _cannot_build_wheel():
    """
    Why C{pip wheel --no-build-isolation} cannot work in this Python, or C{None}.

    setuptools before 70.1 has no C{bdist_wheel} of its own: it needs the
    C{wheel} package next to it.
    """
    spec = importlib.util.find_spec("setuptools")
    if spec is None:
        return "setuptools is not installed in %s" % (sys.executable,)
    own = os.path.join(spec.submodule_search_locations[0], "command", "bdist_wheel.py")
    if not os.path.exists(own) and importlib.util.find_spec("wheel") is None:
        return ("this setuptools has no bdist_wheel and the 'wheel' package is not installed "
                "in %s: pip install wheel (or setuptools>=70.1)" % (sys.executable,))
    return None


class WheelTests(SynchronousTestCase):
    def setUp(self):
        reason = _cannot_build_wheel()
        if reason:
            # The test extra installs 'wheel'; without it this is a broken setup,
            # not a reason to stop checking that the plugin ships.
            self.fail(reason)

    def test_wheelShipsPlugin(self):
        """The installed wheel alone makes 'twist smartmeter --help' work and lists smartmeter."""
        dist = os.path.abspath(self.mktemp())
        target = os.path.abspath(self.mktemp())
        os.makedirs(dist)
        os.makedirs(target)

        built = python(["-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                        "--disable-pip-version-check", "-q", "-w", dist, REPO_ROOT],
                       cwd=dist, pythonpath=os.environ.get("PYTHONPATH", ""), timeout=120)
        self.assertEqual(built.returncode, 0, built.stdout + built.stderr)
        [wheel] = [name for name in os.listdir(dist) if name.endswith(".whl")]
        wheel = os.path.join(dist, wheel)
        with zipfile.ZipFile(wheel) as z:
            names = set(z.namelist())
        self.assertIn("twisted/plugins/smartmeter_plugin.py", names)
        self.assertIn("smartmeter_tx/tap.py", names)
        self.assertNotIn("twisted/__init__.py", names)
        self.assertNotIn("twisted/plugins/__init__.py", names)
        # Installing a cache would overwrite Twisted's own dropin.cache.
        self.assertNotIn("twisted/plugins/dropin.cache", names)

        installed = python(["-m", "pip", "install", "--no-deps", "--no-index",
                            "--disable-pip-version-check", "-q", "--target", target, wheel],
                           cwd=dist, pythonpath="", timeout=120)
        self.assertEqual(installed.returncode, 0, installed.stdout + installed.stderr)
        self.assertFalse(os.path.exists(os.path.join(target, "twisted", "__init__.py")))

        # The checkout must not be what is found: cwd and PYTHONPATH are the target.
        where = python("import smartmeter_tx, twisted.plugins.smartmeter_plugin as p\n"
                       "print(smartmeter_tx.__file__)\nprint(p.__file__)\n",
                       cwd=target, pythonpath=target)
        self.assertEqual(where.returncode, 0, where.stderr)
        for path in where.stdout.split():
            self.assertTrue(path.startswith(target + os.sep), (path, target))

        helped = python(["-m", "twisted", "smartmeter", "--help"], cwd=target, pythonpath=target)
        self.assertEqual(helped.returncode, 0, helped.stdout + helped.stderr)
        self.assertIn("--device", helped.stdout)
        self.assertIn("--interval", helped.stdout)
        self.assertIn("--data-log", helped.stdout)

        listed = python(["-m", "twisted", "--help"], cwd=target, pythonpath=target)
        self.assertEqual(listed.returncode, 0, listed.stdout + listed.stderr)
        self.assertRegex(listed.stdout, r"(?m)^\s+smartmeter\s")
