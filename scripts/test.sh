#!/usr/bin/env bash
# The project's test command (CI runs exactly this, through .ci/run):
#   formatting, lints, every Rust test, the release binary, then the end-to-end suite (tests/e2e),
#   in which the OpenTelemetry Python SDK sends through a real `threadline collector` to a real
#   OTLP backend process.
# Everything uses the release profile, so the workspace is compiled once for tests and binary.
# Stops at the first failing step and says which one.
#
# Environment:
#   PYTHON         interpreter used to create the virtualenv (default: python3)
#   THREADLINE_BIN binary under test (default: <cargo target dir>/release/threadline)
#   PYTEST_ARGS    extra pytest arguments, e.g. PYTEST_ARGS="-k delivery -x"
set -euo pipefail

cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }
fail() {
	printf '\nFAILED: %s\n' "$*" >&2
	exit 1
}

PYTHON=${PYTHON:-python3}
VENV=.venv
REQUIREMENTS=tests/e2e/requirements.txt

step "Python virtualenv $VENV with $REQUIREMENTS"
if [ ! -x "$VENV/bin/python" ]; then
	"$PYTHON" -m venv "$VENV" ||
		fail "cannot create a virtualenv with '$PYTHON -m venv' (on Debian: apt-get install python3-venv)"
fi
# Reinstall only when the pinned list changed since the last successful install.
stamp="$VENV/.requirements.sha256"
wanted=$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$wanted" ]; then
	"$VENV/bin/python" -m pip install --disable-pip-version-check --quiet -r "$REQUIREMENTS" ||
		fail "pip could not install $REQUIREMENTS"
	echo "$wanted" >"$stamp"
fi

step "cargo fmt --check"
cargo fmt --all -- --check || fail "formatting differs: run 'cargo fmt --all'"

step "cargo clippy (release, all targets, warnings are errors)"
cargo clippy --workspace --all-targets --release -- -D warnings || fail "clippy found problems"

# The slim build (README): without the `k8s` and `cloud-storage` features, so that what they gate
# keeps compiling both ways. Its own feature set and check mode: the full build below stays fresh.
step "cargo clippy of the slim build (--no-default-features)"
cargo clippy --release -p threadline -p threadline-collector -p threadline-store --no-default-features \
	--all-targets -- -D warnings || fail "the slim build (--no-default-features) has problems"

# The binary is built together with the tests, so both resolve dependency features the same way
# (dev-dependencies included) and share every compiled crate; `cargo build -p threadline` alone
# would resolve them differently and compile much of the tree a second time.
step "cargo build (release): the threadline binary and every test"
cargo build --release --workspace --bins --tests || fail "the workspace does not build"

step "cargo test (release, workspace)"
cargo test --release --workspace || fail "Rust tests failed"

target_dir=${CARGO_TARGET_DIR:-target}
export THREADLINE_BIN=${THREADLINE_BIN:-$target_dir/release/threadline}
[ -x "$THREADLINE_BIN" ] || fail "no binary at $THREADLINE_BIN after the build"

step "end-to-end suite: pytest tests/e2e (binary $THREADLINE_BIN)"
set +e
# shellcheck disable=SC2086 # PYTEST_ARGS is a list of words on purpose
"$VENV/bin/python" -m pytest tests/e2e -q ${PYTEST_ARGS:-}
status=$?
set -e
case $status in
0) ;;
5) fail "pytest collected no end-to-end tests (exit 5): the suite must not be empty" ;;
*) fail "end-to-end tests failed (pytest exit $status)" ;;
esac

step "all checks passed"
