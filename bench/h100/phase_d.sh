# Phase D: the default warmup set, cold then warm twice (one target interpreter per run).
. bench/h100/setup.sh
t=$(stamp); fid warmup --json > $OUT/a/cold.json 2> $OUT/a/cold.err; rc=$?; echo "warmup cold rc=$rc $(el $t) s"
for i in 1 2; do t=$(stamp); fid warmup --json > $OUT/a/warm$i.json 2> $OUT/a/warm$i.err; rc=$?; echo "warmup warm$i rc=$rc $(el $t) s"; done
python3 -c "
import json,sys
for f in ('cold','warm1','warm2'):
    d=json.load(open('$OUT/a/'+f+'.json'))
    print(f, d.get('seconds'), [(m['key'], m['status'], m.get('seconds'), m.get('max_jobs'), round((m.get('peak_rss') or 0)/2**30,1)) for m in d['modules']])"
t=$(stamp); fid diagnose > $OUT/a/diag.txt; rc=$?; echo "diagnose rc=$rc $(el $t) s"; tail -1 $OUT/a/diag.txt
tar -czf $OUT/phase_d.tar.gz -C $OUT a && rm -rf $OUT/a
