"""
The real ECHONET Lite controllers the LAN bridge's tests talk to, and where
they are:

 - C{pychonet} (the library Home Assistant's echonetlite integration uses),
   from the package index as the C{test} extra's requirement, in this venv;
 - npm's C{echonet-lite} (what echonetlite2mqtt and Node-RED's nodes build
   on), with C{date-utils}, which C{echonet-lite} 2.16 requires without
   declaring it: installed with npm into a directory cached outside the
   checkout, run with the machine's C{node}.

    python -m tests.lanclients install    # what .ci/run does first

The cache lives under L{tests.home_assistant.cache_root} (C{npm/} in
C{$XDG_CACHE_HOME/smartmeter_tx}, else C{~/.cache/smartmeter_tx}); an
install holds a lock every copy of the suite shares, and is skipped when
done.  The client scripts themselves are in C{tests/lan/}.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import time
from typing import Optional, Tuple

from tests.home_assistant import cache_root

HERE = os.path.dirname(os.path.abspath(__file__))
#: The client scripts.
SCRIPTS = os.path.join(HERE, "lan")
#: What npm installs, pinned to a release line.
NPM_PACKAGES = ("echonet-lite@~2.16.0", "date-utils@^1.2.21")
#: The cached install's directory name: a new pin gets a new directory.
NPM_DIRECTORY = "echonet-lite-2.16"
#: How long an npm install may take.
INSTALL_WITHIN = 600.0


def npm_root() -> str:
    """@return: the directory npm installs the packages into (its C{node_modules} inside)."""
    return os.path.join(cache_root(), "npm", NPM_DIRECTORY)


def _ready(root: str) -> bool:
    return os.path.exists(os.path.join(root, ".ready"))


def install_npm(say=lambda text: None) -> str:
    """
    Install the npm packages into L{npm_root}, unless they are there (under
    a lock, so that two copies of the suite do not install at once).

    @return: the C{node_modules} directory.
    @raise RuntimeError: no npm, or the install failed (npm's output said).
    """
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("no npm on PATH")
    root = npm_root()
    os.makedirs(os.path.dirname(root), exist_ok=True)
    with open(root + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _ready(root):
            started = time.monotonic()
            # Into a fresh directory renamed into place: a killed install
            # leaves nothing that looks whole.
            partial = root + ".partial"
            shutil.rmtree(partial, ignore_errors=True)
            shutil.rmtree(root, ignore_errors=True)
            os.makedirs(partial)
            argv = [npm, "install", "--prefix", partial, "--no-audit", "--no-fund",
                    "--no-package-lock", "--loglevel", "error", *NPM_PACKAGES]
            try:
                out = subprocess.run(argv, capture_output=True, text=True,
                                     timeout=INSTALL_WITHIN, cwd=partial)
            except (OSError, subprocess.SubprocessError) as e:
                raise RuntimeError(f"npm install failed: {e}") from None
            if out.returncode != 0:
                raise RuntimeError("npm install failed: " + (out.stderr or out.stdout)[-2000:])
            with open(os.path.join(partial, ".ready"), "w") as f:
                f.write(" ".join(NPM_PACKAGES) + "\n")
            os.rename(partial, root)
            say(f"npm packages {' '.join(NPM_PACKAGES)} installed in "
                f"{time.monotonic() - started:.1f} s")
    return os.path.join(root, "node_modules")


def node_modules() -> Tuple[Optional[str], Optional[str]]:
    """
    Where the installed npm packages are, for C{NODE_PATH}.

    @return: C{(path, None)}, or C{(None, why not)}: no node, or not
        installed (C{python -m tests.lanclients install}).
    """
    if shutil.which("node") is None:
        return None, "no node on PATH (Debian's nodejs package)"
    root = npm_root()
    if not _ready(root):
        return None, (f"npm's echonet-lite is not installed in {root} "
                      f"(python -m tests.lanclients install)")
    return os.path.join(root, "node_modules"), None


def pychonet_missing() -> Optional[str]:
    """@return: C{None} where pychonet imports, else why not."""
    try:
        import pychonet  # noqa: F401
    except ImportError as e:
        return f"no pychonet (pip install -e '.[test]'): {e}"
    return None


def main(argv: list) -> int:
    if argv != ["install"]:
        sys.stderr.write("usage: python -m tests.lanclients install\n")
        return 64
    missing = pychonet_missing()
    if missing:
        sys.stderr.write(missing + "\n")
        return 1
    try:
        path = install_npm(lambda text: sys.stderr.write(text + "\n"))
    except RuntimeError as e:
        sys.stderr.write(f"{e}\n")
        return 1
    print(f"ECHONET Lite clients ready: pychonet, and npm's in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
