#!/usr/bin/env bash
# Install the real systems the tests use, from Debian's packages (needs root and apt):
# Slurm, Grid Engine, coop-computing-tools (catalog_server, chirp_server, chirp_get) and
# XRootD (xrootd, xrdcp), and Chromium with its ChromeDriver (/usr/bin/chromium,
# /usr/bin/chromedriver) for the dashboard's browser test. The tests start Slurm and SGE
# (slurm.sh/sge.sh start) and stop nothing: they are single-node test daemons. The catalog,
# Chirp and XRootD servers are started and stopped by the tests that use them.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
"$here/slurm.sh" install
"$here/sge.sh" install
apt-get install -y -q --no-install-recommends coop-computing-tools xrootd-server \
    xrootd-client >/dev/null
apt-get install -y -q --no-install-recommends chromium chromium-driver >/dev/null
