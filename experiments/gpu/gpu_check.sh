#!/usr/bin/env bash
# The few minutes a GPU host gives (issue 15 §4): vanilla and speculative tok/s for both Qwen models in
# bf16 (fast matmuls), the fraction of the device's read bandwidth a vanilla step reaches, fp32 parity
# with HF (precision highest), and the EasySpec and DEL rows — one bench JSON each, then one table + plot.
#
#   bash experiments/gpu/gpu_check.sh                  # on the GPU host, after `make install` and the
#                                                      # CUDA jax (README "Running on a GPU or TPU")
#   DRY=1 bash experiments/gpu/gpu_check.sh            # the same steps on CPU with SmolLM2, 1 prompt x 8 tokens
#
# Knobs: LIMIT (prompts, default 5), N (new tokens, 128), OUT (experiments/results/gpu/gpu_check_<device>), TARGET,
# DRAFT. Each bench JSON is stamped with its command line and the commit (experiments/common/results.py).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
if [[ "${DRY:-0}" == 1 ]]; then
  TARGET=${TARGET:-smollm2-135m-instruct}; DRAFT=${DRAFT:-smollm2-135m-instruct}; LIMIT=${LIMIT:-1}; N=${N:-8}
  EXIT=${EXIT:-24}; OUT=${OUT:-experiments/results/gpu/gpu_check_dry}
else
  TARGET=${TARGET:-qwen2.5-coder-1.5b-instruct}; DRAFT=${DRAFT:-qwen2.5-coder-0.5b-instruct}; LIMIT=${LIMIT:-5}
  N=${N:-128}; EXIT=${EXIT:-24}
  OUT=${OUT:-experiments/results/gpu/gpu_check_$($PY -c 'import jax; print(jax.devices()[0].device_kind.replace(" ", "_"))')}
fi
mkdir -p "$OUT"
FAST="--dtype bfloat16 --precision default --prompts humaneval --limit $LIMIT --max-new-tokens $N"
# every call ends with --json FILE: the last argument is the file to stamp
bench() {
  echo "== $1"; shift
  $PY -m jaxspec bench "$@"
  $PY -m experiments.common.results "${@: -1}" python -m jaxspec bench "$@"
}

bench "vanilla target, bf16"  --model "$TARGET" $FAST --measure-bandwidth --json "$OUT/vanilla_target.json"
bench "vanilla draft, bf16"   --model "$DRAFT" $FAST --measure-bandwidth --json "$OUT/vanilla_draft.json"
bench "vanilla target, bf16, our attention (A/B of the fused one above)" --model "$TARGET" $FAST --attention einsum \
      --measure-bandwidth --json "$OUT/vanilla_target_einsum.json"
bench "fp32 parity with HF"   --model "$TARGET" --dtype float32 --precision highest --prompts humaneval \
      --limit "$(( LIMIT < 3 ? LIMIT : 3 ))" --max-new-tokens 32 --hf-baseline --json "$OUT/parity_fp32.json"
bench "bf16 parity with HF"   --model "$TARGET" $FAST --hf-baseline --json "$OUT/parity_bf16.json"
bench "chain k=5"             --model "$TARGET" --draft "$DRAFT" --method chain -k 5 $FAST --compare-vanilla \
      --json "$OUT/chain.json"
bench "tree 5x2"              --model "$TARGET" --draft "$DRAFT" --method tree --depth 5 --width 2 $FAST \
      --compare-vanilla --json "$OUT/tree.json"
bench "easyspec tree 5x2"     --model "$TARGET" --draft "$DRAFT" --method easyspec --depth 5 --width 2 $FAST \
      --compare-vanilla --json "$OUT/easyspec.json"
bench "ls E$EXIT k=4"         --model "$TARGET" --method ls --exit-layer "$EXIT" -k 4 $FAST --compare-vanilla \
      --json "$OUT/ls.json"
bench "del (round cost measured here)" --model "$TARGET" --method del $FAST --compare-vanilla --json "$OUT/del.json"
bench "del (layer count)"     --model "$TARGET" --method del --cost layers $FAST --compare-vanilla \
      --json "$OUT/del_layers.json"
# the planner's prediction for this GPU, beside what the runs above measured: the chain's compiled loop on this
# device (exact bytes), its bandwidth roofline with the read bandwidth and the accepted length measured above
BW=$($PY -c "import json; print(json.load(open('$OUT/vanilla_target.json'))['summary']['machine_read_gb_per_s'])")
TAU=$($PY -c "import json; s=json.load(open('$OUT/chain.json'))['summary']; print(s['mean_accepted_length'])")
echo "== plan: chain k=5 on this device (bandwidth $BW GB/s, tau $TAU)"
$PY -m jaxspec plan --model "$TARGET" --draft "$DRAFT" --method chain -k 5 --local-devices 1 --dtype bfloat16 \
    --context 1024 --hbm-gb-per-s "$BW" --tau "$TAU" --json "$OUT/plan_chain.json"
# the launch-latency question: EasySpec's layer-parallel draft step (one device: the group's attention vmapped)
# against the sequential draft step, batch 1, short and long context (the child mode measures in this process)
echo "== draft step: layer-parallel vs sequential"
$PY -m experiments.easyspec.easyspec_draft_time --devices 1 --contexts 512 4096 --widths 1 4 | tail -1 \
    > "$OUT/draft_time_rows.json"
$PY -m experiments.gpu.gpu_check_table "$OUT"
