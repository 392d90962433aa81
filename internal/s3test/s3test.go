// Package s3test runs a real S3 server for tests: versitygw, built once
// per host from the Go module proxy (go install, a few minutes) into the
// test cache directory under a file lock, and started on 127.0.0.1 with
// a posix backend in a temporary directory.
package s3test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/sbuml/sbuml/internal/lockfile"
	"github.com/sbuml/sbuml/internal/testimage"
)

// Version is the versitygw release the tests run.
const Version = "v1.8.0"

// module is the package go install builds.
const module = "github.com/versity/versitygw/cmd/versitygw"

// Credentials of the servers the tests start.
const (
	AccessKey = "sbumltestkey"
	SecretKey = "sbumltestsecret0123456789"
	Region    = "us-east-1"
)

var (
	binMu sync.Mutex
	bin   string
)

// Binary returns the versitygw executable, building it if this host has
// not yet.
func Binary(t testing.TB) string {
	t.Helper()
	binMu.Lock()
	defer binMu.Unlock()
	if bin != "" {
		return bin
	}
	path, err := build()
	if err != nil {
		t.Fatalf("versitygw: %v", err)
	}
	bin = path
	return bin
}

// build installs versitygw into the cache directory unless it is there.
func build() (string, error) {
	root, err := testimage.CacheDir()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return "", err
	}
	path := filepath.Join(root, "versitygw-"+Version)
	unlock, err := lockfile.Exclusive(path + ".lock")
	if err != nil {
		return "", err
	}
	defer unlock()
	if fi, err := os.Stat(path); err == nil && fi.Mode().IsRegular() {
		return path, nil
	}
	gobin, err := os.MkdirTemp(root, ".versitygw-*")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(gobin)
	goCmd, err := exec.LookPath("go")
	if err != nil {
		goCmd = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	cmd := exec.Command(goCmd, "install", "-trimpath", "-ldflags=-s -w", module+"@"+Version)
	cmd.Env = append(os.Environ(), "GOBIN="+gobin, "GOFLAGS=-buildvcs=false", "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go install %s@%s: %v\n%s", module, Version, err, out)
	}
	if err := os.Rename(filepath.Join(gobin, "versitygw"), path); err != nil {
		return "", err
	}
	return path, nil
}

// Server is a versitygw process serving a temporary directory.
type Server struct {
	// Endpoint is the server's URL, http://127.0.0.1:PORT.
	Endpoint string
	// Dir is the directory whose subdirectories are the buckets.
	Dir string
	cmd *exec.Cmd
}

// Start starts a server for the test and stops it when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	srv, err := startIn(Binary(t), t.TempDir())
	if err != nil {
		t.Fatalf("versitygw: %v", err)
	}
	t.Cleanup(srv.Stop)
	t.Logf("versitygw %s serves %s at %s", Version, srv.Dir, srv.Endpoint)
	return srv
}

var (
	sharedMu sync.Mutex
	shared   *Server
)

// Shared returns the server shared by the tests of this process,
// starting it on first use; TestMain stops it with StopShared.
func Shared(t testing.TB) *Server {
	t.Helper()
	exe := Binary(t)
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if shared != nil {
		return shared
	}
	dir, err := os.MkdirTemp("", "sbuml-s3-")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := startIn(exe, dir)
	if err != nil {
		os.RemoveAll(dir)
		t.Fatalf("versitygw: %v", err)
	}
	shared = srv
	return srv
}

// StopShared stops the shared server, if it was started, and removes
// its directory.
func StopShared() {
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if shared != nil {
		shared.Stop()
		os.RemoveAll(shared.Dir)
		shared = nil
	}
}

// startIn starts a server on dir, trying a few ports.
func startIn(exe, dir string) (*Server, error) {
	var err error
	for range 5 {
		var srv *Server
		if srv, err = start(exe, dir); err == nil {
			return srv, nil
		}
	}
	return nil, err
}

// start runs versitygw on a free port of 127.0.0.1 and waits until it
// answers. It dies with the process that started it.
func start(exe, dir string) (*Server, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := l.Addr().String()
	l.Close()
	cmd := exec.Command(exe, "--port", addr, "--access", AccessKey, "--secret", SecretKey,
		"--region", Region, "--keep-alive", "--quiet", "posix", dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	srv := &Server{Endpoint: "http://" + addr, Dir: dir, cmd: cmd}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			return nil, fmt.Errorf("exited at start: %v: %s", err, strings.TrimSpace(out.String()))
		default:
		}
		if resp, err := http.Get(srv.Endpoint + "/"); err == nil {
			resp.Body.Close()
			return srv, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	cmd.Process.Kill()
	<-exited
	return nil, fmt.Errorf("did not answer at %s within 30s", srv.Endpoint)
}

// Stop kills the server.
func (s *Server) Stop() {
	if s.cmd.Process != nil {
		s.cmd.Process.Kill()
	}
}

// Client returns an S3 client of the server, for setting up tests.
func (s *Server) Client() *s3.Client {
	return s3.New(s3.Options{
		Region:       Region,
		BaseEndpoint: aws.String(s.Endpoint),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(AccessKey, SecretKey, ""),
	})
}

// Bucket creates a bucket of a new name and returns the name.
func (s *Server) Bucket(t testing.TB) string {
	t.Helper()
	var b [6]byte
	rand.Read(b[:])
	name := "sbuml-" + hex.EncodeToString(b[:])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := s.Client().CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
		t.Fatalf("create bucket %s: %v", name, err)
	}
	return name
}

// Env returns the environment variables through which AWS tools, and
// sbuml, reach the server: its endpoint, region and credentials, with
// the EC2 metadata service off (no request may leave this machine).
func (s *Server) Env() []string {
	return []string{
		"AWS_ACCESS_KEY_ID=" + AccessKey,
		"AWS_SECRET_ACCESS_KEY=" + SecretKey,
		"AWS_REGION=" + Region,
		"AWS_ENDPOINT_URL=" + s.Endpoint,
		"AWS_EC2_METADATA_DISABLED=true",
		"AWS_CONFIG_FILE=/dev/null",
		"AWS_SHARED_CREDENTIALS_FILE=/dev/null",
	}
}

// Proxy passes TCP connections on to a server and counts the bytes
// each way, headers and all: what a transfer costs on the wire.
type Proxy struct {
	// URL is where clients connect, http://127.0.0.1:PORT.
	URL      string
	up, down atomic.Int64
}

// NewProxy starts a proxy to the server at endpoint (http://HOST:PORT)
// until the test ends.
func NewProxy(t testing.TB, endpoint string) *Proxy {
	t.Helper()
	target := strings.TrimPrefix(endpoint, "http://")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{URL: "http://" + l.Addr().String()}
	var conns sync.WaitGroup
	t.Cleanup(func() {
		l.Close()
		conns.Wait()
	})
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns.Go(func() { p.serve(c, target) })
		}
	}()
	return p
}

// serve relays one connection.
func (p *Proxy) serve(c net.Conn, target string) {
	defer c.Close()
	s, err := net.Dial("tcp", target)
	if err != nil {
		return
	}
	defer s.Close()
	done := make(chan struct{})
	go func() {
		io.Copy(counting{s, &p.up}, c)
		s.(*net.TCPConn).CloseWrite()
		close(done)
	}()
	io.Copy(counting{c, &p.down}, s)
	c.(*net.TCPConn).CloseWrite()
	<-done
}

// counting is a writer that counts what passes.
type counting struct {
	w io.Writer
	n *atomic.Int64
}

func (c counting) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n.Add(int64(n))
	return n, err
}

// Up returns the bytes sent to the server so far.
func (p *Proxy) Up() int64 { return p.up.Load() }

// Down returns the bytes received from the server so far.
func (p *Proxy) Down() int64 { return p.down.Load() }
