package sbuml

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/sbuml/sbuml/scrapbook"
)

// SSHKey returns the scrapbook's ssh key pair: the path of the private
// key file (mode 0600) and the public key line. The pair is made once
// per scrapbook, under SCRAPBOOK/ssh/, with ssh-keygen (ed25519). The
// Debian images BuildImage makes let root log in with it.
func (s *Scrapbook) SSHKey() (privPath, pubKey string, err error) {
	dir := filepath.Join(s.Dir, scrapbook.SSHDir)
	priv := filepath.Join(dir, "id_ed25519")
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		if err := s.makeSSHKey(dir); err != nil {
			return "", "", err
		}
	}
	pub, err := os.ReadFile(priv + ".pub")
	if err != nil {
		return "", "", fmt.Errorf("ssh key of the scrapbook: %w (remove %s to make a new pair)", err, dir)
	}
	if _, err := os.Stat(priv); err != nil {
		return "", "", fmt.Errorf("ssh key of the scrapbook: %w (remove %s to make a new pair)", err, dir)
	}
	return priv, strings.TrimSpace(string(pub)), nil
}

// makeSSHKey makes the key pair in a temporary directory and renames it
// to dir, so that a process reading dir finds both files or none; if
// another process got there first, its pair stays.
func (s *Scrapbook) makeSSHKey(dir string) error {
	tmp, err := os.MkdirTemp(s.Dir, ".ssh-")
	if err != nil {
		return fmt.Errorf("make ssh key: %w", err)
	}
	defer os.RemoveAll(tmp)
	cmd := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "sbuml:"+s.Dir, "-f", filepath.Join(tmp, "id_ed25519"))
	out, err := cmd.CombinedOutput()
	if errors.Is(err, exec.ErrNotFound) {
		return errors.New("make ssh key: ssh-keygen not found in PATH: install the Debian package openssh-client (apt-get install openssh-client)")
	}
	if err != nil {
		return fmt.Errorf("make ssh key: ssh-keygen failed (%v): %s", err, strings.TrimSpace(string(out)))
	}
	if err := os.Chmod(tmp, 0o700); err != nil {
		return fmt.Errorf("make ssh key: %w", err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		if _, serr := os.Stat(dir); serr == nil {
			return nil // another process made the pair first
		}
		return fmt.Errorf("make ssh key: %w", err)
	}
	return nil
}
