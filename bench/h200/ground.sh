# On the H200 (device tool), issue 22's ground truth in one call, highest priority first:
#  1 diagnose --json / snapshot on the fresh box
#  2 a real arch mismatch (single decode built under FLASHINFER_CUDA_ARCH_LIST=8.0, launched)
#  6 two ranks cold-starting one module: watch --pid / diagnose of the waiter, holder SIGKILLed
#  4 warmup of the default set cold (module-parallel), lower bound from its .ninja_logs
#  5 cache export of that workspace -> import + verify into a fresh one -> first calls
#  4b --sequential vs parallel on decode+FA2 (bf16, f16), if time is left
# Carry .whl (apache-tvm-ffi cp312 + pyelftools wheels, flashinfer-0.7.2.post1-site.tar.gz).
# Each step is skipped when the time left (DEADLINE s from the start) cannot hold it; what is
# done is tarred into $OUT/ground.tar.gz after every step.
DEADLINE=${DEADLINE:-500}
A=/tmp/ground
. bench/h200/_setup.sh
el() { awk "BEGIN{printf \"%.2f\", $(now)-$1}"; }
log() { echo "[$(( $(date +%s) - T0 ))s] $*" | tee -a $A/summary.txt; }
pack() { tar -czf $OUT/ground.tar.gz.tmp -C /tmp ground && mv $OUT/ground.tar.gz.tmp $OUT/ground.tar.gz; }
procs() {  # $1: file stem
  { date +%s.%N; cat /proc/locks; echo; ps -eo pid,ppid,pgid,sid,stat,etimes,rss,wchan:24,comm,args --sort=pid \
    | grep -E 'ninja|nvcc|cicc|ptxas|cudafe|cc1plus|python|PID' | grep -v grep | cut -c1-300; } > "$A/$1.txt" 2>&1
}
quiet_box() {  # wait (<= $1 s) until no compiler is left from an earlier step
  local i=0; while [ $i -lt "$1" ] && pgrep -x 'nvcc|cicc|ninja|ptxas|cudafe\+\+' >/dev/null; do sleep 1; i=$((i+1)); done
  log "box quiet after ${i}s ($(pgrep -xc 'nvcc|cicc|ninja' || true) compilers left)"
}
( while :; do echo "$(now) $(awk '/MemTotal/{t=$2}/MemAvailable/{a=$2}END{print t-a}' /proc/meminfo) $(pgrep -xc cicc) $(pgrep -xc nvcc) $(pgrep -xc ninja)"; sleep 1; done ) > $A/mem.txt 2>&1 &
MEMPID=$!
{ nvidia-smi --query-gpu=name,compute_cap,driver_version --format=csv; nvidia-smi | head -4; nproc; free -g;
  nvcc --version | tail -2; ninja --version; gcc --version | head -1;
  python3 -c 'import torch,flashinfer;print(torch.__version__,torch.version.cuda,flashinfer.__version__)';
  grep oom_kill /proc/vmstat; } > $A/box.txt 2>&1
log "setup done: $(tail -2 $A/box.txt | head -1)"

# ---- 1: the fresh box
export FLASHINFER_WORKSPACE_BASE=/tmp/ws1; mkdir -p $FLASHINFER_WORKSPACE_BASE
t=$(now); timeout -k 5 60 python3 -m fidoctor diagnose --json > $A/diag_fresh.json 2> $A/diag_fresh.err; rc=$?
log "1 diagnose --json rc=$rc $(el $t)s"
timeout -k 5 60 python3 -m fidoctor snapshot -o $A/snap_fresh.json 2>>$A/diag_fresh.err; log "1 snapshot rc=$?"
pack

# ---- 2: a real arch mismatch
export FLASHINFER_WORKSPACE_BASE=/tmp/ws2; mkdir -p $FLASHINFER_WORKSPACE_BASE
t=$(now); FLASHINFER_CUDA_ARCH_LIST=8.0 timeout -k 5 120 python3 bench/h200/arch_first_call.py \
  > $A/arch_call.json 2> $A/arch_call.err; log "2 first call under 8.0 rc=$? $(el $t)s: $(head -c 400 $A/arch_call.json)"
t=$(now); FLASHINFER_CUDA_ARCH_LIST=8.0 timeout -k 5 60 python3 -m fidoctor diagnose --json > $A/diag_arch.json 2>>$A/arch_call.err
log "2 diagnose (8.0 in env) rc=$? $(el $t)s"
t=$(now); timeout -k 5 60 python3 -m fidoctor diagnose > $A/diag_arch_noenv.txt 2>&1
log "2 diagnose (no arch list) rc=$? $(el $t)s: $(grep -E '^(ERROR|WARNING|INFO)' $A/diag_arch_noenv.txt | head -3 | tr '\n' ' ')"
FLASHINFER_CUDA_ARCH_LIST=8.0 timeout -k 5 60 python3 -m fidoctor snapshot -o $A/snap_arch.json 2>>$A/arch_call.err
find /tmp/ws2 -name build.ninja | head -2 | xargs grep -h -m3 -o 'gencode[= ][^ ]*' > $A/arch_gencode.txt 2>&1
pack

# ---- 6: two ranks on one cold module
if [ "$(left)" -gt 200 ]; then
export FLASHINFER_WORKSPACE_BASE=/tmp/ws6; mkdir -p $FLASHINFER_WORKSPACE_BASE
M=prefill-fa2:f16:128
T6=$(now); echo "t0 $T6" > $A/lock_timeline.txt
python3 bench/h200/rank.py $M > $A/rank_holder.jsonl 2> $A/rank_holder.err & H=$!
sleep 1.5
python3 bench/h200/rank.py $M > $A/rank_waiter.jsonl 2> $A/rank_waiter.err & W=$!
echo "holder $H waiter $W waiter_start $(now)" >> $A/lock_timeline.txt
timeout -k 5 150 python3 -m fidoctor watch --pid $W --events $A/watch_waiter.jsonl --progress-every 3 \
  > $A/watch_waiter.out 2> $A/watch_waiter.err & WP=$!
echo "watch_start $(now)" >> $A/lock_timeline.txt
for at in 6 9; do
  sleep $(awk "BEGIN{d=$T6+1.5+$at-$(now); print (d>0?d:0)}")
  s=$(now); timeout -k 5 30 python3 -m fidoctor diagnose --pid $W --json > $A/diag_wait_$at.json 2> $A/diag_wait_$at.err
  echo "diag_wait_$at start $s end $(now) rc $?" >> $A/lock_timeline.txt
done
procs wait_procs
s=$(now); timeout -k 5 30 python3 -m fidoctor snapshot --pid $W -o $A/snap_wait.json 2>/dev/null; echo "snap_wait start $s end $(now)" >> $A/lock_timeline.txt
kill -9 $H; K=$(now); echo "holder_killed $K" >> $A/lock_timeline.txt; log "6 holder $H SIGKILLed at +$(el $T6)s"
procs kill0_procs
for at in 2 5; do
  sleep $(awk "BEGIN{d=$K+$at-$(now); print (d>0?d:0)}")
  s=$(now); timeout -k 5 30 python3 -m fidoctor diagnose --pid $W --json > $A/diag_kill_$at.json 2> $A/diag_kill_$at.err
  echo "diag_kill_$at start $s end $(now) rc $?" >> $A/lock_timeline.txt
  timeout -k 5 30 python3 -m fidoctor diagnose > $A/diag_kill_${at}_plain.txt 2>&1
done
procs kill_procs
s=$(now); timeout -k 5 30 python3 -m fidoctor snapshot --pid $W -o $A/snap_kill.json 2>/dev/null; echo "snap_kill start $s end $(now)" >> $A/lock_timeline.txt
# the waiter builds on (it took the freed lock); the holder's orphans finish or are left
timeout 70 tail --pid=$W -f /dev/null; echo "waiter_exit $(now)" >> $A/lock_timeline.txt
kill $W 2>/dev/null; wait $W; log "6 waiter rc=$? $(tail -1 $A/rank_waiter.jsonl | head -c 200)"
sleep 2; kill $WP 2>/dev/null; wait $WP; log "6 watch rc=$?"
procs after_procs
ls -la --time-style=+%s.%N /tmp/ws6/.cache/flashinfer/*/*/cached_ops/*/ > $A/lock_moddir.txt 2>&1
timeout -k 5 30 python3 -m fidoctor diagnose > $A/diag_after6.txt 2>&1; log "6 diagnose after rc=$?"
pack
quiet_box 60
else log "6 skipped ($(left)s left)"; fi

# ---- 4: warmup of the default set, cold, module-parallel
if [ "$(left)" -gt 190 ]; then
export FLASHINFER_WORKSPACE_BASE=/tmp/ws4; mkdir -p $FLASHINFER_WORKSPACE_BASE
grep oom_kill /proc/vmstat > $A/oom_before4.txt
s=$(now); timeout -k 5 $(( $(left) - 60 )) python3 -m fidoctor warmup --json > $A/warmup_parallel.json 2> $A/warmup_parallel.err
rc=$?; e=$(now); echo "warmup_parallel start $s end $e rc $rc" >> $A/steps.txt
log "4 warmup (parallel, default set, cold) rc=$rc $(el $s)s; $(grep oom_kill /proc/vmstat)"
mkdir -p $A/ninjalog4
for d in /tmp/ws4/.cache/flashinfer/*/*/cached_ops/*/; do
  [ -f "$d/.ninja_log" ] && cp "$d/.ninja_log" "$A/ninjalog4/$(basename $d).ninja_log"; done
timeout 60 python3 bench/bench_warmup.py bounds /tmp/ws4/.cache/flashinfer/*/* --cores $(nproc) > $A/bounds4.txt 2>&1; log "4 bounds: $(tail -3 $A/bounds4.txt | tr '\n' ' ')"
pack
else log "4 skipped ($(left)s left)"; fi

# ---- 5: export -> import + verify -> first calls
if [ "$(left)" -gt 60 ] && [ -s $A/warmup_parallel.json ]; then
KEYS=decode:bf16:128,prefill-fa2:bf16:128,prefill-fa3:bf16:128,decode:f16:128,prefill-fa2:f16:128,prefill-fa3:f16:128
s=$(now); FLASHINFER_WORKSPACE_BASE=/tmp/ws4 timeout -k 5 60 python3 -m fidoctor cache export -o /tmp/bundle.tar > $A/cache_export.txt 2>&1
log "5 export rc=$? $(el $s)s $(stat -c %s /tmp/bundle.tar 2>/dev/null) bytes"
export FLASHINFER_WORKSPACE_BASE=/tmp/ws5 XDG_STATE_HOME=/tmp/state5; mkdir -p /tmp/ws5
s=$(now); timeout -k 5 60 python3 -m fidoctor cache import /tmp/bundle.tar > $A/cache_import.txt 2>&1; log "5 import rc=$? $(el $s)s"
s=$(now); timeout -k 5 90 python3 -m fidoctor cache verify --json > $A/cache_verify.json 2> $A/cache_verify.err; log "5 verify rc=$? $(el $s)s"
FC=$(cd bench && python3 -c 'from bench_cache import FIRST_CALL; print(FIRST_CALL)')
s=$(now); timeout -k 5 120 python3 -c "$FC" fidoctor/warmup/child.py $KEYS > $A/first_call.json 2> $A/first_call.err
log "5 first calls rc=$? $(el $s)s: $(tail -c 600 $A/first_call.json)"
export XDG_STATE_HOME=/tmp/state
pack
else log "5 skipped ($(left)s left)"; fi

# ---- 4b: --sequential vs parallel on decode+FA2 (bf16, f16), each cold
SUB=decode:bf16:128,prefill-fa2:bf16:128,decode:f16:128,prefill-fa2:f16:128
if [ "$(left)" -gt 150 ]; then
quiet_box 20
for how in sequential parallel; do
  [ "$(left)" -gt 45 ] || { log "4b $how skipped"; continue; }
  export FLASHINFER_WORKSPACE_BASE=/tmp/ws4$how; mkdir -p $FLASHINFER_WORKSPACE_BASE
  flag=; [ $how = sequential ] && flag=--sequential
  s=$(now); timeout -k 5 $(( $(left) - 15 )) python3 -m fidoctor warmup --modules $SUB $flag --json \
    > $A/warmup_sub_$how.json 2> $A/warmup_sub_$how.err; rc=$?
  echo "warmup_sub_$how start $s end $(now) rc $rc" >> $A/steps.txt
  log "4b warmup $how ($SUB) rc=$rc $(el $s)s"
  timeout 30 python3 bench/bench_warmup.py bounds /tmp/ws4$how/.cache/flashinfer/*/* --cores $(nproc) > $A/bounds_sub_$how.txt 2>&1
  pack
done
else log "4b skipped ($(left)s left)"; fi

kill $MEMPID 2>/dev/null
grep oom_kill /proc/vmstat >> $A/summary.txt
log "end"
pack
cat $A/summary.txt
