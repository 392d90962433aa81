package testimage

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sbuml/sbuml/image"
	"github.com/sbuml/sbuml/internal/lockfile"
)

var (
	debianMu     sync.Mutex
	debianShared *image.Image // built or loaded Debian image, once known
)

// Debian returns the Debian test image (image.BuildDebian, with the
// agent GuestAgent builds) with Disk replaced by a private sparse copy in
// t.TempDir(). root may log in to it by ssh with the key DebianKey
// returns.
//
// The image is built once per machine and recipe into
// $SBUML_TEST_CACHE/debian-<recipe>, under a file lock like Get's; the
// .deb files are kept in debootstrap/ next to it, so a rebuild downloads
// only the archive's package lists. Building takes a minute or two and
// needs root; without root the test is skipped.
func Debian(t testing.TB) *image.Image {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the Debian test image needs root to build (debootstrap, chroot)")
	}
	img, err := loadDebian(t)
	if err != nil {
		t.Fatalf("debian test image: %v", err)
	}
	return privateCopy(t, img)
}

// DebianKey returns the private key file of the ssh key pair the Debian
// test image lets root in with.
func DebianKey(t testing.TB) string {
	t.Helper()
	key, _, err := debianKey()
	if err != nil {
		t.Fatalf("debian test image: %v", err)
	}
	return key
}

// loadDebian returns the shared Debian image, building it if no process
// has yet.
func loadDebian(t testing.TB) (*image.Image, error) {
	debianMu.Lock()
	defer debianMu.Unlock()
	if debianShared != nil {
		return debianShared, nil
	}
	root, err := CacheDir()
	if err != nil {
		return nil, err
	}
	_, pub, err := debianKey()
	if err != nil {
		return nil, err
	}
	mu.Lock()
	agent, err := buildAgent()
	mu.Unlock()
	if err != nil {
		return nil, err
	}
	opts := image.DebianOptions{CacheDir: filepath.Join(root, "debootstrap"), AuthorizedKeys: []string{pub}, Agent: agent}
	recipe, err := opts.RecipeHash()
	if err != nil {
		return nil, err
	}
	opts.Dir = filepath.Join(root, "debian-"+recipe)
	unlock, err := lockfile.Exclusive(opts.Dir + ".lock")
	if err != nil {
		return nil, err
	}
	defer unlock()
	if img, err := image.Load(opts.Dir); err == nil {
		debianShared = img
		return img, nil
	}
	var progress bytes.Buffer
	opts.Progress = &progress
	start := time.Now()
	img, err := image.BuildDebian(context.Background(), opts)
	if err != nil {
		return nil, err
	}
	t.Logf("built the Debian test image in %s in %v:\n%s", opts.Dir, time.Since(start).Round(time.Second), progress.String())
	// The shared files are read by many tests at once; nobody may write them.
	for _, f := range []string{img.Kernel, img.Initrd, img.Disk} {
		if err := os.Chmod(f, 0o444); err != nil {
			return nil, err
		}
	}
	debianShared = img
	pruneStale(root, "debian-*", opts.Dir)
	return img, nil
}

// debianKey returns the test key pair's private key file and public key,
// making the pair with ssh-keygen the first time.
func debianKey() (priv, pub string, err error) {
	root, err := CacheDir()
	if err != nil {
		return "", "", err
	}
	dir := filepath.Join(root, "ssh-test-key")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", err
	}
	unlock, err := lockfile.Exclusive(dir + ".lock")
	if err != nil {
		return "", "", err
	}
	defer unlock()
	priv = filepath.Join(dir, "id_ed25519")
	if _, err := os.Stat(priv + ".pub"); err != nil {
		os.Remove(priv)
		out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "sbuml-test", "-f", priv).CombinedOutput()
		if err != nil {
			return "", "", fmt.Errorf("ssh-keygen (apt-get install openssh-client): %v: %s", err, strings.TrimSpace(string(out)))
		}
	}
	data, err := os.ReadFile(priv + ".pub")
	if err != nil {
		return "", "", err
	}
	return priv, strings.TrimSpace(string(data)), nil
}
