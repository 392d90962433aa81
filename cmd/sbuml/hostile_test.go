package main

// The hostile-remote suite: small malicious servers on 127.0.0.1, and the
// sbuml command run against them as a user would run it. Each run must
// end with one clear line on stderr within its bound, store nothing, and
// keep its peak memory (the process's maximum resident set) bounded.

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sbuml/sbuml"
	"github.com/sbuml/sbuml/internal/testenv"
	"github.com/sbuml/sbuml/objects"
)

// hostileEnv are the limits the suite runs sbuml with: short, so that a
// stalled request ends in seconds (the defaults are in docs/transport.md).
var hostileEnv = []string{
	"SBUML_HTTP_CONNECT_TIMEOUT=2s",
	"SBUML_HTTP_RESPONSE_TIMEOUT=2s",
	"SBUML_HTTP_LOW_SPEED_TIME=2s",
	"SBUML_HTTP_LOW_SPEED_LIMIT=1024",
	"SBUML_HTTP_RETRIES=1",
}

// hostileBound is how long any run of the suite may take: a stalled
// request is given up after 2 s, once; the rest is slack for a busy
// machine.
const hostileBound = 15 * time.Second

// measured is one run of the sbuml command.
type measured struct {
	stdout, stderr string
	code           int
	took           time.Duration
	maxRSS         int64 // bytes
}

// runMeasured runs sbuml with args and env, with a private HOME, and
// measures it. It may run on a goroutine of its own: a run that cannot
// start, or hangs (it is killed after two minutes), is an error of the
// test and a code of -1.
func runMeasured(t *testing.T, env []string, args ...string) measured {
	t.Helper()
	cmd := exec.Command(sbumlBin, args...)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir(), "SBUML_DIR=")
	cmd.Env = append(cmd.Env, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Error(err)
		return measured{code: -1}
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(2 * time.Minute):
		cmd.Process.Kill()
		<-done
		t.Errorf("sbuml %s hung: killed after 2 minutes", strings.Join(args, " "))
		return measured{code: -1}
	}
	m := measured{stdout: stdout.String(), stderr: stderr.String(), took: time.Since(start)}
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		m.code = exit.ExitCode()
	} else if err != nil {
		t.Error(err)
		m.code = -1
	}
	m.maxRSS = cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss << 10
	return m
}

// requireOneLine fails the test unless m failed with one line on stderr
// saying want, within hostileBound and maxRSS bytes of memory. A
// transfer's summary line may come before it.
func requireOneLine(t *testing.T, what string, m measured, want string, maxRSS int64) {
	t.Helper()
	t.Logf("%s: %.1fs, peak RSS %d MiB: %s", what, m.took.Seconds(), m.maxRSS>>20, strings.TrimSpace(m.stderr))
	lines := strings.Split(strings.TrimSuffix(m.stderr, "\n"), "\n")
	last := lines[len(lines)-1]
	summary := len(lines) == 2 && strings.HasPrefix(lines[0], "received ")
	if m.code != 1 || !strings.HasSuffix(m.stderr, "\n") || (len(lines) != 1 && !summary) || !strings.HasPrefix(last, "sbuml: ") {
		t.Errorf("%s: exit %d, stderr %q; want exit 1 and one line", what, m.code, m.stderr)
	}
	if !strings.Contains(last, want) {
		t.Errorf("%s: stderr %q does not say %q", what, m.stderr, want)
	}
	if m.took > hostileBound {
		t.Errorf("%s took %v, more than %v", what, m.took, hostileBound)
	}
	if m.maxRSS > maxRSS {
		t.Errorf("%s: peak RSS %d MiB, more than %d MiB", what, m.maxRSS>>20, maxRSS>>20)
	}
}

// victim is a scrapbook whose remote "origin" is a hostile server, and
// what it held before.
type victim struct {
	dir     string
	objects int
	refs    []string
}

func newVictim(t *testing.T, url string) *victim {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "victim")
	sbumlOK(t, "init", dir)
	work := t.TempDir()
	writeRandom(t, filepath.Join(work, "mine"), 1000, 3)
	sbumlOK(t, "--scrapbook", dir, "import", work)
	sbumlOK(t, "--scrapbook", dir, "remote", "add", "origin", url)
	v := &victim{dir: dir}
	v.objects, v.refs = v.state(t)
	return v
}

func (v *victim) state(t *testing.T) (int, []string) {
	t.Helper()
	s, err := sbuml.Open(v.dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	all, err := s.Refs.List("")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range all {
		names = append(names, r.Name)
	}
	return len(objectBytes(t, v.dir)), names
}

// requireUntouched fails the test if the victim holds new objects or refs.
func (v *victim) requireUntouched(t *testing.T, what string) {
	t.Helper()
	n, refs := v.state(t)
	if n != v.objects || strings.Join(refs, " ") != strings.Join(v.refs, " ") {
		t.Errorf("%s: the scrapbook holds %d objects and refs %q, had %d and %q", what, n, refs, v.objects, v.refs)
	}
}

// tcpServer serves each connection with handle, on 127.0.0.1, until the
// test ends, and returns its URL.
func tcpServer(t *testing.T, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return "http://" + ln.Addr().String() + "/"
}

// readRequest reads a request's head from c.
func readRequest(c net.Conn) bool {
	br := bufio.NewReader(c)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return false
		}
		if line == "\r\n" {
			return true
		}
	}
}

// hang accepts a connection, reads what comes and never answers.
func hang(c net.Conn) {
	io.Copy(io.Discard, c)
}

// slowBody answers with a large body, one byte every 300 ms.
func slowBody(c net.Conn) {
	if !readRequest(c) {
		return
	}
	io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n")
	for {
		if _, err := c.Write([]byte{' '}); err != nil {
			return
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// slowHeaders sends its answer's head one byte every 300 ms.
func slowHeaders(c net.Conn) {
	if !readRequest(c) {
		return
	}
	for _, b := range []byte("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Padding: " + strings.Repeat("x", 1000)) {
		if _, err := c.Write([]byte{b}); err != nil {
			return
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// The commands runAll runs, by name.
var hostileCommands = map[string]func(v *victim, url, token, clone string) []string{
	"clone": func(v *victim, url, token, clone string) []string { return []string{"clone", url, clone} },
	"pull": func(v *victim, url, token, clone string) []string {
		return []string{"--scrapbook", v.dir, "pull", "origin"}
	},
	"push": func(v *victim, url, token, clone string) []string {
		return []string{"--scrapbook", v.dir, "push", "--token-file", token, "origin", "main"}
	},
	"fetch": func(v *victim, url, token, clone string) []string {
		return []string{"--scrapbook", v.dir, "fetch", url + "#main"}
	},
	"checkout": func(v *victim, url, token, clone string) []string {
		return []string{"--scrapbook", v.dir, "checkout", url + "#main", "m1"}
	},
	"open": func(v *victim, url, token, clone string) []string {
		return []string{"--scrapbook", v.dir, "open", url + "branches/main.sbuml"}
	},
}

// runAll runs the named commands of sbuml against url and requires each
// to end with one line saying want, within the bounds, storing nothing.
func runAll(t *testing.T, url, want string, maxRSS int64, commands ...string) {
	t.Helper()
	v := newVictim(t, url)
	token := filepath.Join(t.TempDir(), "token")
	os.WriteFile(token, []byte("secret\n"), 0o600)
	clone := filepath.Join(t.TempDir(), "clone")
	// The commands run at once: against a stalling server each mostly
	// waits.
	var wg sync.WaitGroup
	for _, name := range commands {
		args := hostileCommands[name](v, url, token, clone)
		wg.Add(1)
		go func() {
			defer wg.Done()
			requireOneLine(t, strings.Join(args, " "), runMeasured(t, hostileEnv, args...), want, maxRSS)
		}()
	}
	wg.Wait()
	if _, err := os.Stat(clone); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a failed clone left %s behind", clone)
	}
	v.requireUntouched(t, url)
}

// TestHostileStalls: servers that accept and never answer, or answer a
// byte at a time, end every command within the bound.
func TestHostileStalls(t *testing.T) {
	for _, tc := range []struct {
		name   string
		handle func(net.Conn)
		want   string
	}{
		{"hang", hang, "gave up: no answer within 2s"},
		{"slow headers", slowHeaders, "gave up: no answer within 2s"},
		{"slow-loris body", slowBody, "gave up: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			runAll(t, tcpServer(t, tc.handle), tc.want, 100<<20, "clone", "pull", "push", "fetch", "checkout", "open")
		})
	}
}

// smartFake is a fake smart server: it speaks the protocol's first
// words, and lets the test answer the rest.
func smartFake(t *testing.T, routes map[string]http.HandlerFunc) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /sbuml-protocol", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"protocol":"sbuml/1","push":"token"}`)
	})
	for pattern, h := range routes {
		mux.HandleFunc(pattern, h)
	}
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL + "/"
}

// refList writes a ref list of n refs, each named by name(i), all at id.
func refList(w io.Writer, n int, name func(int) string, id objects.ID) {
	io.WriteString(w, `{"format":1,"refs":[`)
	for i := range n {
		if i > 0 {
			io.WriteString(w, ",")
		}
		fmt.Fprintf(w, `{"name":%q,"id":"%s"}`, name(i), id)
	}
	io.WriteString(w, "]}")
}

// TestHostileRefFlood: a remote listing refs without end, or refs of
// huge names, is refused before any ref is made.
func TestHostileRefFlood(t *testing.T) {
	id := objects.Sum([]byte("no such snapshot"))
	flood := smartFake(t, map[string]http.HandlerFunc{"GET /refs": func(w http.ResponseWriter, r *http.Request) {
		refList(w, 40000, func(i int) string { return fmt.Sprintf("refs/tags/flood/%d/%d", i%100, i) }, id)
	}})
	runAll(t, flood, "more than the 10000 refs", 100<<20, "clone", "pull", "fetch", "checkout")

	many := smartFake(t, map[string]http.HandlerFunc{"GET /refs": func(w http.ResponseWriter, r *http.Request) {
		refList(w, 12000, func(i int) string { return fmt.Sprintf("refs/tags/t%d", i) }, id)
	}})
	runAll(t, many, "lists 12000 refs, more than the 10000", 100<<20, "clone", "pull")

	long := smartFake(t, map[string]http.HandlerFunc{"GET /refs": func(w http.ResponseWriter, r *http.Request) {
		refList(w, 1, func(int) string { return "refs/heads/" + strings.Repeat("d/", 200) + "x" }, id)
	}})
	runAll(t, long, "a ref name of 412 bytes", 100<<20, "clone", "pull", "fetch", "checkout")
}

// TestHostileRedirect: a server that answers a push with a redirect to
// another port does not get the token there; the push stops, saying so.
func TestHostileRedirect(t *testing.T) {
	var stolen, hits atomic.Int64
	thief := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if r.Header.Get("Authorization") != "" {
			stolen.Add(1)
		}
	}))
	defer thief.Close()
	redirect := smartFake(t, map[string]http.HandlerFunc{
		"GET /refs": func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, `{"format":1,"refs":[]}`) },
		"POST /objects/put": func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, thief.URL+"/objects/put", http.StatusTemporaryRedirect)
		},
	})
	book := filepath.Join(t.TempDir(), "book")
	sbumlOK(t, "init", book)
	work := t.TempDir()
	writeRandom(t, filepath.Join(work, "f"), 1000, 1)
	sbumlOK(t, "--scrapbook", book, "import", work)
	token := filepath.Join(t.TempDir(), "token")
	os.WriteFile(token, []byte("secret\n"), 0o600)
	m := runMeasured(t, hostileEnv, "--scrapbook", book, "push", "--token-file", token, redirect, "main")
	requireOneLine(t, "push to a redirecting server", m, "redirects to "+thief.URL, 100<<20)
	if hits.Load() != 0 || stolen.Load() != 0 {
		t.Errorf("the redirect target got %d requests, %d with the token", hits.Load(), stolen.Load())
	}
}

// TestHostileLinks: a link file, downloaded or on disk, that names a
// path or file:// URL, or sends the download to another host than the
// one it came from, is refused before anything is read or stored.
func TestHostileLinks(t *testing.T) {
	// A scrapbook of this machine that a hostile link names.
	local := filepath.Join(t.TempDir(), "local")
	sbumlOK(t, "init", local)
	work := t.TempDir()
	writeRandom(t, filepath.Join(work, "private"), 1000, 2)
	out, _ := sbumlOK(t, "--scrapbook", local, "import", "--json", work)
	var res sbuml.Result
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatal(err)
	}
	id := res.ID

	var otherHits atomic.Int64
	other, err := net.Listen("tcp", "127.0.0.2:0")
	testenv.Need(t, "a listener on 127.0.0.2", err)
	otherSrv := &http.Server{Handler: http.HandlerFunc(func(http.ResponseWriter, *http.Request) { otherHits.Add(1) })}
	go otherSrv.Serve(other)
	defer otherSrv.Close()

	link := func(url string) string {
		return fmt.Sprintf(`{"sbuml":1,"url":%q,"snapshot":"%s"}`, url, id)
	}
	links := map[string]string{
		"file.sbuml":       link("file://" + local),
		"relative.sbuml":   link("../local"),
		"other-host.sbuml": link("http://" + other.Addr().String() + "/"),
	}
	mux := http.NewServeMux()
	for name, body := range links {
		mux.HandleFunc("GET /"+name, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, body) })
	}
	srv := httptest.NewServer(mux)
	defer srv.Close()

	v := newVictim(t, srv.URL+"/")
	for _, tc := range []struct{ name, want string }{
		{"file.sbuml", "must name an http://, https:// or s3:// URL"},
		{"relative.sbuml", "must name an http://, https:// or s3:// URL"},
		{"other-host.sbuml", "sends the download to another host, " + other.Addr().String()},
	} {
		name, want := tc.name, tc.want
		url := srv.URL + "/" + name
		hits := otherHits.Load()
		requireOneLine(t, "open "+name, runMeasured(t, hostileEnv, "--scrapbook", v.dir, "open", url), want, 100<<20)
		requireOneLine(t, "fetch "+name, runMeasured(t, hostileEnv, "--scrapbook", v.dir, "fetch", url), want, 100<<20)
		if otherHits.Load() != hits {
			t.Errorf("after %s, the other host got %d requests", name, otherHits.Load()-hits)
		}
		onDisk := filepath.Join(t.TempDir(), name)
		os.WriteFile(onDisk, []byte(links[name]), 0o644)
		m := runMeasured(t, hostileEnv, "--scrapbook", v.dir, "fetch", onDisk)
		if name == "other-host.sbuml" {
			// On disk, a link's origin is unknown: its host is shown
			// before the download, which here fails.
			if !strings.Contains(m.stderr, "sends the download to "+other.Addr().String()) || m.code != 1 {
				t.Errorf("fetch of a link file on disk: exit %d, stderr %q; want it to name the host", m.code, m.stderr)
			}
			continue
		}
		requireOneLine(t, "fetch of "+name+" on disk", m, want, 100<<20)
	}
	for _, arg := range []string{"file://" + local + "#main", local + "#main"} {
		requireOneLine(t, "fetch "+arg, runMeasured(t, hostileEnv, "--scrapbook", v.dir, "fetch", arg), "not an http://, https:// or s3:// URL", 100<<20)
	}
	v.requireUntouched(t, "hostile links")
}

// endless writes filler to w until the client goes away.
func endless(w http.ResponseWriter, filler byte) {
	buf := bytes.Repeat([]byte{filler}, 64<<10)
	for {
		if _, err := w.Write(buf); err != nil {
			return
		}
	}
}

// TestHostileHugeBodies: answers without end, and an object announced
// at the largest size and sent whole but false, are refused with memory
// bounded.
func TestHostileHugeBodies(t *testing.T) {
	endlessStatic := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		endless(w, ' ')
	}))
	defer endlessStatic.Close()
	runAll(t, endlessStatic.URL+"/", "exceeds", 100<<20, "clone", "pull", "fetch", "checkout", "open")

	id := objects.Sum([]byte("the snapshot it claims"))
	bigObject := smartFake(t, map[string]http.HandlerFunc{
		"GET /refs": func(w http.ResponseWriter, r *http.Request) {
			refList(w, 1, func(int) string { return "refs/heads/main" }, id)
		},
		"POST /objects/get": func(w http.ResponseWriter, r *http.Request) {
			hdr := make([]byte, 36)
			copy(hdr, id[:])
			binary.BigEndian.PutUint32(hdr[32:], objects.MaxObjectSize)
			w.Write(hdr)
			w.Write(make([]byte, objects.MaxObjectSize))
		},
	})
	v := newVictim(t, bigObject)
	for _, args := range [][]string{
		{"--scrapbook", v.dir, "pull", "origin"},
		{"--scrapbook", v.dir, "fetch", bigObject + "#main"},
	} {
		requireOneLine(t, strings.Join(args, " "), runMeasured(t, hostileEnv, args...), "remote served a bad object, refused", 200<<20)
	}
	v.requireUntouched(t, "a false object")
}

// peakRSS returns the peak resident set of process p so far.
func peakRSS(t *testing.T, p *os.Process) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if kb, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			var n int64
			fmt.Sscan(strings.TrimSuffix(strings.TrimSpace(kb), " kB"), &n)
			return n << 10
		}
	}
	t.Fatal("no VmHWM in /proc/PID/status")
	return 0
}

// post sends a request with a body to url and returns its status and
// Retry-After, or 0 if the connection failed.
func post(url, token string, body []byte) (int, string) {
	req, _ := http.NewRequest("POST", url, bytes.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, ""
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("Retry-After")
}

// requireStatuses fails the test unless every status is one of ok or a
// 503 with a retry hint, and at least one is not a 503.
func requireStatuses(t *testing.T, what string, got [][2]any, ok ...int) {
	t.Helper()
	counts := map[int]int{}
	for _, g := range got {
		status, after := g[0].(int), g[1].(string)
		counts[status]++
		if status == http.StatusServiceUnavailable && after == "" {
			t.Errorf("%s: a 503 without Retry-After", what)
		}
		if status != http.StatusServiceUnavailable && !slicesContains(ok, status) {
			t.Errorf("%s: status %d", what, status)
		}
	}
	t.Logf("%s: statuses %v", what, counts)
	if counts[http.StatusServiceUnavailable] == len(got) {
		t.Errorf("%s: every request was refused", what)
	}
}

func slicesContains(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// TestHostileClientsOfServe sends `sbuml serve` what hostile clients
// send: connections that dribble their headers or bodies, floods of
// large existence queries, and concurrent pushes of the largest objects.
// The slow are cut off within the bounds, excess load gets 503 with
// Retry-After, the server's memory stays bounded, and an honest clone
// still succeeds.
func TestHostileClientsOfServe(t *testing.T) {
	book := filepath.Join(t.TempDir(), "served")
	sbumlOK(t, "init", book)
	work := t.TempDir()
	writeRandom(t, filepath.Join(work, "f"), 300<<10, 4)
	sbumlOK(t, "--scrapbook", book, "import", work)
	token := filepath.Join(t.TempDir(), "token")
	os.WriteFile(token, []byte("secret\n"), 0o600)
	url, proc := runServe(t, book, false, "--token-file", token, "--max-conns", "40", "--max-requests", "8",
		"--max-memory", "96M", "--header-timeout", "2s", "--idle-timeout", "3s", "--low-speed-time", "2s", "--low-speed-limit", "1024")
	host := strings.TrimSuffix(strings.TrimPrefix(url, "http://"), "/")

	slowHeaderClients(t, url, host)
	ids := make([]byte, 65536*objects.IDSize)
	requireStatuses(t, "100 existence queries", postAtOnce(100, url+"objects/has", "", ids), http.StatusOK)
	// False objects: refused as corrupt once read, or for memory.
	record := make([]byte, 36+objects.MaxObjectSize)
	binary.BigEndian.PutUint32(record[32:], objects.MaxObjectSize)
	requireStatuses(t, "20 pushes of 64 MiB", postAtOnce(20, url+"objects/put", "secret", record), http.StatusUnprocessableEntity)
	dribbleBody(t, host, len(ids))

	rss := peakRSS(t, proc)
	t.Logf("sbuml serve: peak RSS %d MiB", rss>>20)
	if rss > 400<<20 {
		t.Errorf("sbuml serve: peak RSS %d MiB, more than 400 MiB", rss>>20)
	}
	if m := runMeasured(t, nil, "clone", url, filepath.Join(t.TempDir(), "after")); m.code != 0 {
		t.Errorf("clone after the load: exit %d, %s", m.code, m.stderr)
	}
}

// slowHeaderClients has 50 clients dribble their headers, one byte a
// second: each must be cut off (those past --max-conns after 2 s, the
// others after the header timeout) or answered 503, within
// hostileBound; an honest clone meanwhile retries and succeeds.
func slowHeaderClients(t *testing.T, url, host string) {
	start := time.Now()
	var wg sync.WaitGroup
	var busy, cut atomic.Int64
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", host)
			if err != nil {
				return
			}
			defer c.Close()
			go func() {
				for _, b := range []byte("GET /refs HTTP/1.1\r\nHost: x\r\nX-Slow: " + strings.Repeat("y", 60)) {
					if _, err := c.Write([]byte{b}); err != nil {
						return
					}
					time.Sleep(time.Second)
				}
			}()
			c.SetReadDeadline(time.Now().Add(hostileBound))
			reply, _ := io.ReadAll(c)
			if strings.HasPrefix(string(reply), "HTTP/1.1 503") {
				busy.Add(1)
			} else if time.Since(start) < hostileBound {
				cut.Add(1)
			}
		}()
	}
	time.Sleep(500 * time.Millisecond)
	m := runMeasured(t, nil, "clone", url, filepath.Join(t.TempDir(), "clone"))
	if m.code != 0 {
		t.Errorf("clone while slow clients hold the server: exit %d, %s", m.code, m.stderr)
	}
	wg.Wait()
	t.Logf("slow clients: %d answered 503, %d cut off, in %v", busy.Load(), cut.Load(), time.Since(start).Round(time.Second))
	if busy.Load()+cut.Load() != 50 {
		t.Errorf("of 50 slow clients, %d got a 503 and %d were cut off within %v; the others held on", busy.Load(), cut.Load(), hostileBound)
	}
}

// postAtOnce sends n requests with body to url at once, and returns
// their statuses and Retry-After headers.
func postAtOnce(n int, url, token string, body []byte) [][2]any {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var got [][2]any
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			status, after := post(url, token, body)
			mu.Lock()
			got = append(got, [2]any{status, after})
			mu.Unlock()
		}()
	}
	wg.Wait()
	return got
}

// dribbleBody sends a request body of n bytes one byte at a time and
// requires the server to end it within hostileBound.
func dribbleBody(t *testing.T, host string, n int) {
	c, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "POST /objects/has HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", n)
	start := time.Now()
	for {
		if _, err := c.Write([]byte{0}); err != nil || time.Since(start) > hostileBound {
			break
		}
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if n, err := c.Read(make([]byte, 1)); n > 0 || err == io.EOF {
			break
		}
	}
	if took := time.Since(start); took > hostileBound {
		t.Errorf("a dribbling body held the server for %v", took)
	} else {
		t.Logf("a dribbling body was cut off after %v", took.Round(100*time.Millisecond))
	}
}
