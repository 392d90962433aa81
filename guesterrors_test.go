package sbuml_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sbuml/sbuml"
	"github.com/sbuml/sbuml/image"
	"github.com/sbuml/sbuml/internal/testimage"
)

// TestGuestErrors checks that what cannot reach a guest's agent fails
// with one clear line, quickly: a name that is no machine, a frozen
// machine, a machine without an agent port, an agent that does not
// answer.
func TestGuestErrors(t *testing.T) {
	t.Parallel()
	s := guestScrapbook(t, 2)
	ctx := guestContext(t)
	expect := func(machine string, wantIn ...string) {
		t.Helper()
		start := time.Now()
		c, err := s.Guest(ctx, machine)
		if err == nil {
			c.Close()
			t.Fatalf("Guest(%s) succeeded", machine)
		}
		requireOneLine(t, err, wantIn...)
		t.Logf("%s: %v (after %v)", machine, err, time.Since(start).Round(time.Millisecond))
	}
	expect("nosuch", "no machine nosuch")

	bootGuest(t, s, "m1", 0)
	if err := s.Freeze(ctx, "m1"); err != nil {
		t.Fatal(err)
	}
	expect("m1", "frozen", "sbuml continue m1")
	if err := s.Continue(ctx, "m1"); err != nil {
		t.Fatal(err)
	}
	// The agent stops answering.
	sh(t, s, "m1", "setsid sh -c 'sleep 1; kill -STOP $(pidof sbuml-guest)' </dev/null >/dev/null 2>&1 &")
	time.Sleep(2 * time.Second)
	short, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if _, err := s.Guest(short, "m1"); err == nil || !strings.Contains(err.Error(), "does not answer") {
		t.Errorf("a stopped agent: %v, want 'does not answer'", err)
	} else {
		requireOneLine(t, err, "does not answer", "sbuml console m1 --tail")
	}

	// An image without the agent gives a machine without its port.
	img := testimage.Get(t)
	dir := filepath.Join(t.TempDir(), "noagent")
	os.MkdirAll(dir, 0o755)
	for _, f := range []string{img.Kernel, img.Initrd, img.Disk} {
		if err := image.CopySparse(filepath.Join(dir, filepath.Base(f)), f); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := os.ReadFile(filepath.Join(filepath.Dir(img.Kernel), "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	json.Unmarshal(cfg, &c)
	delete(c, "agent")
	cfg, _ = json.Marshal(c)
	os.WriteFile(filepath.Join(dir, "config.json"), cfg, 0o644)
	if _, err := s.AddImage(ctx, "noagent", dir); err != nil {
		t.Fatal(err)
	}
	bootGuestWith(t, s, "m2", sbuml.BootOptions{Base: "noagent", Memory: 256 << 20, Accel: guestAccel})
	expect("m2", "no agent port", "sbuml console")
}
