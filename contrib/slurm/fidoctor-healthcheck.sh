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
#   FIDOCTOR_TIMEOUT=30        (seconds before a hung fidoctor is given up on)
# Exit 1 drains the node with one Reason= of at most 64 characters
# (`fidoctor: cache-incomplete-module (+1 more)`), and only when fidoctor printed exactly that
# line. Everything else exits 0 and leaves the node alone: a healthy node, and a node fidoctor
# could not check (fidoctor missing, hung, crashed, or printing something else), which is said
# on stderr (slurmd's log) - a health check never drains a node for its own failure.
here=$(dirname "$0")
if [ -r "$here/fidoctor.env" ]; then
    set -a
    # shellcheck disable=SC1091  # the site's settings, written at deploy time
    . "$here/fidoctor.env"
    set +a
fi
FIDOCTOR=${FIDOCTOR:-fidoctor}
node=${SLURMD_NODENAME:-$(hostname -s)}
limit=${FIDOCTOR_TIMEOUT:-30}
# shellcheck disable=SC2086
out=$(timeout -k 5 "$limit" $FIDOCTOR diagnose --level quick --format slurm \
    --fail-on "${FIDOCTOR_FAIL_ON:-error}" $FIDOCTOR_ARGS)
rc=$?
nl='
'
case "$rc:$out" in
    *"$nl"*) ;;                     # more than one line: not fidoctor's answer
    "1:Reason=fidoctor: "?*)
        reason=${out#Reason=}
        scontrol update NodeName="$node" State=DRAIN Reason="$reason"
        echo "$out"
        exit 1 ;;
    0:) exit 0 ;;                   # healthy, or fidoctor said on stderr why it could not check
esac
case "$rc" in
    124|137) why="fidoctor did not answer within ${limit} s" ;;
    126|127) why="'$FIDOCTOR' could not be run (exit $rc)" ;;
    *) why="fidoctor exited $rc without a Reason= line" ;;
esac
echo "fidoctor-healthcheck: $node not checked ($why); the node is left alone" >&2
exit 0
