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
	go func() { pw.CloseWithError(writeTar(pw, src, name)) }()
	err = c.CopyIn(ctx, dir, pr)
	pr.CloseWithError(err)
	return err
}

// writeTar writes a tar stream of the host file or directory root, its
// entries named under name (the directory's contents at the top if name
// is "").
func writeTar(w io.Writer, root, name string) error {
	tw := tar.NewWriter(w)
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		entry := path.Join(name, filepath.ToSlash(rel))
		if entry == "." {
			return nil // the top of a contents copy
		}
		return addTarEntry(tw, p, entry, d)
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

func addTarEntry(tw *tar.Writer, p, entry string, d fs.DirEntry) error {
	fi, err := d.Info()
	if err != nil {
		return err
	}
	link := ""
	if fi.Mode()&fs.ModeSymlink != 0 {
		if link, err = os.Readlink(p); err != nil {
			return err
		}
	} else if !fi.Mode().IsRegular() && !fi.IsDir() {
		return nil // sockets, devices and pipes are not copied
	}
	hdr, err := tar.FileInfoHeader(fi, link)
	if err != nil {
		return err
	}
	hdr.Name = entry
	if fi.IsDir() {
		hdr.Name += "/"
	}
	hdr.Uname, hdr.Gname = "", ""
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return nil
	}
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := io.CopyN(tw, f, hdr.Size); err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	return nil
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
		err := extractTar(pr, dir, path.Base(path.Clean(src)), name, contents)
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

// extractTar extracts a tar stream whose entries are named under top
// into the host directory dir, renaming top to name (or, with contents,
// putting what is under top into dir itself). Entries that would land
// outside dir are refused.
func extractTar(r io.Reader, dir, top, name string, contents bool) error {
	tr := tar.NewReader(r)
	var dirs []*tar.Header // directory times are set last: writing in them changes them
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		rel, ok := renameTop(path.Clean(hdr.Name), top, name, contents)
		if !ok {
			return fmt.Errorf("the guest sent %q, outside %s", hdr.Name, top)
		}
		if rel == "" {
			continue
		}
		target := filepath.Join(dir, filepath.FromSlash(rel))
		if err := extractEntry(tr, hdr, target, dir); err != nil {
			return err
		}
		if hdr.Typeflag == tar.TypeDir {
			h := *hdr
			h.Name = target
			dirs = append(dirs, &h)
		}
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		os.Chtimes(dirs[i].Name, dirs[i].ModTime, dirs[i].ModTime)
	}
	return nil
}

// renameTop maps an entry named under top to its name under dir.
func renameTop(entry, top, name string, contents bool) (string, bool) {
	rest, ok := strings.CutPrefix(entry, top)
	if !ok || (rest != "" && rest[0] != '/') || !filepath.IsLocal(entry) {
		return "", false
	}
	if contents {
		return strings.TrimPrefix(rest, "/"), true
	}
	return name + rest, true
}

func extractEntry(tr *tar.Reader, hdr *tar.Header, target, root string) error {
	if !strings.HasPrefix(target, filepath.Clean(root)+string(filepath.Separator)) && target != filepath.Clean(root) {
		return fmt.Errorf("the guest sent %q, outside the destination", hdr.Name)
	}
	if err := noLinkBetween(root, target); err != nil {
		return err
	}
	if fi, err := os.Lstat(target); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
		// Replace a link rather than write through it.
		if err := os.Remove(target); err != nil {
			return err
		}
	}
	mode := fs.FileMode(hdr.Mode) & fs.ModePerm
	switch hdr.Typeflag {
	case tar.TypeDir:
		if err := os.MkdirAll(target, 0o755); err != nil {
			return err
		}
		return os.Chmod(target, mode)
	case tar.TypeSymlink:
		os.Remove(target)
		return os.Symlink(hdr.Linkname, target)
	case tar.TypeReg:
		f, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
		if err != nil {
			return err
		}
		_, err = io.Copy(f, tr)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
		os.Chmod(target, mode)
		return os.Chtimes(target, hdr.ModTime, hdr.ModTime)
	}
	return nil // hard links, devices: not copied
}

// noLinkBetween refuses a target under root reached through a symbolic
// link that an earlier entry of the same stream may have made: a guest
// sending "x -> /etc" then "x/passwd" must not write /etc/passwd.
func noLinkBetween(root, target string) error {
	rel, err := filepath.Rel(root, filepath.Dir(target))
	if err != nil || rel == "." {
		return err
	}
	p := root
	for _, part := range strings.Split(rel, string(filepath.Separator)) {
		p = filepath.Join(p, part)
		fi, err := os.Lstat(p)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			return fmt.Errorf("refusing to write %s through the symbolic link %s", target, p)
		}
	}
	return nil
}
