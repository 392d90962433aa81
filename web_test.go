package sbuml_test

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sbuml/sbuml"
)

// TestCheckoutFromWeb publishes a machine snapshot, serves the published
// directory with python3 -m http.server (the plain static web server
// users put it on), and brings the machine up in another, empty
// scrapbook twice: with `sbuml checkout URL#SNAPSHOT m2 -c`, and with
// `sbuml open FILE.sbuml` on the link file a browser would hand over.
// Each machine carries on from the snapshot; the second download fetches
// nothing, since every object is there already.
func TestCheckoutFromWeb(t *testing.T) {
	t.Parallel()
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Fatal("python3 serves the published scrapbook in this test: apt-get install python3 (make deps does)")
	}
	s := guestScrapbook(t, 2)
	g := bootGuest(t, s, "m1", 0)
	g.startCounter()
	g.run("echo on-disk > /mnt/web; echo in-ram > /tmp/web")
	tl := commitTimeline(g, sbuml.CommitOptions{})
	g.halt()

	pub := filepath.Join(t.TempDir(), "pub")
	if err := os.Mkdir(pub, 0o755); err != nil {
		t.Fatal(err)
	}
	url := servePython(t, python, pub)
	mustCLI(t, s, "publish", pub, "--url", url)

	other, err := sbuml.Init(filepath.Join(t.TempDir(), "other"))
	if err != nil {
		t.Fatal(err)
	}
	haltAllOnCleanup(t, other)

	r := sbumlCLI(t, other, nil, "checkout", url+"#"+tl.id.String(), "m2", "-c", "--accel", guestAccel)
	if r.err != nil {
		t.Fatalf("sbuml checkout URL#SNAPSHOT m2 -c: %v\n%s", r.err, r.stderr)
	}
	if !strings.HasPrefix(r.stdout, "m2 running from "+tl.id.Short()) || !strings.Contains(r.stderr, "received ") {
		t.Errorf("sbuml checkout URL#SNAPSHOT printed %q, and on stderr %q", r.stdout, r.stderr)
	}
	t.Logf("checkout by URL: %s%s", r.stderr, r.stdout)
	m2 := &guest{t: t, s: other, name: "m2"}
	requireResumed(m2, tl)
	requireFiles(m2, map[string]string{"/mnt/web": "on-disk", "/tmp/web": "in-ram"})

	link := filepath.Join(pub, "branches", "m1.sbuml")
	r = sbumlCLI(t, other, nil, "open", link, "--accel", guestAccel)
	if r.err != nil {
		t.Fatalf("sbuml open %s: %v\n%s", link, r.err, r.stderr)
	}
	if !strings.HasPrefix(r.stdout, "m1 running from "+tl.id.Short()) || !strings.Contains(r.stderr, "received 0 objects") {
		t.Errorf("sbuml open printed %q, and on stderr %q; want m1 running, nothing downloaded", r.stdout, r.stderr)
	}
	opened := &guest{t: t, s: other, name: "m1"}
	requireResumed(opened, tl)
	requireFiles(opened, map[string]string{"/mnt/web": "on-disk", "/tmp/web": "in-ram"})
}

// servePython serves dir with python3 -m http.server on a free port of
// 127.0.0.1 until the test ends, and returns its URL once it answers.
func servePython(t *testing.T, python, dir string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cmd := exec.Command(python, "-m", "http.server", fmt.Sprint(port), "--bind", "127.0.0.1", "--directory", dir)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			return url
		}
		if time.Now().After(deadline) {
			t.Fatalf("python3 -m http.server on %s does not answer: %v", url, err)
		}
	}
}
