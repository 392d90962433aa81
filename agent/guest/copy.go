package guest

import (
	"archive/tar"
	"bufio"
	"encoding/json"
	"io"
	"path/filepath"

	"github.com/sbuml/sbuml/agent/internal/mux"
	"github.com/sbuml/sbuml/agent/internal/proto"
	"github.com/sbuml/sbuml/internal/tarball"
)

// copyIn extracts the tar stream of a copyin session into its directory.
func (d *Daemon) copyIn(s *mux.Session) {
	var a proto.CopyInArgs
	if err := json.Unmarshal(s.Args(), &a); err != nil || a.Dir == "" {
		fail(s, "copy in: malformed request %s", s.Args())
		return
	}
	r := s.Reader(mux.StreamIn)
	if err := tarball.Extract(tar.NewReader(r), a.Dir, nil); err != nil {
		if s.Err() == nil {
			fail(s, "copy into %s: %v", a.Dir, err)
		}
		return
	}
	io.Copy(io.Discard, r) // what follows the archive's end, up to the stream's
	s.Exit(proto.ExitStatus{})
}

// copyOut writes a tar stream of the session's path.
func (d *Daemon) copyOut(s *mux.Session) {
	var a proto.CopyOutArgs
	if err := json.Unmarshal(s.Args(), &a); err != nil || a.Path == "" {
		fail(s, "copy out: malformed request %s", s.Args())
		return
	}
	out := s.Writer(mux.StreamOut)
	bw := bufio.NewWriterSize(out, 64<<10)
	tw := tar.NewWriter(bw)
	top := filepath.Base(a.Path)
	if top == "/" {
		top = ""
	}
	skipped, err := tarball.Write(tw, a.Path, top)
	if err == nil {
		err = tw.Close()
	}
	if err == nil {
		err = bw.Flush()
	}
	if s.Err() != nil {
		return // the host went away
	}
	if err != nil {
		fail(s, "copy %s out: %v", a.Path, err)
		return
	}
	if skipped > 0 {
		d.logf("copy %s out: left out %d sockets, devices or pipes", a.Path, skipped)
	}
	out.Close()
	s.Exit(proto.ExitStatus{})
}
