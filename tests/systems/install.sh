#!/usr/bin/env bash
# Install the real systems the tests use, from Debian's packages (needs root and apt):
# Slurm, Grid Engine, and coop-computing-tools' catalog_server. The tests start them
# (slurm.sh/sge.sh start) and stop nothing: they are single-node test daemons.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
"$here/slurm.sh" install
"$here/sge.sh" install
apt-get install -y -q --no-install-recommends coop-computing-tools >/dev/null
