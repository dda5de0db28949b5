"""
The flags in README.md and docs/ are the commands' own, and every option a
command offers is in the README.

Each command's options come from its own parser (what C{--help} prints);
the bench scripts' from their C{--help}.  A flag written after a command's
name in an example (a shell line, a mackerel-agent.conf C{command}) must be
one of that command's; any other flag written anywhere must be one of some
command's.  The MQTT topics' fields in the README are the payload table's.
"""

import glob
import os
import re
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from smartmeter_tx.cli import check, history, plugin, tap
from smartmeter_tx.emulator import cli as emulator_cli
from smartmeter_tx.emulator.device import OPTIONS as EMULATOR_OPTIONS
from smartmeter_tx.outputs.mqtt.payloads import FIELDS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
JAPANESE_HEADING = "## 日本語"
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
#: What separates two commands on one line of an example.
SEPARATORS = re.compile(r"\|\||&&|[|;]")
#: Flags every parser has without listing them.
IMPLICIT = {"--help"}
#: Other programs' flags the docs use, and whose they are.
FOREIGN = {"--config-settings": "pip install", "--preserve-env": "sudo",
           "--system": "useradd", "--user-group": "useradd", "--groups": "useradd",
           "--now": "systemctl enable", "--rm": "docker run", "--name": "docker run",
           "--restart": "docker run", "--group-add": "docker run", "--init": "docker run",
           "--platform": "docker buildx build", "--format": "podman build",
           "--net": "docker run", "--network": "docker run"}


def _argparse_flags(parser) -> set:
    return {s for action in parser._actions for s in action.option_strings
            if s.startswith("--")}


def _help_flags(text: str) -> set:
    """The options of a --help text: those its option lines start with."""
    flags = set()
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("-"):
            flags.update(re.findall(r"(?:^|[ ,])(--[a-z][a-z0-9-]*)", line.split("  ")[0]))
    return flags


def _usage_flags(options_class) -> set:
    return _help_flags(str(options_class()))


def _twist_own_flags() -> set:
    from twisted.application.twist._options import TwistOptions
    return _usage_flags(TwistOptions)


def _bench_flags(path: str) -> set:
    return _help_flags(subprocess.run([sys.executable, path, "--help"], capture_output=True,
                                      text=True, timeout=60, cwd=ROOT).stdout)


def command_flags() -> dict:
    """Each command's name (as the docs write it) -> the flags its --help lists."""
    commands = {
        "mackerel-plugin-smartmeter": _argparse_flags(plugin.build_parser()),
        "smartmeter-history": _argparse_flags(history.build_parser()),
        "check-smartmeter": _argparse_flags(check.build_parser()),
        "smartmeter-emulator": _argparse_flags(emulator_cli.build_parser()),
        "twist smartmeter": _usage_flags(tap.Options),
    }
    for path in sorted(glob.glob(os.path.join(ROOT, "bench", "*.py"))):
        commands["bench/" + os.path.basename(path)] = _bench_flags(path)
    return commands


def documents() -> dict:
    """README.md and docs/*.md: path -> text."""
    paths = [README] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
    texts = {}
    for path in paths:
        with open(path, encoding="utf-8") as f:
            texts[os.path.relpath(path, ROOT)] = f.read()
    return texts


def code_spans(text: str) -> list:
    """The fenced blocks (continuation lines joined) and the inline code of a Markdown text."""
    spans = []

    def fence(match):
        spans.extend(match.group(1).replace("\\\n", " ").splitlines())
        return ""
    rest = re.sub(r"^```[^\n]*\n(.*?)^```", fence, text, flags=re.M | re.S)
    spans.extend(re.findall(r"`([^`\n]+)`", rest))
    return spans


def _clean(token: str) -> str:
    return token.strip("\"',[]()")


def invocations(span: str) -> list:
    """
    C{(command, [flags])} for each command named in one line of code:
    the flags that follow its name, up to the next command.
    """
    found = []
    for part in SEPARATORS.split(span):
        tokens = [_clean(t) for t in part.split()]
        for i, token in enumerate(tokens):
            name = None
            if token == "twist" or token.endswith("/twist"):
                name = "twist"
            else:
                for command in ("mackerel-plugin-smartmeter", "smartmeter-history",
                                "check-smartmeter", "smartmeter-emulator"):
                    if token == command or token.endswith("/" + command):
                        name = command
                match = re.search(r"bench/\w+\.py$", token)
                if match:
                    name = match.group(0)
            if name is None:
                continue
            flags = [t.split("=")[0] for t in tokens[i + 1:] if FLAG.fullmatch(t.split("=")[0])]
            if name == "twist":
                # twist's own flags come before the plugin's name.
                after = tokens[i + 1:]
                if "smartmeter" not in after:
                    continue
                cut = after.index("smartmeter")
                found.append(("twist", [t for t in after[:cut] if FLAG.fullmatch(t)]))
                flags = [t.split("=")[0] for t in after[cut + 1:]
                         if FLAG.fullmatch(t.split("=")[0])]
                name = "twist smartmeter"
            found.append((name, flags))
            break
    return found


_CACHE: dict = {}


class FlagsTests(SynchronousTestCase):
    def setUp(self):
        # The bench scripts' --help runs once for the whole class.
        if not _CACHE:
            _CACHE["commands"] = dict(command_flags(), twist=_twist_own_flags())
        self.commands = _CACHE["commands"]
        self.docs = documents()

    def test_parsersFound(self):
        """Every command has options here, so the checks below check something."""
        for name, flags in self.commands.items():
            self.assertIn("--help", flags, name)
            self.assertGreater(len(flags), 1, name)
        self.assertIn("--max-age", self.commands["mackerel-plugin-smartmeter"])
        self.assertIn("--backfill-days", self.commands["twist smartmeter"])

    def test_examplesUseTheirCommandsFlags(self):
        """A flag written after a command's name is one that command takes."""
        wrong = []
        seen = 0
        for path, text in self.docs.items():
            for span in code_spans(text):
                for command, flags in invocations(span):
                    seen += 1
                    wrong += [(path, command, flag) for flag in flags
                              if flag not in self.commands[command]]
        self.assertEqual(wrong, [])
        self.assertGreater(seen, 20)

    def test_everyFlagExists(self):
        """Any flag in the docs is some command's (no stale or invented flag)."""
        known = set().union(*self.commands.values()) | set(FOREIGN)
        unknown = sorted({(path, flag) for path, text in self.docs.items()
                          for flag in FLAG.findall(text) if flag not in known})
        self.assertEqual(unknown, [])

    def test_everyOptionDocumented(self):
        """
        Every option of the product's commands is in the README, in English
        and in Japanese (an emulator knob by its flag or its spec name).
        """
        with open(README, encoding="utf-8") as f:
            text = f.read()
        english, japanese = text.split(JAPANESE_HEADING, 1)
        missing = []
        for name in ("mackerel-plugin-smartmeter", "smartmeter-history", "check-smartmeter",
                     "twist smartmeter", "smartmeter-emulator"):
            for flag in sorted(self.commands[name] - IMPLICIT - {"--version"}):
                knob = flag[2:]
                for part, where in ((english, "en"), (japanese, "ja")):
                    present = re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", part)
                    if not present and name == "smartmeter-emulator":
                        present = f"`{knob}`" in part
                    if not present:
                        missing.append((where, name, flag))
        self.assertEqual(missing, [])

    def test_emulatorKnobsAreFlags(self):
        """Each emulator knob of the spec is also a smartmeter-emulator flag."""
        flags = self.commands["smartmeter-emulator"]
        self.assertEqual(sorted(k for k in EMULATOR_OPTIONS if "--" + k not in flags), [])

    def test_invocationsParsed(self):
        """The parser of examples finds commands and their flags as written."""
        self.assertEqual(invocations("venv/bin/twist --log-format text smartmeter --device x "
                                     "--data-log=d | grep x"),
                         [("twist", ["--log-format"]),
                          ("twist smartmeter", ["--device", "--data-log"])])
        self.assertEqual(invocations('command = ["/opt/sm/bin/mackerel-plugin-smartmeter", '
                                     '"--device", "/dev/x", "--timeout", "55"]'),
                         [("mackerel-plugin-smartmeter", ["--device", "--timeout"])])
        self.assertEqual(invocations("python bench/soak.py --hours 2"),
                         [("bench/soak.py", ["--hours"])])
        self.assertEqual(invocations("ls --all"), [])


class MqttFieldsTests(SynchronousTestCase):
    def test_topicsFieldsDocumented(self):
        """
        The README lists each topic's payload fields exactly as the payload
        table has them, in English and in Japanese.
        """
        with open(README, encoding="utf-8") as f:
            text = f.read()
        english, japanese = text.split(JAPANESE_HEADING, 1)
        for part, pattern in ((english, r"`PREFIX/ID/{}` \(([^)]*)\)"),
                              (japanese, r"`PREFIX/ID/{}`（([^）]*)）")):
            for topic, fields in FIELDS.items():
                match = re.search(pattern.format(topic), part)
                self.assertIsNotNone(match, (topic, pattern))
                # The list, up to a remark after a semicolon.
                listed = [f.strip().strip("`") for f in match.group(1).split(";")[0].split(",")]
                self.assertEqual(listed, list(fields), topic)
