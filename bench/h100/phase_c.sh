# Phase C: real artifacts for tests/fixtures/real-h100/. Snapshots (fidoctor snapshot) of a
# healthy warm box, a lock wait, orphaned compilers after a SIGKILL, a stuck lock holder; the
# JIT log, tree, build.ninja heads, readelf/nm of real FA2/FA3 modules, ps + /proc/locks.
. bench/h100/setup.sh
LOCKS=$FLASHINFER_WORKSPACE_BASE/.cache/flashinfer/0.7.2.post1/90a/cached_ops/tmp
t=$(stamp)
fid warmup --modules decode:bf16:128,prefill-fa2:bf16:128,prefill-fa3:bf16:128 > $OUT/a/warmup.txt 2>&1
echo "warmup rc=$? $(el $t) s"; grep -E "done|cached" $OUT/a/warmup.txt
fid snapshot -o $OUT/a/snap_healthy.json; fid diagnose > $OUT/a/diag_healthy.txt; echo "healthy diagnose rc=$?"
python3 bench/h100/artifacts.py $OUT/a
echo "== lock wait"
fid warmup --modules decode:f16:64 > $OUT/a/lw1.txt 2>&1 & W1=$!
sleep 2
python3 -c "
import flashinfer, torch
from flashinfer.jit import gen_batch_decode_module as g
s = g(torch.float16, torch.float16, torch.float16, torch.int32, 64, 64, 0, False, False)
s.build_and_load()
print('second process loaded', s.name)" > $OUT/a/lw2.txt 2>&1 & W2=$!
sleep 8; snap_procs lockwait_procs; fid snapshot -o $OUT/a/snap_lockwait.json; fid diagnose > $OUT/a/diag_lockwait.txt
wait $W1; wait $W2; cat $OUT/a/lw2.txt | tail -2
echo "== orphans"
python3 bench/h100/first_call.py 256 > $OUT/a/first_call.txt 2>&1 & P=$!
sleep 25; kill -9 $P; sleep 3
snap_procs orphan_procs; fid snapshot -o $OUT/a/snap_orphans.json; fid diagnose > $OUT/a/diag_orphans.txt
fid report -o $OUT/a/report_orphans.md > /dev/null 2>&1; echo "report rc=$?"
fid fix --yes --no-warmup --only build-process-stuck --use terminate-build-tree > $OUT/a/fix_orphans.txt 2>&1; echo "fix rc=$?"
echo "== stuck holder"
NAME=batch_decode_with_kv_cache_dtype_q_bf16_dtype_kv_bf16_dtype_o_bf16_dtype_idx_i32_head_dim_qk_64_head_dim_vo_64_posenc_0_use_swa_False_use_logits_cap_False
python3 -c "import fcntl,sys,time; f=open(sys.argv[1],'a'); fcntl.flock(f,fcntl.LOCK_EX); time.sleep(900)" $LOCKS/$NAME.lock & H=$!
sleep 1
python3 -c "
import filelock, sys; filelock.FileLock(sys.argv[1]).acquire()" $LOCKS/$NAME.lock & WAITER=$!
sleep 3; snap_procs holder_procs; fid snapshot -o $OUT/a/snap_stuck_holder.json; fid diagnose > $OUT/a/diag_stuck_holder.txt
grep -E "^(ERROR|WARNING|INFO)" $OUT/a/diag_*.txt
kill $H $WAITER 2>/dev/null; wait 2>/dev/null
ls -la $OUT/a | head -40
tar -czf $OUT/phase_c.tar.gz -C $OUT a && rm -rf $OUT/a
