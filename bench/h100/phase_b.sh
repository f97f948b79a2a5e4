# Phase B: real hangs on the GPU box. 1) two warmups of one cold module (lock wait);
# 2) a server-like first call SIGKILLed mid-FA3-build (orphaned compilers), then fix;
# 3) a lock held by a process that builds nothing: warmup's stall verdict, diagnose, fix.
. bench/h100/setup.sh
LOCKS=$FLASHINFER_WORKSPACE_BASE/.cache/flashinfer/0.7.2.post1/90a/cached_ops/tmp
echo "== 1 lock wait"
t=$(stamp)
fid warmup --modules prefill-fa2:f16:64 --json > $OUT/a/lock_w1.json 2> $OUT/a/lock_w1.err & W1=$!
sleep 3
fid warmup --modules prefill-fa2:f16:64 --stall-after 20 --json > $OUT/a/lock_w2.json 2> $OUT/a/lock_w2.err & W2=$!
sleep 7; snap_procs lockwait_procs
fid diagnose --json > $OUT/a/diag_lockwait.json; fid diagnose > $OUT/a/diag_lockwait.txt
wait $W1; r1=$?; wait $W2; r2=$?; echo "w1 rc=$r1 w2 rc=$r2 after $(el $t) s"
grep -hE "done|stall|wait|lock" $OUT/a/lock_w2.err | tail -5
echo "== 2 SIGKILL mid FA3 build"
python3 bench/h100/first_call.py 256 > $OUT/a/first_call.txt 2>&1 & P=$!
sleep 25; kill -9 $P; t=$(stamp)
sleep 2; snap_procs orphan_procs
fid diagnose --json > $OUT/a/diag_orphans.json; rc=$?; fid diagnose > $OUT/a/diag_orphans.txt
echo "diagnose rc=$rc at $(el $t) s after kill"; grep -E "^(ERROR|WARNING|INFO)" $OUT/a/diag_orphans.txt
fid fix --yes --no-warmup --only build-process-stuck > $OUT/a/fix_orphans_unasked.txt 2>&1
echo "fix (not asked to end a compiling build) rc=$? at $(el $t) s; compilers: $(pgrep -c -x 'cicc|nvcc|ninja|ptxas|cudafe\+\+' || true)"
fid fix --yes --no-warmup --only build-process-stuck --use terminate-build-tree > $OUT/a/fix_orphans.txt 2>&1
echo "fix --use terminate-build-tree rc=$? at $(el $t) s"
tail -12 $OUT/a/fix_orphans.txt
sleep 1; snap_procs after_fix_procs
echo "compilers left: $(pgrep -c -x 'cicc|nvcc|ninja|ptxas|cudafe\+\+' || true)"
fid diagnose > $OUT/a/diag_after_fix.txt; echo "diagnose after fix rc=$?"; grep -E "^(ERROR|WARNING|INFO)" $OUT/a/diag_after_fix.txt
echo "== 3 stuck lock holder"
NAME=batch_decode_with_kv_cache_dtype_q_f16_dtype_kv_f16_dtype_o_f16_dtype_idx_i32_head_dim_qk_64_head_dim_vo_64_posenc_0_use_swa_False_use_logits_cap_False
mkdir -p $LOCKS
python3 -c "import fcntl,sys,time; f=open(sys.argv[1],'a'); fcntl.flock(f,fcntl.LOCK_EX); print('held',flush=True); time.sleep(900)" $LOCKS/$NAME.lock & H=$!
sleep 1; t=$(stamp)
fid warmup --modules decode:f16:64 --stall-after 15 --json > $OUT/a/stall.json 2> $OUT/a/stall.err; rc=$?
echo "warmup rc=$rc verdict after $(el $t) s"; tail -6 $OUT/a/stall.err
fid diagnose > $OUT/a/diag_stuck_holder.txt; echo "diagnose rc=$?"; grep -E "^(ERROR|WARNING|INFO)" $OUT/a/diag_stuck_holder.txt
snap_procs stuck_holder_procs
kill $H 2>/dev/null; wait $H 2>/dev/null
fid history > $OUT/a/history.txt 2>&1
tar -czf $OUT/phase_b.tar.gz -C $OUT a && rm -rf $OUT/a
