package vmm

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestQMPExecute(t *testing.T) {
	t.Parallel()
	m := bootTest(t, idleConfig())
	ctx := testContext(t, time.Minute)
	q, err := m.QMP(ctx)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := q.Execute(ctx, "query-version", nil)
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		QEMU struct{ Major, Minor, Micro int } `json:"qemu"`
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	if v.QEMU.Major == 0 || !strings.HasPrefix(q.Version, strings.Split(m.Config().QEMUVersion, ".")[0]+".") {
		t.Errorf("query-version %s, greeting version %s, config version %s", raw, q.Version, m.Config().QEMUVersion)
	}
	// Arguments are passed through.
	raw, err = q.Execute(ctx, "qom-get", map[string]string{"path": "/objects/ram0", "property": "size"})
	if err != nil {
		t.Fatal(err)
	}
	if string(raw) != "67108864" {
		t.Errorf("qom-get ram0 size = %s, want 67108864", raw)
	}
}

func TestQMPErrorReply(t *testing.T) {
	t.Parallel()
	m := bootTest(t, idleConfig())
	ctx := testContext(t, time.Minute)
	q, err := m.QMP(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		command string
		args    any
		class   string
	}{
		{"no-such-command", nil, "CommandNotFound"},
		{"qom-get", map[string]string{"path": "/no/such/object", "property": "size"}, "DeviceNotFound"},
		{"migrate-set-capabilities", map[string]any{"capabilities": []map[string]any{{"capability": "no-such-cap", "state": true}}}, "GenericError"},
	}
	for _, tt := range tests {
		_, err := q.Execute(ctx, tt.command, tt.args)
		var qe *QMPError
		if !errors.As(err, &qe) {
			t.Errorf("%s: error %v, want a *QMPError", tt.command, err)
			continue
		}
		if qe.Command != tt.command || qe.Class != tt.class || qe.Desc == "" {
			t.Errorf("%s: got %+v, want class %s", tt.command, qe, tt.class)
		}
		if !strings.Contains(err.Error(), tt.command) {
			t.Errorf("error %q does not name the command", err)
		}
	}
	// The connection is still usable after errors.
	if _, err := q.Execute(ctx, "query-status", nil); err != nil {
		t.Fatal(err)
	}
}

// TestQMPEventsDuringCommands issues commands from several goroutines
// while stop/cont produce events, and checks that every reply reaches its
// caller and every event its subscriber.
func TestQMPEventsDuringCommands(t *testing.T) {
	t.Parallel()
	m := bootTest(t, idleConfig())
	ctx := testContext(t, time.Minute)
	q, err := m.QMP(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sub := q.Subscribe("STOP", "RESUME")
	defer sub.Close()
	all := q.Subscribe()
	defer all.Close()

	const rounds = 10
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 25; i++ {
				raw, err := q.Execute(ctx, "query-status", nil)
				if err != nil {
					errs <- err
					return
				}
				if !strings.Contains(string(raw), `"status"`) {
					errs <- errors.New("query-status reply without status: " + string(raw))
					return
				}
			}
		}()
	}
	for i := 0; i < rounds; i++ {
		if _, err := q.Execute(ctx, "stop", nil); err != nil {
			t.Fatal(err)
		}
		if _, err := q.Execute(ctx, "cont", nil); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for i := 0; i < rounds; i++ {
		for _, want := range []string{"STOP", "RESUME"} {
			ev, err := sub.Next(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if ev.Name != want || ev.Time.IsZero() {
				t.Fatalf("round %d: event %s at %v, want %s", i, ev.Name, ev.Time, want)
			}
		}
	}
	// The catch-all subscription saw them too.
	if _, err := all.Wait(ctx, "RESUME"); err != nil {
		t.Fatal(err)
	}
}

func TestQMPTimeout(t *testing.T) {
	t.Parallel()
	m := bootTest(t, idleConfig())
	ctx := testContext(t, time.Minute)
	q, err := m.QMP(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pid := m.PID()
	// A stopped QEMU cannot answer.
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	_, err = q.Execute(short, "query-status", nil)
	cancel()
	syscall.Kill(pid, syscall.SIGCONT)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "query-status") {
		t.Fatalf("Execute on a stopped QEMU: %v, want a deadline error naming the command", err)
	}
	// The late reply is dropped and the next command gets its own.
	raw, err := q.Execute(ctx, "query-name", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(raw), `"m"`) {
		t.Errorf("query-name = %s, want the machine name", raw)
	}
}

func TestQMPSendFile(t *testing.T) {
	t.Parallel()
	m := bootTest(t, idleConfig())
	ctx := testContext(t, time.Minute)
	q, err := m.QMP(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := q.SendFile(ctx, "test-fd", w); err != nil {
		t.Fatal(err)
	}
	w.Close()
	// QEMU holds the write end now: closing it there gives us EOF.
	if _, err := q.Execute(ctx, "closefd", map[string]string{"fdname": "test-fd"}); err != nil {
		t.Fatalf("closefd of a passed descriptor: %v", err)
	}
	r.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := r.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Errorf("read after closefd: %d, %v; want EOF", n, err)
	}
	// getfd without a descriptor is refused.
	if _, err := q.Execute(ctx, "getfd", map[string]string{"fdname": "none"}); err == nil {
		t.Error("getfd without SCM_RIGHTS succeeded")
	}
	if _, err := q.Execute(ctx, "closefd", map[string]string{"fdname": "none"}); err == nil {
		t.Error("closefd of an unknown name succeeded")
	}
}

func TestQMPClosedWhenQEMUExits(t *testing.T) {
	t.Parallel()
	m := bootTest(t, idleConfig())
	ctx := testContext(t, time.Minute)
	q, err := m.QMP(ctx)
	if err != nil {
		t.Fatal(err)
	}
	shutdown := q.Subscribe("SHUTDOWN")
	if _, err := q.Execute(ctx, "quit", nil); err != nil && !errors.Is(err, ErrQMPClosed) {
		t.Fatal(err)
	}
	if _, err := shutdown.Wait(ctx, "SHUTDOWN"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-q.Done():
	case <-ctx.Done():
		t.Fatal("connection still open after quit")
	}
	if _, err := q.Execute(ctx, "query-status", nil); !errors.Is(err, ErrQMPClosed) {
		t.Errorf("Execute after QEMU exit: %v, want ErrQMPClosed", err)
	}
	if _, err := shutdown.Next(ctx); !errors.Is(err, ErrQMPClosed) {
		t.Errorf("Next after QEMU exit: %v, want ErrQMPClosed", err)
	}
}

// TestLongDirectoryPath boots a machine whose socket paths exceed the
// 108-byte limit of unix socket addresses.
func TestLongDirectoryPath(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), strings.Repeat("long-directory-name-", 6), "m")
	if len(filepath.Join(dir, QMPSocket)) <= 108 {
		t.Fatalf("path %s is not long enough for the test", dir)
	}
	m, err := Boot(testContext(t, time.Minute), dir, idleConfig())
	if err != nil {
		t.Fatal(err)
	}
	haltOnCleanup(t, m)
	m.Close()
	m, err = Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	haltOnCleanup(t, m)
	st, err := m.Status(testContext(t, time.Minute))
	if err != nil || st.State != StateRunning {
		t.Fatalf("Status = %+v, %v", st, err)
	}
}
