#!/bin/sh
# How the product goes into an image, for the project's Containerfile and the
# add-on's Dockerfile alike (each copies this file into its build):
#
#   image.sh build-deps           Debian's Python and, for architectures where
#                                 PyPI has no wheel of a dependency (armv7:
#                                 cffi, zope.interface), a C compiler
#   image.sh install REQUIREMENT [PIP OPTIONS]
#                                 the product in the venv /opt/smartmeter,
#                                 without pip, setuptools or the dependencies'
#                                 own test suites
#   image.sh runtime              what the final stage needs to run it
set -eu

apt_install() {
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
    # Debian's own image is set up to keep no package lists, .debs or apt's
    # caches; a base without those settings would keep about 80 MB of them.
    apt-get clean
    rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
}

case "${1:-}" in
build-deps)
    apt_install python3 python3-venv python3-dev gcc libc6-dev libffi-dev
    ;;
install)
    shift
    python3 -m venv /opt/smartmeter
    /opt/smartmeter/bin/pip install --no-cache-dir "$@"
    /opt/smartmeter/bin/pip uninstall --yes --quiet pip setuptools
    find /opt/smartmeter/lib -depth -type d \( -name test -o -name tests \) -exec rm -r {} +
    # Twisted's plugin cache, written while the tree is still writable.
    /opt/smartmeter/bin/twist --help > /dev/null
    ;;
runtime)
    # ca-certificates: mqtts:// and https:// check against the system's CAs.
    apt_install python3 ca-certificates
    ;;
*)
    echo "usage: image.sh build-deps | install REQUIREMENT [PIP OPTIONS] | runtime" >&2
    exit 2
    ;;
esac
