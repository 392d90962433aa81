package main

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"github.com/sbuml/sbuml/vmm"
)

// version and commit say what sbuml was built from, set at build time by
// make (-ldflags "-X main.version=... -X main.commit=..."); otherwise
// they come from the build information, where the go command recorded
// them.
var version, commit string

// versionText is what sbuml --version prints: the version, the commit it
// was built from, the Go that built it, and the QEMU it would run.
func versionText() string {
	v, commit := buildVersion()
	var b strings.Builder
	fmt.Fprintf(&b, "sbuml %s\n", v)
	fmt.Fprintf(&b, "commit %s\n", commit)
	fmt.Fprintf(&b, "go     %s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if qi, err := vmm.InspectQEMU(ctx, ""); err != nil {
		fmt.Fprintf(&b, "qemu   none: %v\n", err)
	} else {
		fmt.Fprintf(&b, "qemu   %s (%s, machine type %s)\n", qi.Version, qi.Path, qi.Q35())
	}
	return b.String()
}

// buildVersion returns sbuml's version and the commit it was built from
// ("unknown" where the build recorded none; "-dirty" after it when the
// tree had changes).
func buildVersion() (v, rev string) {
	if commit != "" {
		return orDefault(version, "unknown"), commit
	}
	v, rev = version, "unknown"
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return orDefault(v, "unknown"), rev
	}
	if v == "" {
		v = info.Main.Version
	}
	var dirty bool
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if dirty && rev != "unknown" {
		rev += "-dirty"
	}
	return orDefault(v, "unknown"), rev
}

// orDefault returns s, or def if s is empty.
func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
