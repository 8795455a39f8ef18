#!/usr/bin/env bash
# Run the official MCP conformance suite's server scenarios against an endpoint.
#
#   tests/interop/conformance.sh [--next] [--spec-version V | --requirements V]
#                                [--scenario NAME]... [--force] URL OUTDIR [EXPECTED_FAILURES_YML]
#
# URL is a Streamable HTTP endpoint (http://127.0.0.1:PORT/mcp). Results go to OUTDIR: one
# server-<scenario>-<time>/checks.json per scenario (earlier ones there are removed first) and
# the suite's console output in OUTDIR/console.log. Prints one line per scenario,
# `PASS name` or `FAIL name: why`, then `conformance: N passed, M failed`, and exits with the
# suite's exit code: 1 if any scenario failed, or, given EXPECTED_FAILURES_YML (the suite's
# baseline format: `server:` followed by `- scenario-name` lines), 1 if any scenario failed
# that is not listed or a listed one passed. The baseline counts warnings as failures.
#
# Options:
#   --next                 run the pre-release suite (0.2.0 alpha, knows spec 2026-07-28)
#                          instead of the stable one (0.1.16, up to 2025-11-25)
#   --spec-version V       the scenarios of spec revision V and earlier, run at V's wire
#                          (default 2025-11-25; 2026-07-28 needs --next)
#   --requirements V       exactly the scenarios revision V requires (--next only; the suite
#                          runs them at V's wire and ignores --suite); not with --scenario.
#                          The suite also runs the scenarios it does not score for V
#                          (extensions, pending); their lines say `not scored (why)` and they
#                          are counted apart, as they do not change the suite's verdict.
#   --scenario NAME        run this scenario instead of a suite; repeat it for several, one
#                          suite run each. A NAME with `*` picks every server scenario the
#                          suite lists that matches it (`--scenario 'tasks-*'`)
#   --force                run the named scenarios even where the suite says they do not apply
#                          at the spec version: extension scenarios (the Tasks extension's
#                          `tasks-*`) are on no spec timeline, so they need it. Run this way
#                          they are scored like any other scenario
#
# Environment:
#   TOOLGATE_NODE                 Node >= 22 (default: .peers/bin/node from scripts/setup-peers)
#   TOOLGATE_CONFORMANCE          the stable suite's dist/index.js (default under .peers/npm/)
#   TOOLGATE_CONFORMANCE_NEXT     the pre-release suite's dist/index.js (default under .peers/npm-next/)
#   TOOLGATE_CONFORMANCE_SUITE_JS run this dist/index.js, whatever --next says
#   TOOLGATE_CONFORMANCE_SUITE    all (default), active or pending
#   TOOLGATE_CONFORMANCE_SCENARIO run this one scenario instead of a suite (as --scenario)
#   TOOLGATE_CONFORMANCE_TIMEOUT  seconds before one suite run is stopped (default 300)
set -euo pipefail

die() { printf 'conformance.sh: %s\n' "$*" >&2; exit 2; }
usage="usage: tests/interop/conformance.sh [--next] [--spec-version V | --requirements V] [--scenario NAME]... [--force] URL OUTDIR [EXPECTED_FAILURES_YML]"

NEXT=0
SPEC_VERSION=""
REQUIREMENTS=""
FORCE=0
SCENARIOS=()
[[ -n "${TOOLGATE_CONFORMANCE_SCENARIO:-}" ]] && SCENARIOS+=("$TOOLGATE_CONFORMANCE_SCENARIO")
positional=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --next) NEXT=1; shift ;;
        --spec-version) [[ $# -ge 2 ]] || die "$usage"; SPEC_VERSION="$2"; shift 2 ;;
        --spec-version=*) SPEC_VERSION="${1#*=}"; shift ;;
        --requirements) [[ $# -ge 2 ]] || die "$usage"; REQUIREMENTS="$2"; shift 2 ;;
        --requirements=*) REQUIREMENTS="${1#*=}"; shift ;;
        --scenario) [[ $# -ge 2 ]] || die "$usage"; SCENARIOS+=("$2"); shift 2 ;;
        --scenario=*) SCENARIOS+=("${1#*=}"); shift ;;
        --force) FORCE=1; shift ;;
        -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        --) shift; positional+=("$@"); break ;;
        -*) die "unknown option $1; $usage" ;;
        *) positional+=("$1"); shift ;;
    esac
done
[[ ${#positional[@]} -ge 2 && ${#positional[@]} -le 3 ]] || die "$usage"
URL="${positional[0]}"
OUTDIR="${positional[1]}"
BASELINE="${positional[2]:-}"
[[ -n "$SPEC_VERSION" && -n "$REQUIREMENTS" ]] && die "--spec-version and --requirements exclude each other"
[[ ${#SCENARIOS[@]} -gt 0 && -n "$REQUIREMENTS" ]] && die "--requirements runs a fixed set of scenarios; use --spec-version with --scenario"
[[ $FORCE -eq 1 && ${#SCENARIOS[@]} -eq 0 ]] && die "--force applies to named scenarios; add --scenario"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PEERS="$ROOT/.peers"
NODE="${TOOLGATE_NODE:-$PEERS/bin/node}"
if [[ -n "${TOOLGATE_CONFORMANCE_SUITE_JS:-}" ]]; then
    CONFORMANCE="$TOOLGATE_CONFORMANCE_SUITE_JS"
elif [[ $NEXT -eq 1 ]]; then
    CONFORMANCE="${TOOLGATE_CONFORMANCE_NEXT:-$PEERS/npm-next/node_modules/@modelcontextprotocol/conformance/dist/index.js}"
else
    CONFORMANCE="${TOOLGATE_CONFORMANCE:-$PEERS/npm/node_modules/@modelcontextprotocol/conformance/dist/index.js}"
fi
SUITE="${TOOLGATE_CONFORMANCE_SUITE:-all}"
TIMEOUT="${TOOLGATE_CONFORMANCE_TIMEOUT:-300}"
[[ -z "$SPEC_VERSION" && -z "$REQUIREMENTS" ]] && SPEC_VERSION=2025-11-25

[[ -x "$NODE" ]] || die "no Node.js at $NODE: run scripts/setup-peers (or set TOOLGATE_NODE)"
[[ -f "$CONFORMANCE" ]] || die "no conformance suite at $CONFORMANCE: run scripts/setup-peers (or set TOOLGATE_CONFORMANCE, TOOLGATE_CONFORMANCE_NEXT or TOOLGATE_CONFORMANCE_SUITE_JS)"
SUITE_VERSION="$("$NODE" "$CONFORMANCE" --version)"
if [[ "$SUITE_VERSION" == 0.1.* ]]; then
    [[ -n "$REQUIREMENTS" ]] && die "conformance $SUITE_VERSION has no --requirements: add --next"
    [[ "$SPEC_VERSION" > 2025-11-25 ]] && die "conformance $SUITE_VERSION tests up to spec 2025-11-25, not $SPEC_VERSION: add --next"
fi
if [[ -n "$BASELINE" ]]; then
    [[ -f "$BASELINE" ]] || die "no expected-failures file $BASELINE"
    BASELINE="$(cd "$(dirname "$BASELINE")" && pwd)/$(basename "$BASELINE")"
fi

mkdir -p "$OUTDIR"
OUTDIR="$(cd "$OUTDIR" && pwd)"
rm -rf "$OUTDIR"/server-*/ "$OUTDIR/console.log"

# Patterns name every matching scenario the suite lists (in its order).
if [[ "${SCENARIOS[*]}" == *"*"* ]]; then
    listed=$("$NODE" "$CONFORMANCE" list --server | sed -n 's/^ *- \([^ ]*\).*/\1/p')
    picked=()
    for pattern in "${SCENARIOS[@]}"; do
        if [[ "$pattern" != *"*"* ]]; then picked+=("$pattern"); continue; fi
        matched=0
        for name in $listed; do
            # Unquoted on purpose: the pattern is a glob.
            # shellcheck disable=SC2053
            if [[ "$name" == $pattern ]]; then picked+=("$name"); matched=1; fi
        done
        [[ $matched -eq 1 ]] || die "no server scenario of conformance $SUITE_VERSION matches $pattern"
    done
    SCENARIOS=("${picked[@]}")
fi

common=(server --url "$URL" -o "$OUTDIR")
[[ -n "$BASELINE" ]] && common+=(--expected-failures "$BASELINE")
if [[ -n "$REQUIREMENTS" ]]; then
    what="requirements $REQUIREMENTS"
elif [[ ${#SCENARIOS[@]} -gt 0 ]]; then
    what="${SCENARIOS[*]} at spec $SPEC_VERSION"
    [[ $FORCE -eq 1 ]] && what="$what, forced"
else
    what="suite $SUITE at spec $SPEC_VERSION"
fi

# One suite run; its output is added to console.log. Returns the suite's exit code.
run_suite() {
    local rc=0
    timeout --kill-after=10 "$TIMEOUT" "$NODE" "$CONFORMANCE" "${common[@]}" "$@" >>"$OUTDIR/console.log" 2>&1 || rc=$?
    if [[ $rc -eq 124 || $rc -eq 137 ]]; then
        echo "conformance: a suite run did not finish within ${TIMEOUT}s (TOOLGATE_CONFORMANCE_TIMEOUT)" >&2
    fi
    return "$rc"
}

echo "conformance: $SUITE_VERSION against $URL ($what); results in $OUTDIR"
status=0
if [[ -n "$REQUIREMENTS" ]]; then
    run_suite --requirements "$REQUIREMENTS" || status=$?
elif [[ ${#SCENARIOS[@]} -gt 0 ]]; then
    force=()
    [[ $FORCE -eq 1 ]] && force=(--force)
    for scenario in "${SCENARIOS[@]}"; do
        rc=0
        run_suite --spec-version "$SPEC_VERSION" --scenario "$scenario" "${force[@]}" || rc=$?
        [[ $status -eq 0 ]] && status=$rc
    done
else
    run_suite --spec-version "$SPEC_VERSION" --suite "$SUITE" || status=$?
fi

# One line per scenario from the checks.json files, in the order the scenarios ran.
"$NODE" - "$OUTDIR" "$BASELINE" <<'EOF'
const fs = require("fs");
const path = require("path");
const [outdir, baselineFile] = process.argv.slice(2);

const expected = new Set();
if (baselineFile) {
  let key = null;
  for (const line of fs.readFileSync(baselineFile, "utf8").split("\n")) {
    const top = line.match(/^([A-Za-z_-]+):/);
    if (top) { key = top[1]; continue; }
    const item = line.match(/^\s*-\s*["']?([^"'#\s]+)["']?/);
    if (item && key === "server") expected.add(item[1]);
  }
}

// With --requirements the suite also runs scenarios it does not score (extensions, pending ones,
// ones added after the release) and lists them after its summary; they do not change its verdict.
const notScored = new Map();
try {
  const log = fs.readFileSync(path.join(outdir, "console.log"), "utf8").replace(/\x1b\[[0-9;]*m/g, "");
  const block = log.split(/^Not scored for /m)[1];
  if (block) {
    for (const line of block.split("\n").slice(1)) {
      const m = line.match(/^\s+[✓✗]\s+(\S+)\s+\(([^)]+)\)\s*$/);
      if (m) notScored.set(m[1], m[2]);
      else if (line.trim() !== "") break;
    }
  }
} catch {}

const stamp = /-(\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d{3}Z)$/;
const runs = fs.readdirSync(outdir)
  .filter((d) => d.startsWith("server-") && stamp.test(d) && fs.existsSync(path.join(outdir, d, "checks.json")))
  .map((d) => ({ dir: d, name: d.slice("server-".length).replace(stamp, ""), time: d.match(stamp)[1] }))
  .sort((a, b) => (a.time < b.time ? -1 : a.time > b.time ? 1 : 0));

let passed = 0, failed = 0, unscoredPassed = 0, unscoredFailed = 0;
for (const run of runs) {
  let checks;
  try {
    checks = JSON.parse(fs.readFileSync(path.join(outdir, run.dir, "checks.json"), "utf8"));
  } catch (e) {
    checks = [{ id: "checks.json", status: "FAILURE", errorMessage: `unreadable: ${e.message}` }];
  }
  const failures = checks.filter((c) => c.status === "FAILURE");
  const warnings = checks.filter((c) => c.status === "WARNING");
  const notes = [];
  if (failures.length) {
    notes.push(`${failures.length} of ${checks.length} checks failed: ` +
      failures.map((c) => `${c.id}: ${(c.errorMessage || c.description || "").replace(/\s+/g, " ").slice(0, 200)}`).join("; "));
  }
  if (warnings.length) notes.push(`warnings: ${warnings.map((c) => c.id).join(", ")}`);
  if (expected.has(run.name)) notes.push(failures.length ? "expected (listed in the baseline)" : "listed in the baseline, but passed");
  if (notScored.has(run.name)) {
    notes.unshift(`not scored (${notScored.get(run.name)})`);
    failures.length ? unscoredFailed++ : unscoredPassed++;
  } else {
    failures.length ? failed++ : passed++;
  }
  console.log(`${failures.length ? "FAIL" : "PASS"} ${run.name}${notes.length ? ": " + notes.join("; ") : ""}`);
}
if (runs.length === 0) console.log(`no scenario results in ${outdir}`);
console.log(`conformance: ${passed} passed, ${failed} failed`);
if (notScored.size) {
  console.log(`conformance: besides, ${unscoredPassed + unscoredFailed} scenario(s) run but not scored for this revision: ${unscoredPassed} pass, ${unscoredFailed} fail`);
}
EOF

# A scenario the suite refused to run at this spec version leaves no results: say so, and how.
sed -n 's/\x1b\[[0-9;]*m//g; s/^SKIPPED: /conformance: skipped: /p' "$OUTDIR/console.log" >&2
if [[ -n "$BASELINE" ]]; then
    # The suite's own verdict against the baseline (unexpected failures, stale entries).
    sed -n '/Expected failures (in baseline)\|Unexpected failures\|Stale baseline\|Baseline check passed/,$p' "$OUTDIR/console.log" \
        | sed 's/\x1b\[[0-9;]*m//g'
fi
if [[ $status -ne 0 ]] && ! compgen -G "$OUTDIR/server-*/checks.json" >/dev/null; then
    echo "conformance: the suite exited $status without results; from $OUTDIR/console.log:" >&2
    if [[ $(wc -l <"$OUTDIR/console.log") -le 40 ]]; then
        cat "$OUTDIR/console.log" >&2
    else
        { head -n 15 "$OUTDIR/console.log"; echo "    [...]"; tail -n 25 "$OUTDIR/console.log"; } >&2
    fi
fi
exit "$status"
