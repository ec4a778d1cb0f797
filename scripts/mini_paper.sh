#!/usr/bin/env bash
# The mini-paper: the rows of the LoRA paper's Table 3 (E2E) and Table 4 (MNLI, SAMSum) on SmolLM2-135M at CPU scale,
# one command, resumable. Configs: configs/mini/ (written by scripts/make_mini_configs.py, which states the shared budget
# and the size-scaling rule). Results: results/mini_paper/.
#
#   bash scripts/mini_paper.sh                 # everything: Table 3, then Table 4, then the figures
#   bash scripts/mini_paper.sh --table 3       # one table
#   bash scripts/mini_paper.sh --dry-run       # list every run, its state and the commands, run nothing
#   bash scripts/mini_paper.sh --commit        # git-commit results/mini_paper/ after each finished run
#   bash scripts/mini_paper.sh --search [--table 3] [--dry-run] [--commit]
#                                              # mini-paper 2's learning-rate search (configs/mini/search/tableN/):
#                                              # `lora-ft sweep --select validation_loss` per row, resumable
#
# Per run: `lora-ft config validate` (a config the CLI refuses, e.g. BitFit on bias-free SmolLM2, becomes an n/a row of
# results/mini_paper/tableN/not_applicable.tsv with the one-line reason), `lora-ft train` (--resume when checkpoints
# exist), `lora-ft eval --run`. Per table and task: the untrained base model via `lora-ft eval --config ... --base`.
# Table 4 without configs/mini/table4/wikisql_*.yaml: a `task:wikisql` line in that tsv (its tables are not offline).
# Then `lora-ft table` (markdown + LaTeX; Table 3 beside GPT-2 M's rows) and `lora-ft plot` over every table folder.
# A finished run (results.json with an evaluation) is skipped, so a rerun continues where the last one stopped.
# A failed run is reported and left alone (move it away to redo it).
set -euo pipefail
cd "$(dirname "$0")/.."

TABLES="3 4"
SEARCH=0
DRY_RUN=0
COMMIT=0
while [ $# -gt 0 ]; do
  case "$1" in
    --table) TABLES="$2"; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    --commit) COMMIT=1; shift ;;
    --search) SEARCH=1; shift ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "mini_paper.sh: unknown argument $1 (use --table 3|4, --search, --dry-run, --commit)" >&2; exit 2 ;;
  esac
done
for t in $TABLES; do
  case "$t" in 3|4) ;; *) echo "mini_paper.sh: --table takes 3 or 4, got $t" >&2; exit 2 ;; esac
done

PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY="$(command -v python3)"
LORA_FT=("$PY" -m lora_ft)
OUT=results/mini_paper
FAILED=()
# `lora-ft table` options per table (tests/report/test_mini_paper_tables.py regenerates the committed tables with these):
# Table 3 ran on SmolLM2, which Table 3 does not have, so its paper columns are GPT-2 M's rows, marked as another model.
TABLE3_OPTIONS=(--compare-with gpt2-medium)
TABLE4_OPTIONS=()
WIKISQL_REASON="tables not available offline (WikiSQL prompts are the question + the table's header, from the hub \
dataset Salesforce/wikisql); configs/wikisql_gpt3standin_*.yaml run it where the hub is reachable"

# The state of a run directory: done (evaluated), trained (to evaluate), partial (checkpoints: resume), failed, new.
run_state() {
  "$PY" - "$1" <<'PY'
import json, sys
from pathlib import Path
run = Path(sys.argv[1])
results = run / "results.json"
if not results.is_file():
    print("partial" if (run / "checkpoints").is_dir() else "new"); sys.exit()
data = json.loads(results.read_text())
if data.get("evaluations"):
    print("done")
elif data.get("status") == "failed":
    print("failed")
elif data.get("status") == "trained":
    print("trained")
else:
    print("partial" if (run / "checkpoints").is_dir() else "failed")
PY
}

commit() {
  if [ "$COMMIT" = 1 ]; then
    git add "$OUT" && git commit -q -m "mini-paper: $1" -- "$OUT" || true
  fi
}

# One line of $1/not_applicable.tsv per name, replaced on a rerun: $2 = name, $3 = config (or -), $4 = reason (empty:
# drop the line). `lora-ft table` shows it as n/a cells (lora_ft/report/not_applicable.py).
set_not_applicable() {
  local table_dir="$1" name="$2" config="$3" reason="$4" tsv="$1/not_applicable.tsv"
  [ "$DRY_RUN" = 1 ] && return 0
  [ -n "$reason" ] || [ -f "$tsv" ] || return 0
  mkdir -p "$table_dir"
  touch "$tsv"
  grep -v "^$name	" "$tsv" > "$tsv.new" || true
  [ -z "$reason" ] || printf '%s\t%s\t%s\n' "$name" "$config" "$reason" >> "$tsv.new"
  mv "$tsv.new" "$tsv"
}

run_config() {  # $1 = config file, $2 = table folder
  local config="$1" table_dir="$2" name run state start
  name="$(basename "$config" .yaml)"
  run="$table_dir/$name"
  if ! reason="$("${LORA_FT[@]}" config validate "$config" 2>&1 >/dev/null)"; then
    echo "n/a   $name: ${reason#lora-ft: }"
    set_not_applicable "$table_dir" "$name" "$config" "${reason#lora-ft: }"
    return 0
  fi
  set_not_applicable "$table_dir" "$name" "" ""  # valid now (e.g. another model): no longer n/a
  state="$(run_state "$run")"
  echo "$state $(printf '%*s' $((6 - ${#state})) '')$name: lora-ft train --config $config; lora-ft eval --run $run"
  [ "$DRY_RUN" = 1 ] && return 0
  start=$(date +%s)
  # A run that fails is reported and the table goes on (its results.json says why); a rerun of the script skips it.
  case "$state" in
    done) return 0 ;;
    failed) echo "  $run failed before (see its results.json / train.log); move it away to run it again" >&2; return 0 ;;
    new) "${LORA_FT[@]}" train --config "$config" || { echo "  $name: training failed" >&2; FAILED+=("$name"); return 0; } ;;
    partial) "${LORA_FT[@]}" train --config "$config" --resume || { echo "  $name: training failed" >&2; FAILED+=("$name"); return 0; } ;;
  esac
  "${LORA_FT[@]}" eval --run "$run" || { echo "  $name: evaluation failed" >&2; FAILED+=("$name"); return 0; }
  printf '%s\t%s\t%s\n' "$name" "$(( $(date +%s) - start ))" "$(date -u +%FT%TZ)" >> "$table_dir/run_seconds.tsv"
  commit "$name"
}

base_run() {  # $1 = a config of the task, $2 = the base run's directory: the untrained model's score
  local config="$1" run="$2"
  local state; state="$(run_state "$run")"
  echo "$state $(printf '%*s' $((6 - ${#state})) '')$(basename "$run"): lora-ft eval --config $config --base output.dir=$run"
  [ "$DRY_RUN" = 1 ] || [ "$state" = done ] && return 0
  "${LORA_FT[@]}" eval --config "$config" --base "output.dir=$run" --overwrite \
    || { echo "  $(basename "$run"): evaluation failed" >&2; FAILED+=("$(basename "$run")"); return 0; }
  commit "$(basename "$run")"
}

# Mini-paper 2's learning-rate search: each row's sweep, then its choice on the selection split (selection.json).
# A sweep skips its finished runs, so a rerun continues; a diverged rate is a finding (the worst candidate), not a stop.
if [ "$SEARCH" = 1 ]; then
  for t in $TABLES; do
    # LoRA and FT first (the rows every claim compares), then the prefix methods (PreLayer is the suspect), the rest.
    for config in $(ls configs/mini/search/table$t/*.yaml 2>/dev/null \
                    | awk '{ p = /lora/ ? 0 : /_ft/ ? 1 : /pre/ ? 2 : 3; print p "\t" $0 }' | sort | cut -f2); do
      name="$(basename "$config" .yaml)"
      search_dir="$OUT/search/table$t/$name"
      # done: chosen inside its grid, or at its edge after the sweep's own extensions (selection.py); edge: chosen at
      # the edge by a search made before grids were extended: its sweep runs again and extends the grid.
      state=new
      if [ -f "$search_dir/selection.json" ]; then
        state="$("$PY" -c 'import json, sys; r = json.load(open(sys.argv[1]))
print("edge" if r["at_edge_of_grid"] and "extended_by" not in r else "done")' "$search_dir/selection.json")"
      fi
      echo "$state $(printf '%*s' $((6 - ${#state})) '')$name: lora-ft sweep --config $config --select validation_loss"
      [ "$DRY_RUN" = 1 ] && { "${LORA_FT[@]}" sweep --config "$config" --dry-run | sed 's/^/    /'; continue; }
      [ "$state" = done ] && continue
      start=$(date +%s)
      if "${LORA_FT[@]}" sweep --config "$config" --select validation_loss; then
        printf '%s\t%s\t%s\n' "search/$name" "$(( $(date +%s) - start ))" "$(date -u +%FT%TZ)" >> "$OUT/search/run_seconds.tsv"
        commit "search $name"
      else
        echo "  $name: search failed" >&2; FAILED+=("search/$name")
      fi
    done
  done
  # The whole search, committed as a table and a figure (tests/report/test_mini_paper_tables.py regenerates the table).
  echo "search: lora-ft table --searches $OUT/search --out $OUT/search.md; lora-ft plot --kind search --runs $OUT/search --out $OUT/figures"
  if [ "$DRY_RUN" = 0 ] && compgen -G "$OUT/search/*/*/selection.json" > /dev/null; then
    "${LORA_FT[@]}" table --searches "$OUT/search" --out "$OUT/search.md" --overwrite
    "${LORA_FT[@]}" plot --kind search --runs "$OUT/search" --out "$OUT/figures"
    commit "search table and figure"
  fi
  if [ "${#FAILED[@]}" -gt 0 ]; then echo "mini_paper.sh: failed: ${FAILED[*]}" >&2; exit 1; fi
  exit 0
fi

for t in $TABLES; do
  table_dir="$OUT/table$t"
  echo "== Table $t (configs/mini/table$t/) =="
  for config in configs/mini/table$t/*.yaml; do
    run_config "$config" "$table_dir"
  done
  if [ "$t" = 3 ]; then
    base_run configs/mini/table3/e2e_lora_r4.yaml "$table_dir/base/e2e_base"
  else
    base_run configs/mini/table4/mnli_lora_r1.yaml "$table_dir/base/mnli_base"
    base_run configs/mini/table4/samsum_lora_r1.yaml "$table_dir/base/samsum_base"
    # WikiSQL's column: no mini configs (its data is on the hub only), so its cells say why, until someone adds some.
    if compgen -G "configs/mini/table4/wikisql_*.yaml" > /dev/null; then
      set_not_applicable "$table_dir" task:wikisql - ""
    else
      echo "n/a   task wikisql: $WIKISQL_REASON"
      set_not_applicable "$table_dir" task:wikisql - "$WIKISQL_REASON"
    fi
  fi
  layout="table$t"
  options_name="TABLE${t}_OPTIONS[@]"
  options=("${!options_name}")
  echo "table: lora-ft table --runs $table_dir --layout $layout ${options[*]:+${options[*]} }--format markdown|latex" \
    "--out $OUT/table$t.{md,tex}"
  if [ "$DRY_RUN" = 0 ]; then
    "${LORA_FT[@]}" table --runs "$table_dir" --layout "$layout" "${options[@]}" --format markdown --out "$OUT/table$t.md" --overwrite
    "${LORA_FT[@]}" table --runs "$table_dir" --layout "$layout" "${options[@]}" --format latex --out "$OUT/table$t.tex" --overwrite
    commit "table $t"
  fi
done

# Figure 2 from every table folder there is, whichever tables this call ran: --table 4 alone must not drop Table 3.
runs=()
for t in 3 4; do  # (a dry run also names the folders this call would make)
  if [ -d "$OUT/table$t" ] || { [ "$DRY_RUN" = 1 ] && [[ " $TABLES " == *" $t "* ]]; }; then runs+=("$OUT/table$t"); fi
done
if [ "${#runs[@]}" -gt 0 ]; then
  echo "figures: lora-ft plot --runs ${runs[*]} --out $OUT/figures --kind figure2"
  if [ "$DRY_RUN" = 0 ]; then
    "${LORA_FT[@]}" plot --runs "${runs[@]}" --out "$OUT/figures" --kind figure2
    commit "figures"
  fi
fi
if [ "${#FAILED[@]}" -gt 0 ]; then
  echo "mini_paper.sh: ${#FAILED[@]} run(s) failed: ${FAILED[*]}" >&2
  exit 1
fi
