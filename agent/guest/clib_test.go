package guest_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/sbuml/sbuml/agent"
	"github.com/sbuml/sbuml/internal/testenv"
)

// buildTestckpt compiles libckpt's test program as the README says.
func buildTestckpt(t *testing.T) string {
	t.Helper()
	gcc, err := exec.LookPath("gcc")
	testenv.Need(t, "gcc, to test the C library (apt-get install gcc)", err)
	src, _ := filepath.Abs("../../libckpt")
	bin := filepath.Join(t.TempDir(), "testckpt")
	cmd := exec.Command(gcc, "-static", "-O2", "-Wall", "-Wextra", "-Werror", "-o", bin,
		filepath.Join(src, "testckpt.c"), filepath.Join(src, "ckpt.c"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	return bin
}

// TestCLibrary runs the seed's test program against the daemon: the
// original writes "I am the Parent", a checked-out machine "I am the
// Child # N", and a refusal is one line on stderr.
func TestCLibrary(t *testing.T) {
	bin := buildTestckpt(t)
	tests := []struct {
		name    string
		handler agent.Handler
		line    string
		stderr  string
	}{
		{"parent", released(0), "I am the Parent\n", ""},
		{"child", released(4), "I am the Child # 4\n", ""},
		{"refused", nil, "", "testckpt: ckpt: the host could not checkpoint: this host takes no checkpoints\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, d, _, _ := setup(t, tt.handler)
			sock := filepath.Join(t.TempDir(), "sock")
			serveLocal(t, d, sock)
			out := filepath.Join(t.TempDir(), "out")
			cmd := exec.Command(bin, "-m", "from C\nwith a \\", out)
			cmd.Env = append(os.Environ(), "SBUML_GUEST_SOCKET="+sock)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			defer func() {
				cmd.Process.Kill()
				<-exited
			}()
			if tt.stderr != "" {
				select {
				case err := <-exited:
					exited <- err
					if stderr.String() != tt.stderr {
						t.Errorf("stderr %q (%v), want %q", stderr.String(), err, tt.stderr)
					}
				case <-time.After(10 * time.Second):
					t.Fatal("testckpt did not give up")
				}
				return
			}
			if got := firstLine(t, out); got != tt.line {
				t.Errorf("%s holds %q, want %q", out, got, tt.line)
			}
			if h := tt.handler.(*blockingHandler); h.msgs[0] != "from C\nwith a \\" {
				t.Errorf("message %q", h.msgs[0])
			}
		})
	}
}

func released(answer int) *blockingHandler {
	h := newBlockingHandler(answer)
	close(h.release)
	return h
}

// firstLine waits for a program to write a line to a file.
func firstLine(t *testing.T, path string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if b, _ := os.ReadFile(path); bytes.Contains(b, []byte("\n")) {
			return string(b[:bytes.IndexByte(b, '\n')+1])
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("nothing written to %s", path)
	return ""
}
