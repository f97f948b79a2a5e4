#!/bin/sh
# Slurm HealthCheckProgram (or Prolog): drain this node when FlashInfer's JIT would hang or
# fail here (a half-built module, a stuck build lock, a cache on a dead mount, ...).
#
#   slurm.conf:  HealthCheckProgram=/usr/local/sbin/fidoctor-healthcheck.sh
#                HealthCheckInterval=300
#          or:   Prolog=/usr/local/sbin/fidoctor-healthcheck.sh
#
# Slurm kills a health check after 60 s: `--level quick` reads static facts only and ends
# within 5 s even on a stalled mount. The environment of the servers (where their FlashInfer
# cache is) goes in fidoctor.env beside this script, e.g.
#   FLASHINFER_WORKSPACE_BASE=/scratch/flashinfer
#   FIDOCTOR=/opt/fidoctor/bin/fidoctor
#   FIDOCTOR_ARGS="--python /opt/venv/bin/python"
# Exit 0 leaves the node alone (also when fidoctor could not check); exit 1 drains it with
# one Reason= of at most 64 characters (`fidoctor: cache-incomplete-module (+1 more)`).
here=$(dirname "$0")
if [ -r "$here/fidoctor.env" ]; then
    set -a
    . "$here/fidoctor.env"
    set +a
fi
FIDOCTOR=${FIDOCTOR:-fidoctor}
node=${SLURMD_NODENAME:-$(hostname -s)}
# shellcheck disable=SC2086
out=$(timeout 30 $FIDOCTOR diagnose --level quick --format slurm --fail-on "${FIDOCTOR_FAIL_ON:-error}" $FIDOCTOR_ARGS)
rc=$?
if [ "$rc" -eq 1 ]; then
    reason=${out#Reason=}
    scontrol update NodeName="$node" State=DRAIN Reason="$reason"
    echo "$out"
    exit 1
fi
exit 0
