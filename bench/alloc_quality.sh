#!/usr/bin/env bash
# bench/alloc_quality.sh — the mixed-precision tables of docs/quantize.md: GPTQ `--bpw B --bpw-all`
# (end-to-end KLD sensitivity, checked against uniform widths) at budgets 3 … 6 and at the exact sizes
# of uniform int3 and int4, beside uniform int2/3/4/8 (all g128, GPTQ), on two MoEs:
#   tinymoe-3domain: calibrated on the calibration half of the three domains mixed (bench/moe3_lib.sh's
#     document split), evaluated on each domain's held-out half and on their mix;
#   TinyStories-656K factorized to 8 experts, top-2 (`convert factorize --router fit`): calibrated on
#     the first half of tinystories-calib.txt, evaluated on the second half.
# Each row: bits per weight over every quantizable linear (what the file stores for them, packed or
# kept float, over their weights) and, per evaluation text, mean KLD / same
# top-1 against the unquantized model; the last column says whether the row's KLD is below the best
# uniform width of at most its size on every evaluation text.
# Usage: [MODELS="tinymoe fact"] [BUDGETS="3.0 … 6.0"] bench/alloc_quality.sh [WORKDIR] (default
# build/alloc-quality); prints Markdown (~1–2 minutes per row on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${MOETOOL_BIN:-build/moetool}
SHARED=${MOETOOL_SHARED:-../shared}
M=$SHARED/models/tinymoe-3domain
WORK=${1:-build/alloc-quality}
CTX=${CTX:-256}
CHUNKS=${CHUNKS:-64}
BUDGETS=${BUDGETS:-3.0 3.5 4.0 4.5 5.0 5.5 6.0}
MODELS=${MODELS:-tinymoe fact}
read -r -a QARGS <<<"${QARGS:-}"  # extra quantize arguments for every row (e.g. --method rtn)
MOE3_STATS=0
# shellcheck source=bench/moe3_lib.sh
source bench/moe3_lib.sh

# tinystories split for the factorized model
lines=$(wc -l <"$SHARED/data/tinystories-calib.txt")
head -n $((lines / 2)) "$SHARED/data/tinystories-calib.txt" >"$WORK/calib-ts.txt"
tail -n +$((lines / 2 + 1)) "$SHARED/data/tinystories-calib.txt" >"$WORK/eval-ts.txt"
"$BIN" convert factorize "$SHARED/models/tinystories-656k" -o "$WORK/fact" --to mixtral --experts 8 --top-k 2 \
  --router fit --calib-text "$WORK/calib-ts.txt" --ctx "$CTX" -q >/dev/null

# run MODEL CALIB EVALS LABEL ARGS... -> one JSON line {label, bpw, evals: {name: [kld, top1]}}
run() {
  local model=$1 calib=$2 evals=$3 label=$4 out="$WORK/q"
  shift 4
  rm -rf "$out"
  if ! "$BIN" quantize "$model" -o "$out" --format gptq --calib-text "$calib" --ctx "$CTX" --chunks "$CHUNKS" \
    "$@" ${QARGS[@]+"${QARGS[@]}"} --json -q --force >"$WORK/q.json" 2>"$WORK/q.err"; then
    echo "{\"label\": \"$label\", \"error\": $(python3 -c 'import json,sys;print(json.dumps(open(sys.argv[1]).read().strip().splitlines()[-1]))' "$WORK/q.err")}"
    return
  fi
  local cells=""
  for d in $evals; do
    j=$("$BIN" verify "$model" "$out" --text "$WORK/eval-$d.txt" --ctx "$CTX" --no-hidden -q --json)
    cells+="\"$d\": [$(echo "$j" | python3 -c "import json,sys;j=json.load(sys.stdin);print(j['kld']['mean']['value'], ',', j['same_top_p']['value'])")],"
  done
  python3 - "$label" "$WORK/q.json" "{${cells%,}}" "$model" "$out" <<'EOF'
import glob, json, os, struct, sys
# bpw over every quantizable linear: all bytes the output stores for those modules (packed or kept
# float, e.g. 48-row experts that 3-bit packing does not fit) over the source's weights of them.
def header(d):
    h = {}
    for f in glob.glob(os.path.join(d, "*.safetensors")):
        with open(f, "rb") as fh:
            n = struct.unpack("<Q", fh.read(8))[0]
            h.update({k: v for k, v in json.loads(fh.read(n)).items() if k != "__metadata__"})
    return h
q = json.load(open(sys.argv[2]))
src, out = header(sys.argv[4]), header(sys.argv[5])
mods = {l["module"] for l in q["linears"]}
nbytes = sum(v["data_offsets"][1] - v["data_offsets"][0] for k, v in out.items() if k.rsplit(".", 1)[0] in mods)
params = sum(v["shape"][0] * v["shape"][1] for k, v in src.items() if k.endswith(".weight") and k[:-7] in mods)
a = q.get("allocation", {})
print(json.dumps({"label": sys.argv[1], "bpw": 8 * nbytes / params, "evals": json.loads(sys.argv[3]),
                  "used": a.get("used", ""), "seconds": q["seconds"]}))
EOF
}

model_rows() {  # model_rows MODEL CALIB "EVALS" -> JSON lines
  local model=$1 calib=$2 evals=$3
  for b in 2 3 4 8; do run "$model" "$calib" "$evals" "uniform int$b" --bits "$b"; done >"$WORK/uniform.jsonl"
  cat "$WORK/uniform.jsonl"
  local sizes
  sizes=$(python3 -c "
import json
for l in open('$WORK/uniform.jsonl'):
    r = json.loads(l)
    # (a uniform width that keeps some linears float, e.g. int3 on 48-row experts, can exceed 16 bpw)
    if r['label'] in ('uniform int3', 'uniform int4') and r['bpw'] <= 16: print('%.4f' % (r['bpw'] - 5e-5))")
  for b in $BUDGETS $sizes; do run "$model" "$calib" "$evals" "--bpw $b" --bpw "$b" --bpw-all; done
}

table() {  # table TITLE "EVALS" JSONL-FILE
  python3 - "$1" "$2" "$3" <<'EOF'
import json, sys
title, evals = sys.argv[1], sys.argv[2].split()
rows = [json.loads(l) for l in open(sys.argv[3]) if l.strip()]
uni = [r for r in rows if r["label"].startswith("uniform") and "error" not in r]
print(f"\n#### {title}\n")
print("| mode | bpw (linears) | " + " | ".join(f"{e} KLD / top-1" for e in evals) + " | below best uniform ≤ size |")
print("|---|---|" + "---|" * len(evals) + "---|")
for r in rows:
    if "error" in r:
        print(f"| {r['label']} | — | not possible: {r['error']} |" + " |" * len(evals))
        continue
    cells = " | ".join(f"{r['evals'][e][0]:.4f} / {100 * r['evals'][e][1]:.1f} %" for e in evals)
    verdict = ""
    if not r["label"].startswith("uniform"):
        fit = [u for u in uni if u["bpw"] <= r["bpw"] + 1e-9]
        if fit:
            ok = all(r["evals"][e][0] < min(u["evals"][e][0] for u in fit) for e in evals)
            best = min(fit, key=lambda u: u["bpw"] * 0 + sum(u["evals"][e][0] for e in evals))
            verdict = ("yes" if ok else "**no**") + f" (vs {best['label']})"
        if r.get("used") and r["used"] != "allocation":
            verdict += f"; check used {r['used']}"
    print(f"| {r['label']} | {r['bpw']:.3f} | {cells} | {verdict} |")
EOF
}

echo "GPTQ g128 (unless the extra arguments say otherwise), calibration --ctx $CTX --chunks $CHUNKS; --bpw rows: --bpw-all, --sensitivity kld (default); extra quantize arguments: ${QARGS[*]:-none}."
if [[ " $MODELS " == *" tinymoe "* ]]; then
  model_rows "$M" "$WORK/calib-mixed.txt" "stories code prose mixed" >"$WORK/rows-tinymoe.jsonl"
  table "tinymoe-3domain" "stories code prose mixed" "$WORK/rows-tinymoe.jsonl"
fi
if [[ " $MODELS " == *" fact "* ]]; then
  model_rows "$WORK/fact" "$WORK/calib-ts.txt" "ts" >"$WORK/rows-fact.jsonl"
  table "TinyStories-656K factorized (8 experts, top-2)" "ts" "$WORK/rows-fact.jsonl"
fi
