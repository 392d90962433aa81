package refs

import (
	"bytes"
	"fmt"
	"path"
	"regexp"
	"strings"
	"time"

	"github.com/sbuml/sbuml/objects"
)

// A Damage is something wrong with a file of the ref store that Check
// found.
type Damage struct {
	// File is the path of the file, as messages show it.
	File    string
	Problem string
}

func (d Damage) Error() string { return d.File + ": " + d.Problem }

// mergedLine matches the start of a reflog line inside a reason: the
// trace of a line end that was damaged into another character.
var mergedLine = regexp.MustCompile(`[0-9a-f]{64} [0-9a-f]{64} [0-9]+ `)

// reflogEpoch is a time before which no reflog line can have been
// written (2001-09-09, a Unix time of 10 decimal digits).
const reflogEpoch = 1_000_000_000

// CheckReflogs reads every reflog and reports each line that cannot be
// what a writer wrote, since reflogs carry no checksum of their own:
//
//   - a line that does not parse, or whose reason is not one line of
//     valid UTF-8 in the form writers give it (see formatReflogLine);
//   - a time before 2001 or more than a day in the future;
//   - in the reflog of a ref below refs/, a line whose old ID is not the
//     new ID of the line before (zero for the first), and a last line
//     whose new ID is not what the ref holds. An update killed after its
//     line was written but before the ref moved leaves a line that never
//     took effect; the line after it then starts from the same old ID,
//     and that is no damage.
//
// The reflog of HEAD is only parsed: HEAD moves between branches
// without a reflog line.
func (s *Store) CheckReflogs() []Damage {
	var damage []Damage
	var names []string
	if err := s.walkLogs(logsDir, &names); err != nil {
		return []Damage{{File: s.display(logsDir), Problem: err.Error()}}
	}
	now := s.now()
	for _, name := range names {
		damage = append(damage, s.checkReflog(name, now)...)
	}
	return damage
}

// walkLogs appends the ref names of the reflog files below dir.
func (s *Store) walkLogs(dir string, names *[]string) error {
	entries, err := s.fs.ReadDir(dir)
	if err != nil {
		if isNotExist(err) {
			return nil
		}
		return err
	}
	for _, fi := range entries {
		p := path.Join(dir, fi.Name())
		if fi.IsDir() {
			if err := s.walkLogs(p, names); err != nil {
				return err
			}
			continue
		}
		*names = append(*names, strings.TrimPrefix(p, logsDir+"/"))
	}
	return nil
}

// checkReflog checks the reflog of ref name.
func (s *Store) checkReflog(name string, now time.Time) []Damage {
	file := s.display(path.Join(logsDir, name))
	if reason := nameProblem(name); reason != "" {
		return []Damage{{File: file, Problem: "not the reflog of a ref: " + reason}}
	}
	data, err := s.readLog(name)
	if err != nil {
		return []Damage{{File: file, Problem: err.Error()}}
	}
	var damage []Damage
	bad := func(n int, format string, args ...any) {
		damage = append(damage, Damage{File: file, Problem: fmt.Sprintf("line %d: ", n) + fmt.Sprintf(format, args...)})
	}
	chained := strings.HasPrefix(name, "refs/")
	var prev ReflogEntry // the last line that may have taken effect
	last := 0            // its number
	lines := bytes.SplitAfter(data, []byte("\n"))
	if len(data) == 0 {
		return nil // a writer killed before it wrote its line
	}
	for i, line := range lines {
		n := i + 1
		if len(line) == 0 {
			continue
		}
		body, ok := bytes.CutSuffix(line, []byte("\n"))
		if !ok {
			bad(n, "no newline at end: %s", quoteStart(line))
			break
		}
		e, err := parseReflogLine(body)
		if err != nil {
			bad(n, "%v", err)
			continue
		}
		if formatReflogLine(e) != string(line) {
			bad(n, "the reason %s is not as sbuml writes it (one line of valid UTF-8, single spaces)", quoteStart([]byte(e.Why)))
		} else if mergedLine.MatchString(e.Why) {
			bad(n, "the reason holds another line: its line end is damaged")
		}
		if t := e.Time.Unix(); t < reflogEpoch || e.Time.After(now.Add(24*time.Hour)) {
			bad(n, "time %d is not a time sbuml could have written it", t)
		}
		if chained && e.Old != prev.New && e.Old != prev.Old {
			bad(n, "starts from %s, but the line before left the ref at %s", e.Old, prev.New)
		}
		prev, last = e, n
	}
	if chained && len(damage) == 0 {
		damage = append(damage, s.checkReflogEnd(name, file, last, prev)...)
	}
	return damage
}

// readLog reads the reflog of name whole.
func (s *Store) readLog(name string) ([]byte, error) {
	f, err := s.fs.Open(path.Join(logsDir, name))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var b bytes.Buffer
	_, err = b.ReadFrom(f)
	return b.Bytes(), err
}

// checkReflogEnd checks that the last line of the reflog of name, last,
// line n, leaves the ref where it is, or never took effect.
func (s *Store) checkReflogEnd(name, file string, n int, last ReflogEntry) []Damage {
	v, exists, err := s.read(name)
	if err != nil || (exists && v.symbolic()) {
		return nil // reported with the ref, or not a ref this log follows
	}
	cur := objects.Zero
	if exists {
		cur = v.id
	}
	if last.New == cur || last.Old == cur {
		return nil
	}
	return []Damage{{File: file, Problem: fmt.Sprintf("line %d: the last line leaves %s at %s, but it is at %s", n, name, last.New, cur)}}
}
