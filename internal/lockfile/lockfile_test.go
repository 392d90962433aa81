package lockfile

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// holdEnv makes the test binary a helper process that takes the lock
// file it names, says "held" and waits to be killed.
const holdEnv = "LOCKFILE_TEST_HOLD"

func TestMain(m *testing.M) {
	if path := os.Getenv(holdEnv); path != "" {
		if _, err := Create(path, 0o644, 0); err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		fmt.Println("held")
		time.Sleep(time.Minute)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// holder starts a helper process holding the lock file path.
func holder(t *testing.T, path string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), holdEnv+"="+path)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, _ := bufio.NewReader(out).ReadString('\n')
	if line != "held\n" {
		t.Fatalf("helper said %q", line)
	}
	return cmd
}

// A lock left by a killed process, or a lock file nobody holds however
// new, is taken over at once; one a live process holds is not, and the
// error names the holder.
func TestCreate(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name    string
		prepare func(t *testing.T, path string) *exec.Cmd
		held    bool
	}{
		{"free", func(*testing.T, string) *exec.Cmd { return nil }, false},
		{"owner killed", func(t *testing.T, path string) *exec.Cmd {
			cmd := holder(t, path)
			cmd.Process.Kill()
			cmd.Wait()
			return nil
		}, false},
		{"unheld file just made", func(t *testing.T, path string) *exec.Cmd {
			if err := os.WriteFile(path, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			return nil
		}, false},
		{"owner alive", holder, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "-"), "main.lock")
			os.MkdirAll(filepath.Dir(path), 0o755)
			owner := tt.prepare(t, path)
			start := time.Now()
			l, err := Create(path, 0o644, 100*time.Millisecond)
			took := time.Since(start)
			if tt.held {
				want := fmt.Sprintf("held by process %d", owner.Process.Pid)
				if !errors.Is(err, ErrHeld) || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), path) {
					t.Fatalf("Create over a live lock: %v; want ErrHeld naming %s and saying %q", err, path, want)
				}
				if stale, err := Stale(path); err != nil || stale {
					t.Errorf("Stale of a live lock = %v, %v", stale, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Create: %v", err)
			}
			defer l.Release()
			if took > 50*time.Millisecond {
				t.Errorf("Create took %v: it waited for a lock nobody holds", took)
			}
			if stale, err := Stale(path); err != nil || stale {
				t.Errorf("Stale of the lock just taken = %v, %v", stale, err)
			}
			if pid := Holder(path); pid != os.Getpid() {
				t.Errorf("Holder = %d, want this process, %d", pid, os.Getpid())
			}
		})
	}
}

// Rename publishes what was written into the lock file and lets go of
// it; Release removes it. Neither leaves a file behind.
func TestRenameAndRelease(t *testing.T) {
	dir := t.TempDir()
	ref := filepath.Join(dir, "refs", "heads", "main")
	l, err := Create(ref+".lock", 0o644, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Create(ref+".lock", 0o644, 0); !errors.Is(err, ErrHeld) {
		t.Fatalf("second Create of a held lock: %v", err)
	}
	if _, err := l.File().WriteString("new\n"); err != nil {
		t.Fatal(err)
	}
	if err := l.Rename(ref); err != nil {
		t.Fatal(err)
	}
	l.Release() // a no-op after Rename
	if b, err := os.ReadFile(ref); err != nil || string(b) != "new\n" {
		t.Fatalf("after Rename the file holds %q, %v", b, err)
	}
	l, err = Create(ref+".lock", 0o644, 0)
	if err != nil {
		t.Fatal(err)
	}
	l.Release()
	entries, _ := os.ReadDir(filepath.Dir(ref))
	if len(entries) != 1 {
		t.Errorf("left in the directory: %v, want only the ref", entries)
	}
}

// Stale tells a lock left by a killed process from a live one.
func TestStale(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.lock")
	cmd := holder(t, path)
	if stale, err := Stale(path); err != nil || stale {
		t.Fatalf("Stale while the owner lives = %v, %v", stale, err)
	}
	cmd.Process.Kill()
	cmd.Wait()
	if stale, err := Stale(path); err != nil || !stale {
		t.Fatalf("Stale after the owner was killed = %v, %v", stale, err)
	}
}
