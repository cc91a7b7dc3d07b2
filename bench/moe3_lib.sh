# bench/moe3_lib.sh — sourced by the tinymoe-3domain quality scripts (prune_quality.sh,
# merge_quality.sh): splits each moe3-calib-<domain>.txt into calibration and evaluation parts, writes
# the mixed texts, saves calibration statistics per part, and defines kld_top1 / row for table rows.
# Expects BIN, SHARED, M (the unpruned model), WORK and CTX set by the caller.
mkdir -p "$WORK"
rm -rf "${WORK:?}"/*
DOMAINS=(stories code prose)

# split FILE OUT_CALIB OUT_EVAL: documents (each starts with <|start_story|>, after a space except the
# first) are dealt alternately: even-numbered ones calibrate, odd-numbered ones evaluate, so both halves
# sample the whole file (a first-half / second-half cut shifted the code domain's expert usage between
# the halves). Each output is written as the model was trained: later documents after one space.
split_docs() {
  python3 - "$1" "$2" "$3" <<'EOF'
import re, sys
text = open(sys.argv[1], encoding="utf-8").read()
starts = [m.start(1) for m in re.finditer(r"(?m)^ ?(<\|start_story\|>)", text)]
docs = [text[a:b].rstrip(" ") for a, b in zip(starts, starts[1:] + [len(text)])]
open(sys.argv[2], "w", encoding="utf-8").write(" ".join(docs[0::2]))
open(sys.argv[3], "w", encoding="utf-8").write(" ".join(docs[1::2]))
EOF
}
# join_docs OUT FILES...: several files' documents as one stream (a space before each later file).
join_docs() {
  local out=$1
  shift
  python3 - "$out" "$@" <<'EOF'
import sys
open(sys.argv[1], "w", encoding="utf-8").write(" ".join(open(f, encoding="utf-8").read() for f in sys.argv[2:]))
EOF
}
for d in "${DOMAINS[@]}"; do split_docs "$SHARED/data/moe3-calib-$d.txt" "$WORK/calib-$d.txt" "$WORK/eval-$d.txt"; done
join_docs "$WORK/calib-mixed.txt" "$WORK/calib-stories.txt" "$WORK/calib-code.txt" "$WORK/calib-prose.txt"
join_docs "$WORK/eval-mixed.txt" "$WORK/eval-stories.txt" "$WORK/eval-code.txt" "$WORK/eval-prose.txt"
EVALS=(stories code prose mixed)

if [ "${MOE3_STATS:-1}" = 1 ]; then
for d in stories code prose mixed; do
  "$BIN" calibrate "$M" --text "$WORK/calib-$d.txt" --ctx "$CTX" -o "$WORK/stats-$d.safetensors" >/dev/null 2>&1
done
fi

# kld_top1 OUT DOMAIN -> "kld top1" of OUT against the original model on the domain's evaluation part
kld_top1() {
  "$BIN" verify "$M" "$1" --text "$WORK/eval-$2.txt" --ctx "$CTX" --no-hidden -q --json "${@:3}" |
    python3 -c "import json,sys;j=json.load(sys.stdin);print(j['kld']['mean']['value'], j['same_top_p']['value'])"
}
# row LABEL OUT [VERIFY-ARGS]: one table row over the four evaluation texts
row() {
  local label=$1 out=$2 cells=""
  for d in "${EVALS[@]}"; do
    read -r k t < <(kld_top1 "$out" "$d" "${@:3}")
    cells+=$(printf ' %.4f / %.1f %% |' "$k" "$(python3 -c "print(100*$t)")")
  done
  echo "| $label |$cells"
}
