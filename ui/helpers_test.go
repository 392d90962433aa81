package ui_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/sbuml/sbuml"
	"github.com/sbuml/sbuml/ui"
)

func TestMain(m *testing.M) {
	// Machines booted and checked out from the page get keepers: this
	// test binary run again.
	sbuml.KeeperMain()
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// serve runs a Server for the scrapbook in dir on addr (127.0.0.1:0 if
// empty) until the test ends, and returns its base URL, reached through
// 127.0.0.1 whatever addr is.
func serve(t testing.TB, dir, addr string, opts ui.Options) string {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	opts.Log = func(format string, args ...any) { t.Logf("ui: "+format, args...) }
	srv, err := ui.New(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := ui.Listen(addr, opts)
	if err != nil {
		srv.Close()
		t.Fatal(err)
	}
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second}
	go hs.Serve(ln)
	t.Cleanup(func() {
		srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		hs.Shutdown(ctx)
	})
	return fmt.Sprintf("http://127.0.0.1:%d", ln.Addr().(*net.TCPAddr).Port)
}

// importSnapshots makes a scrapbook holding n snapshots of a small
// directory on branch main, and returns it.
func importSnapshots(t testing.TB, n int) *sbuml.Scrapbook {
	t.Helper()
	s, err := sbuml.Init(filepath.Join(t.TempDir(), "scrapbook"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	dir := t.TempDir()
	for i := range n {
		if err := os.WriteFile(filepath.Join(dir, "f"), []byte(fmt.Sprint("version ", i)), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Import(context.Background(), dir, sbuml.SnapshotOptions{Branch: "main", Message: fmt.Sprint("import ", i)}); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// chromium is the browser the tests drive: Debian's package.
const chromium = "chromium"

// browser starts a headless Chromium for the test and returns a context
// for its first tab. Every action in it is bounded by timeout.
func browser(t testing.TB, timeout time.Duration) context.Context {
	t.Helper()
	path, err := exec.LookPath(chromium)
	if err != nil {
		t.Fatalf("the browser tests drive Chromium: apt-get install chromium (make deps does): %v", err)
	}
	// As root Chromium needs --no-sandbox; the other flags keep it from
	// reaching for Google's servers, which it may not.
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1400, 900),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-sync", true),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	ctx, cancelTime := context.WithTimeout(ctx, timeout)
	t.Cleanup(func() {
		cancelTime()
		cancelTab()
		cancelAlloc()
	})
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start %s: %v", path, err)
	}
	return ctx
}

var (
	buildOnce sync.Once
	binDir    string
	binPath   string
	buildErr  error
)

// sbumlCommand returns the sbuml command built from ../cmd/sbuml.
func sbumlCommand(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		goTool, err := exec.LookPath("go")
		if err != nil {
			goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
		}
		if binDir, buildErr = os.MkdirTemp("", "sbuml-ui-test-"); buildErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "sbuml")
		if out, err := exec.Command(goTool, "build", "-o", binPath, "../cmd/sbuml").CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ../cmd/sbuml: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// cliTimeout bounds one sbuml command (a boot or checkout under TCG).
const cliTimeout = 3 * time.Minute

// cli runs the sbuml command on the scrapbook in dir with stdin and
// returns its standard output and error.
func cli(t testing.TB, dir, stdin string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, sbumlCommand(t), append([]string{"--scrapbook", dir}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		err = fmt.Errorf("sbuml %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), err
}

// mustCLI runs the sbuml command and fails the test unless it succeeds.
func mustCLI(t testing.TB, dir string, args ...string) string {
	t.Helper()
	out, err := cli(t, dir, "", args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// cliJSON runs a read command with --json and decodes what it prints.
func cliJSON[T any](t testing.TB, dir string, args ...string) T {
	t.Helper()
	var v T
	out := mustCLI(t, dir, append(args, "--json")...)
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("sbuml %s --json: %v\n%s", strings.Join(args, " "), err, out)
	}
	return v
}

// eventually retries check every 100 ms until it succeeds or timeout
// passes, then fails the test with its last error.
func eventually(t testing.TB, timeout time.Duration, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// errNotYet is what eventually's checks return while they wait.
var errNotYet = errors.New("not yet")
