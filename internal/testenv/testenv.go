// Package testenv decides what a test does when the host lacks something
// it needs (a pseudo-terminal, gcc, /dev/shm, a second loopback
// address): on a developer's machine it skips, saying what is missing;
// in CI, where make installs everything the tests need, it fails, so
// that a missing install step cannot hide behind a skipped test.
package testenv

import (
	"os"
	"testing"
)

// InCI reports whether the tests run in CI: the CI variable is set, as
// .ci/run's caller sets it.
func InCI() bool { return os.Getenv("CI") != "" }

// Need fails the test in CI, and skips it elsewhere, if err (what the
// test needs, what) is not nil.
func Need(t testing.TB, what string, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if InCI() {
		t.Fatalf("%s: %v (CI must run every test: install what it needs in the Makefile's deps)", what, err)
		return
	}
	t.Skipf("%s: %v", what, err)
}
