package sbuml_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sbuml/sbuml"
	"github.com/sbuml/sbuml/internal/s3test"
	"github.com/sbuml/sbuml/objects"
	"github.com/sbuml/sbuml/transport"
)

// s3CLI runs the sbuml command on scrapbook dir with the environment
// that reaches the S3 server at endpoint, as AWS tools are told.
func s3CLI(t testing.TB, srv *s3test.Server, endpoint, dir string, args ...string) cliResult {
	t.Helper()
	cmd := exec.CommandContext(guestContext(t), sbumlCommand(t), append([]string{"--scrapbook", dir}, args...)...)
	cmd.Env = append(os.Environ(), srv.Env()...)
	cmd.Env = append(cmd.Env, "AWS_ENDPOINT_URL="+endpoint)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return cliResult{stdout.String(), stderr.String(), err}
}

// newObjectBytes returns the stored bytes of the objects reachable from
// id that are not reachable from base.
func newObjectBytes(t testing.TB, s objects.Store, base, id objects.ID) int64 {
	t.Helper()
	old := storeReach(t, s, base)
	var n int64
	for oid, size := range storeReach(t, s, id) {
		if _, ok := old[oid]; !ok {
			n += size
		}
	}
	return n
}

// storeReach returns the objects reachable from snapshot id with their
// stored sizes.
func storeReach(t testing.TB, s objects.Store, id objects.ID) map[objects.ID]int64 {
	t.Helper()
	ctx := context.Background()
	out := map[objects.ID]int64{}
	err := objects.Walk(ctx, s, objects.Ref{ID: id, Kind: objects.KindSnapshot}, func(r objects.Ref) (bool, error) {
		if _, ok := out[r.ID]; ok {
			return false, nil
		}
		stored, err := s.Get(ctx, r.ID)
		if err != nil {
			return false, err
		}
		out[r.ID] = int64(len(stored))
		return true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestS3Machine shares a running machine through a bucket of a real S3
// server (versitygw on 127.0.0.1), with the bytes counted on the wire by
// a proxy in front of it. One guest commits and pushes; idles, commits
// and pushes again: the second push sends at most 1.1 times the new
// objects' bytes plus 64 KiB, and a scrapbook that had the first
// snapshot pulls the second for about as much. Then
// `sbuml checkout s3://BUCKET/PREFIX#ID m2 -c`, in an empty scrapbook
// told the endpoint only by AWS_ENDPOINT_URL, runs the machine on from
// the snapshot.
func TestS3Machine(t *testing.T) {
	t.Parallel()
	srv := s3test.Shared(t)
	proxy := s3test.NewProxy(t, srv.Endpoint)
	url := "s3://" + srv.Bucket(t) + "/team"
	s := guestScrapbook(t, 2)
	if err := s.AddRemote(sbuml.RemoteConfig{Name: "team", URL: url, S3: &sbuml.S3Settings{Endpoint: proxy.URL}}); err != nil {
		t.Fatal(err)
	}
	g := bootGuest(t, s, "m1", 0)
	g.startCounter()
	g.run("echo on-disk > /mnt/s3; echo in-ram > /tmp/s3")
	first := g.commit(sbuml.CommitOptions{}).ID
	if r := s3CLI(t, srv, proxy.URL, s.Dir, "push", "team", "m1"); r.err != nil {
		t.Fatalf("sbuml push: %v\n%s", r.err, r.stderr)
	}
	puller := filepath.Join(t.TempDir(), "puller")
	if r := s3CLI(t, srv, proxy.URL, "", "clone", url, puller); r.err != nil {
		t.Fatalf("sbuml clone: %v\n%s", r.err, r.stderr)
	}

	time.Sleep(2 * time.Second) // idle
	tl := commitTimeline(g, sbuml.CommitOptions{})
	newBytes := newObjectBytes(t, s.Objects, first, tl.id)
	limit := int64(1.1*float64(newBytes)) + 64<<10
	up := proxy.Up()
	r := s3CLI(t, srv, proxy.URL, s.Dir, "push", "team", "m1")
	if r.err != nil {
		t.Fatalf("sbuml push: %v\n%s", r.err, r.stderr)
	}
	sent := proxy.Up() - up
	t.Logf("incremental push of an idle commit: %d bytes of new objects, %d bytes sent on the wire (limit %d); %s", newBytes, sent, limit, strings.TrimSpace(r.stderr))
	if sent > limit {
		t.Errorf("the push sent %d bytes for %d bytes of new objects; want at most %d", sent, newBytes, limit)
	}
	down := proxy.Down()
	if r := s3CLI(t, srv, proxy.URL, puller, "pull", "origin"); r.err != nil {
		t.Fatalf("sbuml pull: %v\n%s", r.err, r.stderr)
	}
	received := proxy.Down() - down
	t.Logf("pull of it: %d bytes received on the wire", received)
	if received > limit {
		t.Errorf("the pull received %d bytes for %d bytes of new objects; want at most %d", received, newBytes, limit)
	}
	g.halt()

	other, err := sbuml.Init(filepath.Join(t.TempDir(), "other"))
	if err != nil {
		t.Fatal(err)
	}
	haltAllOnCleanup(t, other)
	r = s3CLI(t, srv, srv.Endpoint, other.Dir, "checkout", url+"#"+tl.id.String(), "m2", "-c", "--accel", guestAccel)
	if r.err != nil {
		t.Fatalf("sbuml checkout s3://…#ID m2 -c: %v\n%s", r.err, r.stderr)
	}
	t.Logf("checkout from the bucket: %s%s", r.stderr, r.stdout)
	m2 := &guest{t: t, s: other, name: "m2"}
	requireResumed(m2, tl)
	requireFiles(m2, map[string]string{"/mnt/s3": "on-disk", "/tmp/s3": "in-ram"})
	m2.halt()

	// A link file naming the bucket opens the same snapshot, and
	// downloads nothing: the scrapbook has it all now.
	link := filepath.Join(t.TempDir(), "m1.sbuml")
	body := `{"sbuml": 1, "url": "` + url + `", "snapshot": "` + tl.id.String() + `"}`
	if err := os.WriteFile(link, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	r = s3CLI(t, srv, srv.Endpoint, other.Dir, "open", link, "--accel", guestAccel)
	if r.err != nil {
		t.Fatalf("sbuml open %s: %v\n%s", link, r.err, r.stderr)
	}
	if !strings.Contains(r.stderr, "received 0 objects") || !strings.Contains(r.stderr, "sends the download to s3://") {
		t.Errorf("sbuml open printed on stderr %q; want it to name the bucket and download nothing", r.stderr)
	}
	opened := &guest{t: t, s: other, name: "m1"}
	requireResumed(opened, tl)
}

// TestS3PushKilled kills `sbuml push` to a bucket with SIGKILL at random
// moments and pushes again at once: the push must succeed, and the
// bucket must then clone into a scrapbook that passes fsck and holds
// every snapshot pushed. $SBUML_S3_KILL_TRIALS sets the number of
// trials (5 by default; the issue asks for 20).
//
// It is long because the kill loop and the checks after it are one unit,
// run over one bucket.
func TestS3PushKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the sbuml command many times")
	}
	trials := 5
	if v := os.Getenv("SBUML_S3_KILL_TRIALS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("SBUML_S3_KILL_TRIALS=%q", v)
		}
		trials = n
	}
	srv := s3test.Shared(t)
	bin := sbumlCommand(t)
	url := "s3://" + srv.Bucket(t) + "/kill"
	book := newScrapbook(t)
	if err := book.AddRemote(sbuml.RemoteConfig{Name: "s3", URL: url, S3: &sbuml.S3Settings{Endpoint: srv.Endpoint}}); err != nil {
		t.Fatal(err)
	}
	src := t.TempDir()
	writeRandomFile(t, filepath.Join(src, "base.bin"), 8*mib, 1)
	push := func() *exec.Cmd {
		cmd := exec.Command(bin, "--scrapbook", book.Dir, "push", "s3", "main")
		cmd.Env = append(os.Environ(), srv.Env()...)
		return cmd
	}
	var pushed []objects.ID
	importNew := func(round int) {
		writeRandomFile(t, filepath.Join(src, "new.bin"), 6*mib, uint64(100+round))
		r, err := book.Import(context.Background(), src, sbuml.SnapshotOptions{Branch: "main", Message: fmt.Sprint("round ", round)})
		if err != nil {
			t.Fatal(err)
		}
		pushed = append(pushed, r.ID)
	}
	// The second push, like those killed, sends one new file.
	var typical time.Duration
	for round := range 2 {
		importNew(round)
		start := time.Now()
		if out, err := push().CombinedOutput(); err != nil {
			t.Fatalf("sbuml push: %v\n%s", err, out)
		}
		typical = time.Since(start)
	}
	rng := rand.New(rand.NewPCG(16, 1))
	killed := 0
	for trial := 1; trial <= trials; trial++ {
		importNew(1 + trial)
		cmd := push()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		delay := time.Duration(rng.Int64N(int64(typical) * 6 / 5))
		time.Sleep(delay)
		cmd.Process.Signal(syscall.SIGKILL)
		if err := cmd.Wait(); err != nil {
			killed++
		}
		if out, err := push().CombinedOutput(); err != nil {
			t.Fatalf("trial %d: the push after one killed after %v failed: %v\n%s", trial, delay.Round(time.Millisecond), err, out)
		}
	}
	t.Logf("%d pushes of %v each killed at a random moment (%d before they ended), each pushed again", trials, typical.Round(time.Millisecond), killed)
	out := filepath.Join(t.TempDir(), "clone")
	cmd := exec.Command(bin, "clone", url, out)
	cmd.Env = append(os.Environ(), srv.Env()...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sbuml clone: %v\n%s", err, b)
	}
	clone, err := sbuml.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer clone.Close()
	fsckClean(t, clone)
	for i, id := range pushed {
		if ok, err := clone.Objects.Has(context.Background(), id); err != nil || !ok {
			t.Errorf("the snapshot of round %d, %s, is not in the clone", i, id.Short())
		}
	}
}

// TestS3RemoteGC deletes a branch of a bucket with push --delete and
// frees its space with two runs of sbuml remote gc: the first condemns
// the packs holding it (copying out what main still reaches from them),
// the second, no push being under way, deletes them. The bucket then
// clones and passes fsck, without the deleted branch's snapshot.
func TestS3RemoteGC(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := s3test.Shared(t)
	bin := sbumlCommand(t)
	url := "s3://" + srv.Bucket(t) + "/gc"
	book := newScrapbook(t)
	if err := book.AddRemote(sbuml.RemoteConfig{Name: "s3", URL: url, S3: &sbuml.S3Settings{Endpoint: srv.Endpoint}}); err != nil {
		t.Fatal(err)
	}
	run := func(dir string, args ...string) string {
		t.Helper()
		cmd := exec.Command(bin, append([]string{"--scrapbook", dir}, args...)...)
		cmd.Env = append(os.Environ(), srv.Env()...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("sbuml %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	src := t.TempDir()
	writeRandomFile(t, filepath.Join(src, "base.bin"), 2*mib, 1)
	if _, err := book.Import(ctx, src, sbuml.SnapshotOptions{Branch: "main", Message: "main"}); err != nil {
		t.Fatal(err)
	}
	writeRandomFile(t, filepath.Join(src, "tmp.bin"), 3*mib, 2)
	tmp, err := book.Import(ctx, src, sbuml.SnapshotOptions{Branch: "tmp", Message: "tmp"})
	if err != nil {
		t.Fatal(err)
	}
	run(book.Dir, "push", "s3", "main", "tmp")
	t.Log(strings.TrimSpace(run(book.Dir, "push", "--delete", "s3", "tmp")))
	first := run(book.Dir, "remote", "gc", "s3", "--min-age", "0")
	second := run(book.Dir, "remote", "gc", "s3", "--min-age", "0")
	t.Logf("first gc:\n%ssecond gc:\n%s", first, second)
	if !strings.Contains(first, "deleted 0 packs") || strings.Contains(first, "condemned 0 packs") {
		t.Errorf("the first gc should condemn packs and delete none:\n%s", first)
	}
	if strings.Contains(second, "deleted 0 packs") {
		t.Errorf("the second gc should delete what the first condemned:\n%s", second)
	}
	clone := filepath.Join(t.TempDir(), "clone")
	cmd := exec.Command(bin, "clone", url, clone)
	cmd.Env = append(os.Environ(), srv.Env()...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sbuml clone: %v\n%s", err, out)
	}
	c, err := sbuml.Open(clone)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fsckClean(t, c)
	r, err := transport.OpenS3(ctx, url, transport.S3Options{Endpoint: srv.Endpoint})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if ok, err := r.Store().Has(ctx, tmp.ID); err != nil || ok {
		t.Errorf("the deleted branch's snapshot is still in the bucket (%v)", err)
	}
}
