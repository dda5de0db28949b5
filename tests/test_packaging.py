"""
Tests of how C{twist smartmeter} is found: the Twisted plugin in the
checkout, and the wheel, built and installed into a temporary directory
(after django/daphne's C{tests/test_packaging.py}, which caught a release that
silently dropped its plugin).
"""

import email.parser
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile

from twisted.trial.unittest import SynchronousTestCase

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: What a copy of the project leaves out when it is not a git checkout.
_NOT_SOURCE = ("venv", ".venv", ".ci", ".git", ".hypothesis", "build", "dist", "_trial_temp*",
               "*.egg-info", "__pycache__", "*.pyc", "dropin.cache")


def python(code_or_args, cwd, pythonpath, timeout=60, isolated=False):
    """
    Run C{sys.executable} with C{-c code} (a str) or with the given arguments
    (a list), with C{PYTHONPATH} set to only C{pythonpath}.

    @param isolated: also pass C{-S}: no C{site}, so no site-packages (and
        none of its C{.pth} files, such as an editable install's); C{sys.path}
        is C{pythonpath} plus the standard library.  No C{PYTHON*} variable of
        ours reaches the child, and it writes no bytecode.

    @return: the C{subprocess.CompletedProcess}, output as text.
    """
    args = ["-c", code_or_args] if isinstance(code_or_args, str) else code_or_args
    if isolated:
        args = ["-S", *args]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    else:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP")}
    env["PYTHONPATH"] = pythonpath
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def source_files(root):
    """
    The project's source files under C{root}, relative: in a git checkout the
    tracked ones plus untracked ones git does not ignore (a module someone has
    just added), else every file but venvs, build output and caches.
    """
    try:
        listed = subprocess.run(
            ["git", "-C", root, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        listed = None
    if listed is not None and listed.returncode == 0 and listed.stdout:
        names = [name.decode("utf-8", "surrogateescape")
                 for name in listed.stdout.split(b"\0") if name]
        # A tracked file deleted in the working tree is not part of the source.
        return sorted(name for name in names if os.path.isfile(os.path.join(root, name)))
    names = []
    ignore = shutil.ignore_patterns(*_NOT_SOURCE)
    for directory, dirs, files in os.walk(root):
        skipped = ignore(directory, dirs + files)
        dirs[:] = [d for d in dirs if d not in skipped]
        names += [os.path.relpath(os.path.join(directory, f), root)
                  for f in files if f not in skipped]
    return sorted(names)


def copy_project(testcase):
    """
    Copy the project's source (L{source_files}) into a new directory of
    C{testcase}'s own, so that building or importing it writes nothing into
    the checkout and two runs at once cannot share a C{build/} or
    C{*.egg-info}.

    @return: the copy's absolute path.
    """
    copy = os.path.abspath(testcase.mktemp())
    names = source_files(REPO_ROOT)
    testcase.assertIn("pyproject.toml", names)
    for name in names:
        destination = os.path.join(copy, name)
        os.makedirs(os.path.dirname(destination), exist_ok=True)
        shutil.copy2(os.path.join(REPO_ROOT, name), destination)
    return copy


def _requirement_names(requires):
    """The distribution names among C{Requires-Dist} lines that no extra asks for."""
    names = []
    for line in requires or ():
        if "extra" in line.partition(";")[2]:
            continue
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", line)
        if match:
            names.append(match.group(1))
    return names


def dependency_tree(testcase, requires):
    """
    Make a directory holding only the files of the installed distributions
    named in C{requires} (C{Requires-Dist} lines) and of their dependencies,
    recursively, as symlinks to the installed files: Twisted and the rest
    without anything else installed next to them -- in particular without
    this project, when it was installed normally, whose
    C{twisted/plugins/smartmeter_plugin.py} then sits in Twisted's own folder.

    A requirement that is not installed (a marker for another Python) is left
    out; if it was needed, the import fails and says so.

    @return: the directory, for C{sys.path}.
    """
    tree = os.path.abspath(testcase.mktemp())
    os.makedirs(tree)
    todo = _requirement_names(requires)
    seen = set()
    while todo:
        name = todo.pop()
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        key = re.sub(r"[-_.]+", "-", dist.metadata["Name"]).lower()
        if key in seen:
            continue
        seen.add(key)
        if key == "smartmeter-tx":
            testcase.fail("a dependency requires smartmeter_tx itself")
        if not dist.files:
            testcase.fail(f"{name} is installed without a file list (RECORD): cannot "
                          "isolate it from the rest of site-packages")
        for f in dist.files:
            if f.parts[0] == ".." or os.path.isabs(str(f)):
                continue  # scripts and data outside site-packages
            source = os.path.abspath(str(dist.locate_file(f)))
            if not os.path.isfile(source) or f.suffix == ".pth":
                continue
            destination = os.path.join(tree, *f.parts)
            os.makedirs(os.path.dirname(destination), exist_ok=True)
            if not os.path.lexists(destination):
                os.symlink(source, destination)
        todo += _requirement_names(dist.requires)
    testcase.assertIn("twisted", seen)
    return tree


def twisted_tree(testcase):
    """L{dependency_tree} for Twisted alone."""
    return dependency_tree(testcase, ["twisted"])


class PluginLayoutTests(SynchronousTestCase):
    """
    The plugin in the source tree (a copy of the checkout, so that neither
    Twisted's C{dropin.cache} nor bytecode is written into the checkout), seen
    by an interpreter with only that copy and Twisted on its path: not an
    installed copy of the project.
    """

    def setUp(self):
        self.source = copy_project(self)
        self.path = os.pathsep.join([self.source, twisted_tree(self)])

    def test_discovered(self):
        """getPlugins(IServiceMaker) finds exactly one 'smartmeter' plugin in the checkout."""
        result = python(
            "import json, smartmeter_tx.cli.tap\n"
            "from twisted.plugin import getPlugins\n"
            "from twisted.application.service import IServiceMaker\n"
            "found = [p for p in getPlugins(IServiceMaker) if p.tapname == 'smartmeter']\n"
            "print(json.dumps([[p.tapname, p.module, p.options.__module__] for p in found]))\n"
            "print(smartmeter_tx.cli.tap.__file__)\n",
            cwd=self.source, pythonpath=self.path, isolated=True)
        self.assertEqual(result.returncode, 0, result.stderr)
        found, where = result.stdout.splitlines()
        self.assertEqual(json.loads(found),
                         [["smartmeter", "smartmeter_tx.cli.tap", "smartmeter_tx.cli.tap"]])
        self.assertTrue(where.startswith(self.source + os.sep), (where, self.source))

    def test_importLight(self):
        """Importing the plugin module imports neither the reactor nor smartmeter_tx.cli.tap."""
        result = python(
            "import twisted.plugins.smartmeter_plugin as p, sys\n"
            "print('twisted.internet.reactor' in sys.modules)\n"
            "print('smartmeter_tx.cli.tap' in sys.modules)\n"
            "print(p.__file__)\n",
            cwd=self.source, pythonpath=self.path, isolated=True)
        self.assertEqual(result.returncode, 0, result.stderr)
        reactor, tap, where = result.stdout.split()
        self.assertEqual([reactor, tap], ["False", "False"])
        self.assertEqual(where, os.path.join(self.source, "twisted", "plugins",
                                             "smartmeter_plugin.py"))

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


def wheel_installed(test) -> tuple:
    """
    Build the project's wheel from a copy of the checkout (pip writes build/
    and *.egg-info next to the source, which two builds at once or an
    install would share) and install it alone into a directory.

    @return: C{(wheel path, the directory it is installed in)}.
    """
    source = copy_project(test)
    dist = os.path.abspath(test.mktemp())
    target = os.path.abspath(test.mktemp())
    os.makedirs(dist)
    os.makedirs(target)
    built = python(["-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                    "--no-cache-dir", "--disable-pip-version-check", "-q", "-w", dist,
                    source],
                   cwd=dist, pythonpath=os.environ.get("PYTHONPATH", ""), timeout=120)
    test.assertEqual(built.returncode, 0, built.stdout + built.stderr)
    [wheel] = [os.path.join(dist, name) for name in os.listdir(dist) if name.endswith(".whl")]
    installed = python(["-m", "pip", "install", "--no-deps", "--no-index", "--no-cache-dir",
                        "--disable-pip-version-check", "-q", "--target", target, wheel],
                       cwd=dist, pythonpath="", timeout=120)
    test.assertEqual(installed.returncode, 0, installed.stdout + installed.stderr)
    return wheel, target


class WheelTests(SynchronousTestCase):
    def setUp(self):
        reason = _cannot_build_wheel()
        if reason:
            # The test extra installs 'wheel'; without it this is a broken setup,
            # not a reason to stop checking that the plugin ships.
            self.fail(reason)

    def test_wheelShipsPlugin(self):
        """The installed wheel alone makes 'twist smartmeter --help' work and lists smartmeter."""
        wheel, target = wheel_installed(self)
        with zipfile.ZipFile(wheel) as z:
            names = set(z.namelist())
            [metadata] = [n for n in names if n.endswith(".dist-info/METADATA")]
            requires = email.parser.Parser().parsestr(
                z.read(metadata).decode("utf-8")).get_all("Requires-Dist")
        self.assertIn("twisted/plugins/smartmeter_plugin.py", names)
        self.assertIn("smartmeter_tx/cli/tap.py", names)
        self.assertNotIn("twisted/__init__.py", names)
        self.assertNotIn("twisted/plugins/__init__.py", names)
        # Installing a cache would overwrite Twisted's own dropin.cache.
        self.assertNotIn("twisted/plugins/dropin.cache", names)
        self.assertIn("twisted", [n.lower() for n in _requirement_names(requires)])
        self.assertFalse(os.path.exists(os.path.join(target, "twisted", "__init__.py")))

        # A fresh interpreter without site-packages: its path is the wheel's
        # install target and what the wheel requires (Twisted and the rest),
        # nothing else -- not the checkout, and not a copy of this project
        # installed next to Twisted.
        path = os.pathsep.join([target, dependency_tree(self, requires)])
        where = python("import smartmeter_tx, twisted.plugins.smartmeter_plugin as p\n"
                       "import smartmeter_tx.cli.tap as t\n"
                       "print(smartmeter_tx.__file__)\nprint(p.__file__)\nprint(t.__file__)\n",
                       cwd=target, pythonpath=path, isolated=True)
        self.assertEqual(where.returncode, 0, where.stderr)
        self.assertEqual(len(where.stdout.split()), 3, where.stdout)
        for found in where.stdout.split():
            self.assertTrue(found.startswith(target + os.sep), (found, target))

        helped = python(["-m", "twisted", "smartmeter", "--help"], cwd=target, pythonpath=path,
                        isolated=True)
        self.assertEqual(helped.returncode, 0, helped.stdout + helped.stderr)
        self.assertIn("--device", helped.stdout)
        self.assertIn("--interval", helped.stdout)
        self.assertIn("--data-log", helped.stdout)

        listed = python(["-m", "twisted", "--help"], cwd=target, pythonpath=path, isolated=True)
        self.assertEqual(listed.returncode, 0, listed.stdout + listed.stderr)
        self.assertRegex(listed.stdout, r"(?m)^\s+smartmeter\s")


class InstalledTwistTests(SynchronousTestCase):
    def test_twistFindsThePluginAnywhere(self):
        """
        The installed project (normal or editable, as the README installs it)
        gives twist its 'smartmeter' command from any directory, with no
        PYTHONPATH: an editable install that maps only the package would
        leave twisted/plugins out, and 'twist smartmeter' unknown.
        """
        elsewhere = os.path.abspath(self.mktemp())
        os.makedirs(elsewhere)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        result = subprocess.run([sys.executable, "-m", "twisted", "smartmeter", "--help"],
                                cwd=elsewhere, env=env, capture_output=True, text=True,
                                timeout=120)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("--data-log", result.stdout)
