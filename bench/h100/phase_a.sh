# Phase A: healthy box. diagnose fresh → warmup cold → warmup warm → diagnose → FA3 vs FA2.
. bench/h100/setup.sh
nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv > $OUT/a/gpu.txt
python3 -c 'import torch,flashinfer;print(torch.__version__,torch.version.cuda,flashinfer.__version__)' >> $OUT/a/gpu.txt 2>&1
nvcc --version | tail -2 >> $OUT/a/gpu.txt; nproc >> $OUT/a/gpu.txt; free -g >> $OUT/a/gpu.txt
t=$(stamp); fid diagnose --json > $OUT/a/diag_fresh.json; rc=$?; echo "diagnose fresh rc=$rc $(el $t) s"
t=$(stamp); fid warmup --json > $OUT/a/warmup_cold.json 2> $OUT/a/warmup_cold.err; rc=$?; echo "warmup cold rc=$rc $(el $t) s"
t=$(stamp); fid warmup --json > $OUT/a/warmup_warm.json 2> $OUT/a/warmup_warm.err; rc=$?; echo "warmup warm rc=$rc $(el $t) s"
t=$(stamp); fid diagnose --json > $OUT/a/diag_after.json; rc=$?; echo "diagnose after rc=$rc $(el $t) s"
fid diagnose > $OUT/a/diag_after.txt
python3 bench/h100/fa3_vs_fa2.py > $OUT/a/kernels.json 2> $OUT/a/kernels.err; echo "kernels rc=$?"
python3 bench/h100/artifacts.py $OUT/a
tail -3 $OUT/a/warmup_cold.err; cat $OUT/a/kernels.json | head -40
tar -czf $OUT/phase_a.tar.gz -C $OUT a && rm -rf $OUT/a
