#!/usr/bin/env bash
# The soak with faults (issue 19): 2 agents -> 3 gateways -> store under load while gateways
# restart in turn, the gateways are down for a minute and the store is killed with SIGKILL.
# Arguments go to bench/soak.py (defaults: --minutes 30 --rate 30000 --restart-every 300
# --outage 60); it prints one JSON line and exits 1 when an acknowledged error or slow trace is
# missing, a stored trace is incomplete, or RSS grew by 10% or more.
#
#   bench/soak.sh [--minutes 30] [--rate 30000] [--restart-every 300] [--outage 60]
set -euo pipefail
exec python3 "$(dirname "$0")/soak.py" "$@"
