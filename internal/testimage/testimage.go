// Package testimage gives tests bootable sbuml guest images: the tiny
// image (Get) and the Debian image (Debian).
//
// Each image is built once per machine and recipe into a shared cache
// directory, guarded by a file lock so that test binaries running in
// parallel build it only once. Each caller gets its own writable copy of
// the disk; the kernel and initrd are shared and must not be modified.
//
// The image carries the guest agent, sbuml-guest, built from this
// module's source once per test process (GuestAgent); the cache is keyed
// on the binary as well as on image.RecipeHash.
//
// The cache lives in $SBUML_TEST_CACHE if set, else in the sbuml-test
// directory under os.UserCacheDir. Building needs apt (see docs/image.md)
// and the go command; if it fails, the test fails with the reason.
package testimage

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/sbuml/sbuml/image"
	"github.com/sbuml/sbuml/internal/lockfile"
)

// CacheEnv names the environment variable that overrides the cache
// directory.
const CacheEnv = "SBUML_TEST_CACHE"

var (
	mu     sync.Mutex
	shared *image.Image // built or loaded image, once known
	built  bool         // whether this process built shared, for tests
	agent  string       // the sbuml-guest binary, once built
)

// Get returns the shared test image with Disk replaced by a private sparse
// copy in t.TempDir(), which the test may boot read-write.
func Get(t testing.TB) *image.Image {
	t.Helper()
	img, err := load(t)
	if err != nil {
		t.Fatalf("test image: %v", err)
	}
	return privateCopy(t, img)
}

// privateCopy returns img with Disk replaced by a sparse copy of it in
// t.TempDir().
func privateCopy(t testing.TB, img *image.Image) *image.Image {
	t.Helper()
	private := *img
	private.Modules = append([]string(nil), img.Modules...)
	private.Packages = append([]string(nil), img.Packages...)
	private.Disk = filepath.Join(t.TempDir(), "disk")
	if err := image.CopySparse(private.Disk, img.Disk); err != nil {
		t.Fatalf("test image: %v", err)
	}
	return &private
}

// CacheDir returns the directory holding cached test images and the
// Debian packages they are built from.
func CacheDir() (string, error) {
	if dir := os.Getenv(CacheEnv); dir != "" {
		return filepath.Abs(dir)
	}
	dir, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("no cache directory (set %s): %w", CacheEnv, err)
	}
	return filepath.Join(dir, "sbuml-test"), nil
}

// DebCacheDir returns the directory where the test image's Debian packages
// are kept.
func DebCacheDir() (string, error) {
	dir, err := CacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "debs"), nil
}

// GuestAgent returns the path of a sbuml-guest binary built from this
// module's source (static, stripped), the one the test image carries.
// It is built once per test process and kept in the cache directory
// under a name made from its content.
func GuestAgent(t testing.TB) string {
	t.Helper()
	mu.Lock()
	defer mu.Unlock()
	path, err := buildAgent()
	if err != nil {
		t.Fatalf("test image: %v", err)
	}
	return path
}

// buildAgent builds the agent unless this process has. mu is held.
func buildAgent() (string, error) {
	if agent != "" {
		return agent, nil
	}
	root, err := CacheDir()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(root, ".sbuml-guest-*")
	if err != nil {
		return "", err
	}
	tmp.Close()
	defer os.Remove(tmp.Name())
	goCmd, err := exec.LookPath("go")
	if err != nil {
		goCmd = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	cmd := exec.Command(goCmd, "build", "-trimpath", "-ldflags=-s -w", "-o", tmp.Name(), "github.com/sbuml/sbuml/cmd/sbuml-guest")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build sbuml-guest: %v\n%s", err, out)
	}
	bin, err := os.ReadFile(tmp.Name())
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(bin)
	path := filepath.Join(root, "sbuml-guest-"+hex.EncodeToString(sum[:6]))
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", err
	}
	agent = path
	return path, nil
}

// load returns the shared image, building it if no process has yet.
func load(t testing.TB) (*image.Image, error) {
	mu.Lock()
	defer mu.Unlock()
	if shared != nil {
		return shared, nil
	}
	root, err := CacheDir()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, err
	}
	agentPath, err := buildAgent()
	if err != nil {
		return nil, err
	}
	// The agent's name holds its hash: images differ when it does.
	dir := filepath.Join(root, "image-"+image.RecipeHash()+"-"+filepath.Base(agentPath)[len("sbuml-guest-"):])
	unlock, err := lockfile.Exclusive(dir + ".lock")
	if err != nil {
		return nil, err
	}
	defer unlock()
	if img, err := image.Load(dir); err == nil {
		shared = img
		return img, nil
	}
	var progress bytes.Buffer
	start := time.Now()
	img, err := image.Build(context.Background(), image.Options{
		Dir:      dir,
		CacheDir: filepath.Join(root, "debs"),
		Agent:    agentPath,
		Progress: &progress,
	})
	if err != nil {
		return nil, err
	}
	t.Logf("built test image in %s in %v:\n%s", dir, time.Since(start).Round(time.Millisecond), progress.String())
	// The shared files are read by many tests at once; nobody may write them.
	for _, f := range []string{img.Kernel, img.Initrd, img.Disk} {
		if err := os.Chmod(f, 0o444); err != nil {
			return nil, err
		}
	}
	shared, built = img, true
	pruneStale(root, "image-*", dir)
	return img, nil
}

// staleAge is how long an image of another recipe stays in the cache
// after it was last built; it may still be in use by another checkout.
const staleAge = 24 * time.Hour

// pruneStale removes images of other recipes (directories matching
// pattern) from the cache root that were built more than staleAge ago,
// and agent binaries as old, so that changing the recipe during
// development does not pile up images. Errors are ignored: the cache is
// only an optimization.
func pruneStale(root, pattern, keep string) {
	agents, _ := filepath.Glob(filepath.Join(root, "sbuml-guest-*"))
	for _, a := range agents {
		if fi, err := os.Stat(a); err == nil && agent != "" && a != agent && time.Since(fi.ModTime()) > staleAge {
			os.Remove(a)
		}
	}
	dirs, _ := filepath.Glob(filepath.Join(root, pattern))
	for _, dir := range dirs {
		fi, err := os.Stat(dir)
		if err != nil || !fi.IsDir() || dir == keep || time.Since(fi.ModTime()) < staleAge {
			continue
		}
		unlock, err := lockfile.Exclusive(dir + ".lock")
		if err != nil {
			continue
		}
		os.RemoveAll(dir)
		os.Remove(dir + ".lock")
		unlock()
	}
}
