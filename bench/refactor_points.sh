#!/usr/bin/env bash
# One lego 200² point per method with the current presets, after the model↔file contract refactor (issue 18),
# recorded beside the figures measured before it. One job at a time (2 cores). Results:
#   bench/results/shacira_refactor.json, vqad_refactor.json, codecnerf_refactor.json (their bench scripts),
#   bench/results/lego_points/{nscodec-tensorf,ectensorf}.json (`nscodec eval` of the exported file, all 200 views).
# Usage: bash bench/refactor_points.sh [shacira vqad tensorf ectensorf codecnerf]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
DATA=../shared/data/blender/lego
OUT=bench/runs/lego_points
mkdir -p "$OUT" bench/results/lego_points
steps=${*:-shacira vqad tensorf ectensorf codecnerf}
never=100000000
common=(--data "$DATA" --pipeline.datamanager.camera-res-scale-factor 0.25 --vis tensorboard --timestamp run
        --steps-per-eval-image $never --steps-per-eval-batch $never --steps-per-eval-all-images $never)

one_run() {  # method, extra ns-train flags...
  local method=$1; shift
  local run="$OUT/$method/$method/run"
  local t0=$(date +%s)
  if [ -f "$run/train_seconds" ]; then  # trained already: reuse the run (and its measured time)
    t0=$(( t0 - $(cat "$run/train_seconds") ))
  else
    $BIN/ns-train "$method" "${common[@]}" --output-dir "$OUT" --experiment-name "$method" "$@"
    echo $(( $(date +%s) - t0 )) > "$run/train_seconds"
  fi
  local t1=$(date +%s)
  $BIN/ns-export compressed --load-config "$run/config.yml" --output-dir "$OUT/$method" --overwrite True
  $BIN/nscodec eval "$OUT/$method/scene.nsc" --data "$DATA" --scale-factor 0.25 --every 1 \
      --output "bench/results/lego_points/$method.json"
  python3 - "$method" "$((t1 - t0))" "$*" <<'PY'
import json, subprocess, sys
method, seconds, flags = sys.argv[1], int(sys.argv[2]), sys.argv[3]
p = f"bench/results/lego_points/{method}.json"
r = json.load(open(p))
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
r.update(method=method, scene="lego 200x200", train_wall_seconds=seconds, git_commit=commit,
         command=f"bash bench/refactor_points.sh ({method}: ns-train {method} {flags}; ns-export compressed; nscodec eval --every 1)")
json.dump(r, open(p, "w"), indent=2)
print(method, r["psnr"], r["bytes"], r["decode_seconds"])
PY
}

for s in $steps; do
  case $s in
    shacira) $BIN/python bench/shacira_rd.py --steps 600 --threads 1 --runs ste --name shacira_refactor ;;
    vqad) $BIN/python bench/vqad_bench.py --variants vq --name vqad_refactor ;;
    tensorf) one_run nscodec-tensorf --max-num-iterations 1800 --pipeline.model.codec-scheme fp16-zstd ;;
    tensorf-base)  # the ectensorf RD sweep's base: half-voxel steps, upsampling at 20/40/60/80% of 1,200 steps
      method_dir=nscodec-tensorf-sweepbase
      OUT_SAVE=$OUT; OUT=$OUT/$method_dir
      one_run nscodec-tensorf --max-num-iterations 1800 --pipeline.model.codec-scheme fp16-zstd \
          --pipeline.model.upsampling-iters 240 480 720 960 --pipeline.model.step-ratio 0.5
      mv bench/results/lego_points/nscodec-tensorf.json bench/results/lego_points/nscodec-tensorf-sweepbase.json
      cp bench/results/lego_points/nscodec-tensorf-default.json bench/results/lego_points/nscodec-tensorf.json 2>/dev/null || true
      OUT=$OUT_SAVE ;;
    ectensorf) one_run ectensorf ;;
    codecnerf)
      $BIN/python bench/codecnerf_table1.py --pretrain-only --corpus-scenes 48 --pretrain-minutes 15 --threads 1 --codec "$OUT/codec.cnm" --name codecnerf_refactor
      $BIN/python bench/codecnerf_table1.py --pretrain-only --pretrain-resume --corpus-scenes 48 --pretrain-minutes 20 --threads 1 --codec "$OUT/codec.cnm" --name codecnerf_refactor
      $BIN/python bench/codecnerf_table1.py --data "$DATA" --scale 0.25 --rays 1024 --checkpoints 0,2000 --every 25 --threads 1 \
          --variants peft_ec --codec "$OUT/codec.cnm" --name codecnerf_refactor ;;
    *) echo "unknown step $s" >&2; exit 2 ;;
  esac
done
