package sbuml

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/sbuml/sbuml/agent"
	"github.com/sbuml/sbuml/internal/tarball"
	"github.com/sbuml/sbuml/vmm"
)

// Working inside a running guest through its agent (sbuml-guest): exec
// and cp, as docker exec and docker cp do for containers. The connection
// goes through the machine's keeper, which holds the agent channel.

// GuestReadyTimeout bounds how long Guest waits for the guest's agent to
// answer.
const GuestReadyTimeout = 30 * time.Second

// Guest connects to the agent in a running machine, through the
// machine's keeper (started if it is not running). Close the client when
// done.
func (s *Scrapbook) Guest(ctx context.Context, machine string) (*agent.Client, error) {
	return s.guest(ctx, machine)
}

func (s *Scrapbook) guest(ctx context.Context, machine string) (*agent.Client, error) {
	dir, err := s.existingMachineDir(machine)
	if err != nil {
		return nil, err
	}
	if d, err := filepath.EvalSymlinks(dir); err == nil {
		dir = d
	}
	cfg, err := vmm.LoadConfig(dir)
	if err != nil {
		return nil, err
	}
	switch st := vmm.Inspect(ctx, dir).Status; st.State {
	case vmm.StateRunning, vmm.StateBusy:
	case vmm.StateFrozen:
		return nil, fmt.Errorf("machine %s is frozen, and a frozen guest runs nothing: continue it first ('sbuml continue %s')", machine, machine)
	default:
		return nil, fmt.Errorf("machine %s is %s, not running", machine, st.State)
	}
	if !cfg.Agent {
		return nil, fmt.Errorf("machine %s has no agent port (it was booted from an image without sbuml-guest, by an older sbuml, or from a snapshot of such a machine); use 'sbuml console %s'", machine, machine)
	}
	if err := s.startKeeper(dir); err != nil {
		return nil, fmt.Errorf("machine %s: %w", machine, err)
	}
	c, err := agent.Dial(ctx, filepath.Join(dir, keeperSocket))
	if err != nil {
		return nil, fmt.Errorf("machine %s: reach its keeper: %w", machine, err)
	}
	pctx, cancel := context.WithTimeout(ctx, GuestReadyTimeout)
	defer cancel()
	if _, err := c.Ping(pctx); err != nil {
		c.Close()
		if errors.Is(ctx.Err(), context.Canceled) {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("machine %s: the agent in the guest does not answer (%v): its image may have no sbuml-guest, or it has not started or has died; see 'sbuml console %s --tail'", machine, err, machine)
	}
	waitPrepared(pctx, c)
	return c, nil
}

// waitPrepared waits, within ctx, until the keeper has set the guest's
// clock and reseeded its random numbers on the current connection, so a
// command run in a machine just checked out never sees the snapshot's
// time or randomness. A keeper that cannot is not waited for past ctx.
func waitPrepared(ctx context.Context, c *agent.Client) {
	for {
		var st keeperStatus
		if err := c.Call(ctx, callKeeperStatus, nil, &st); err != nil || st.Prepared {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// guestKind says what a guest path is: "dir", "file" or "" (nothing).
func guestKind(ctx context.Context, a agent.Agent, p string) (string, error) {
	var out bytes.Buffer
	script := `if [ -d "$1" ]; then echo dir; elif [ -e "$1" ] || [ -L "$1" ]; then echo file; else echo none; fi`
	code, err := agent.Run(ctx, a, agent.ExecRequest{Argv: []string{"sh", "-c", script, "sh", p}}, nil, &out, io.Discard)
	if err != nil {
		return "", err
	}
	if code != 0 {
		return "", fmt.Errorf("cannot look at %s in the guest (sh exited %d)", p, code)
	}
	switch k := strings.TrimSpace(out.String()); k {
	case "dir", "file":
		return k, nil
	}
	return "", nil
}

// CopyToGuest copies the host file or directory src into a running
// machine at dst, with docker cp's rules: into dst if it is a directory
// (or ends in '/', which must then be one), else as dst; a src ending in
// "/." copies the directory's contents rather than the directory.
func (s *Scrapbook) CopyToGuest(ctx context.Context, machine, src, dst string) error {
	if err := s.copyToGuest(ctx, machine, src, dst); err != nil {
		return fmt.Errorf("cp %s %s:%s: %w", src, machine, dst, err)
	}
	return nil
}

func (s *Scrapbook) copyToGuest(ctx context.Context, machine, src, dst string) error {
	fi, err := os.Lstat(src)
	if err != nil {
		return err
	}
	contents := fi.IsDir() && (strings.HasSuffix(src, "/.") || src == ".")
	c, err := s.Guest(ctx, machine)
	if err != nil {
		return err
	}
	defer c.Close()
	kind, err := guestKind(ctx, c, dst)
	if err != nil {
		return err
	}
	// dir is the guest directory the tar stream is extracted in; name
	// is what the copy of src is called there ("" for its contents).
	var dir, name string
	switch {
	case kind == "dir" && contents:
		dir = dst
	case kind == "dir":
		dir, name = dst, filepath.Base(filepath.Clean(src))
	case strings.HasSuffix(dst, "/"):
		return fmt.Errorf("%s is not a directory in the guest", dst)
	case kind == "file" && fi.IsDir():
		return fmt.Errorf("cannot copy directory %s over the file %s of the guest", src, dst)
	default:
		dir, name = path.Dir(dst), path.Base(dst)
		if contents {
			// A new directory receives the contents.
			if code, err := agent.Run(ctx, c, agent.ExecRequest{Argv: []string{"mkdir", dst}}, nil, io.Discard, io.Discard); err != nil || code != 0 {
				return fmt.Errorf("cannot make directory %s in the guest", dst)
			}
			dir, name = dst, ""
		}
	}
	pr, pw := io.Pipe()
	go func() {
		tw := tar.NewWriter(pw)
		_, err := tarball.Write(tw, src, name)
		if err == nil {
			err = tw.Close()
		}
		pw.CloseWithError(err)
	}()
	err = c.CopyIn(ctx, dir, pr)
	pr.CloseWithError(err)
	return err
}

// CopyFromGuest copies the guest file or directory src of a running
// machine to the host at dst, with docker cp's rules (see CopyToGuest).
func (s *Scrapbook) CopyFromGuest(ctx context.Context, machine, src, dst string) error {
	if err := s.copyFromGuest(ctx, machine, src, dst); err != nil {
		return fmt.Errorf("cp %s:%s %s: %w", machine, src, dst, err)
	}
	return nil
}

func (s *Scrapbook) copyFromGuest(ctx context.Context, machine, src, dst string) error {
	contents := strings.HasSuffix(src, "/.")
	fi, statErr := os.Stat(dst)
	var dir, name string
	switch {
	case statErr == nil && fi.IsDir() && contents:
		dir = dst
	case statErr == nil && fi.IsDir():
		dir, name = dst, path.Base(path.Clean(src))
	case strings.HasSuffix(dst, "/") || strings.HasSuffix(dst, string(filepath.Separator)):
		return fmt.Errorf("%s is not a directory", dst)
	case statErr != nil && !errors.Is(statErr, fs.ErrNotExist):
		return statErr
	default:
		dir, name = filepath.Dir(dst), filepath.Base(dst)
	}
	c, err := s.Guest(ctx, machine)
	if err != nil {
		return err
	}
	defer c.Close()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := tarball.Extract(tar.NewReader(pr), dir, renameTop(path.Base(path.Clean(src)), name, contents))
		pr.CloseWithError(err)
		done <- err
	}()
	err = c.CopyOut(ctx, src, pw)
	pw.CloseWithError(err)
	if xerr := <-done; err == nil {
		err = xerr
	}
	return err
}

// renameTop maps the entries of a copy out of the guest, named under top,
// to top's new name, or with contents to what top holds; it refuses
// entries outside top.
func renameTop(top, name string, contents bool) tarball.Rename {
	return func(entry string) (string, bool) {
		rest, ok := strings.CutPrefix(entry, top)
		if !ok || (rest != "" && rest[0] != '/') {
			return "", false
		}
		if contents {
			return strings.TrimPrefix(rest, "/"), true
		}
		return name + rest, true
	}
}
