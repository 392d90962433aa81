package refs

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/sbuml/sbuml/objects"
)

// ReflogEntry is one update of a ref. Old is objects.Zero when the update
// created the ref, New is objects.Zero when it deleted it.
type ReflogEntry struct {
	Old, New objects.ID
	Time     time.Time // to the second
	Why      string    // one line
}

// Reflog returns the updates of ref name, oldest first. The reflog of a
// deleted ref survives it. A symbolic ref such as HEAD has its own reflog
// of the updates made through it; Reflog does not follow it. It returns
// an error wrapping ErrNotFound if neither the ref nor its reflog exists.
func (s *Store) Reflog(name string) ([]ReflogEntry, error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	p := path.Join(logsDir, name)
	f, err := s.fs.Open(p)
	if err != nil {
		if !isNotExist(err) {
			return nil, s.fileError("read reflog of "+name, "open", p, err)
		}
		if _, exists, rerr := s.read(name); rerr != nil || exists {
			return nil, rerr
		}
		return nil, errorf(ErrNotFound, "ref %s not found, and it has no reflog", name)
	}
	defer f.Close()
	entries, err := parseReflog(f)
	if err != nil {
		return nil, fmt.Errorf("reflog %s is corrupt: %v", s.display(p), err)
	}
	return entries, nil
}

// parseReflog parses reflog lines "<old hex> <new hex> <unix seconds> <why>\n".
func parseReflog(r io.Reader) ([]ReflogEntry, error) {
	var entries []ReflogEntry
	br := bufio.NewReader(r)
	for n := 1; ; n++ {
		line, err := br.ReadBytes('\n')
		if err == io.EOF && len(line) == 0 {
			return entries, nil
		}
		if err == io.EOF {
			return nil, fmt.Errorf("line %d: no newline at end: %s", n, quoteStart(line))
		}
		if err != nil {
			return nil, err
		}
		e, err := parseReflogLine(line[:len(line)-1])
		if err != nil {
			return nil, fmt.Errorf("line %d: %v", n, err)
		}
		entries = append(entries, e)
	}
}

func parseReflogLine(line []byte) (ReflogEntry, error) {
	var e ReflogEntry
	fields := bytes.SplitN(line, []byte(" "), 4)
	if len(fields) != 4 {
		return e, fmt.Errorf("want \"<old> <new> <unix seconds> <why>\", got %s", quoteStart(line))
	}
	var err error
	if e.Old, err = parseHexID(fields[0]); err != nil {
		return e, fmt.Errorf("old ID: %v", err)
	}
	if e.New, err = parseHexID(fields[1]); err != nil {
		return e, fmt.Errorf("new ID: %v", err)
	}
	sec, err := strconv.ParseInt(string(fields[2]), 10, 64)
	if err != nil {
		return e, fmt.Errorf("time %q is not a decimal number of seconds", fields[2])
	}
	e.Time = time.Unix(sec, 0)
	e.Why = string(fields[3])
	return e, nil
}

// formatReflogLine returns the reflog line for e, with Why made into one
// line of valid UTF-8: every run of white space and control characters
// becomes one space, and leading and trailing ones are dropped.
func formatReflogLine(e ReflogEntry) string {
	why := strings.ToValidUTF8(e.Why, "\uFFFD")
	why = strings.Join(strings.FieldsFunc(why, func(r rune) bool {
		return unicode.IsSpace(r) || unicode.IsControl(r)
	}), " ")
	return fmt.Sprintf("%s %s %d %s\n", e.Old, e.New, e.Time.Unix(), why)
}

// appendReflog appends e to the reflog of ref name, creating the log and
// its directories as needed, and syncs it. It returns a function that
// undoes the append, for an update that fails afterwards.
func (s *Store) appendReflog(name string, e ReflogEntry) (undo func(), err error) {
	p := path.Join(logsDir, name)
	var size int64 = -1 // -1: the log did not exist
	if fi, err := s.fs.Stat(p); err == nil {
		size = fi.Size()
	}
	f, err := s.fs.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o666)
	if err != nil {
		return nil, s.fileError("update reflog of "+name, "open", p, err)
	}
	undo = func() {
		if size < 0 {
			s.fs.Remove(p)
			return
		}
		if f, err := s.fs.OpenFile(p, os.O_WRONLY, 0); err == nil {
			f.Truncate(size)
			f.Close()
		}
	}
	_, err = f.Write([]byte(formatReflogLine(e)))
	if err == nil {
		_, err = syncFile(s.fs, f, p)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		undo()
		return nil, s.fileError("update reflog of "+name, "append to", p, err)
	}
	return undo, nil
}
