# On the H200 (device tool), issue 17's figure in one call: the default set (decode, FA2, FA3 ×
# bf16/f16, hd 128) cold, `fidoctor warmup --json` module-parallel, then `--sequential` if the
# time left (DEADLINE s from the start) can hold it. For each run: wall time, the lower bound
# and list schedule from its own .ninja_logs (+ one torch+FlashInfer import, timed here), peak
# memory used (MemTotal - MemAvailable, sampled every 0.5 s, minus the idle baseline),
# compilers at once, /proc/vmstat oom_kill before/after, stderr lines stamped with seconds since
# the run began. Carry .whl (apache-tvm-ffi cp312 + pyelftools wheels,
# flashinfer-0.7.2.post1-site.tar.gz). Everything lands in $OUT/warmup.tar.gz after each step.
DEADLINE=${DEADLINE:-570}
A=/tmp/wu
. bench/h200/_setup.sh
log() { echo "[$(( $(date +%s) - T0 ))s] $*" | tee -a $A/summary.txt; }
pack() { tar -czf $OUT/warmup.tar.gz.tmp -C /tmp wu && mv $OUT/warmup.tar.gz.tmp $OUT/warmup.tar.gz; }
stamp() { python3 -c 'import sys,time
t0=float(sys.argv[1])
for ln in sys.stdin: sys.stdout.write(f"{time.time()-t0:7.2f} {ln}"); sys.stdout.flush()' "$1"; }
( while :; do echo "$(now) $(awk '/MemTotal/{t=$2}/MemAvailable/{a=$2}END{print t-a}' /proc/meminfo) $(pgrep -xc cicc) $(pgrep -xc nvcc) $(pgrep -xc ninja) $(cut -d' ' -f1 /proc/loadavg)"; sleep 0.5; done ) > $A/mem.txt 2>&1 &
MEMPID=$!
{ nvidia-smi --query-gpu=name,compute_cap,driver_version --format=csv,noheader; nproc; free -g | head -2;
  nvcc --version | tail -1; which ninja; ninja --version; gcc --version | head -1;
  grep oom_kill /proc/vmstat; } > $A/box.txt 2>&1
s=$(now); python3 -c 'import torch, flashinfer' 2>/dev/null
IMP=$(python3 -c "print(round($(now)-$s, 2))"); echo "$IMP" > $A/import_s.txt
s=$(now); python3 -c 'import torch, flashinfer' 2>/dev/null
echo "$(python3 -c "print(round($(now)-$s, 2))") (second import)" >> $A/import_s.txt
log "setup done; ninja $(ninja --version); import torch+flashinfer $(tr '\n' ' ' < $A/import_s.txt)s"
pack

run() {  # $1: name, rest: warmup flags
  local name=$1; shift
  export FLASHINFER_WORKSPACE_BASE=/tmp/ws_$name; mkdir -p $FLASHINFER_WORKSPACE_BASE
  grep oom_kill /proc/vmstat > $A/oom_before_$name.txt
  local s; s=$(now); echo "$name start $s" >> $A/steps.txt
  timeout -k 5 $(( $(left) - 25 )) python3 -m fidoctor warmup --json "$@" \
    > $A/warmup_$name.json 2> >(stamp $s > $A/warmup_$name.err)
  local rc=$? e; e=$(now); echo "$name end $e rc $rc" >> $A/steps.txt
  sleep 1
  log "$name rc=$rc $(python3 -c "print(round($e-$s, 1))")s; $(grep oom_kill /proc/vmstat)"
  mkdir -p $A/ninjalog_$name
  for d in /tmp/ws_$name/.cache/flashinfer/*/*/cached_ops/*/; do
    [ -f "$d/.ninja_log" ] && cp "$d/.ninja_log" "$A/ninjalog_$name/$(basename $d).ninja_log"; done
  timeout 60 python3 bench/bench_warmup.py bounds /tmp/ws_$name/.cache/flashinfer/*/* \
    --cores $(nproc) --overhead $IMP > $A/bounds_$name.json 2>&1
  python3 - "$A" "$name" "$s" "$e" <<'EOF' >> $A/summary.txt
import json, sys
a, name, s, e = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
rows = [ln.split() for ln in open(f"{a}/mem.txt") if len(ln.split()) >= 6]
base = [int(r[1]) for r in rows if float(r[0]) < s] or [0]
during = [r for r in rows if s <= float(r[0]) <= e]
peak = max((int(r[1]) for r in during), default=0)
try:
    b = json.loads(open(f"{a}/bounds_{name}.json").read())
except Exception as ex:  # noqa: BLE001
    b = {"error": str(ex)}
wall = e - s
out = {"run": name, "wall_s": round(wall, 1), "bounds": b,
       "ratio_to_bound": round(wall / b["lower_bound_s"], 3) if "lower_bound_s" in b else None,
       "peak_used_gib": round(peak / 2**20, 1), "baseline_used_gib": round(base[-1] / 2**20, 1),
       "peak_over_baseline_gib": round((peak - base[-1]) / 2**20, 1),
       "max_cicc": max((int(r[2]) for r in during), default=0),
       "max_nvcc": max((int(r[3]) for r in during), default=0)}
print(json.dumps(out))
EOF
  pack
}

run parallel
tail -1 $A/summary.txt
if [ "$(left)" -gt 290 ]; then
  sleep 2; run sequential --sequential
else log "sequential skipped ($(left)s left)"; fi
kill $MEMPID 2>/dev/null
log "end; $(grep oom_kill /proc/vmstat)"
pack
