package refs

import (
	"fmt"
	"path"
	"sort"
	"strings"
)

// List returns the refs whose full names start with prefix, sorted by
// name, with symbolic refs resolved. The prefix is compared as a string:
// "refs/heads/" lists all branches, "refs/heads/fe" lists
// "refs/heads/feature/x" and "refs/heads/fe", and "" lists every ref
// including HEAD. A symbolic ref whose target does not exist (HEAD on an
// unborn branch) is left out. Lock files of updates in progress are
// skipped; any other file that is not a valid ref is an error naming it.
func (s *Store) List(prefix string) ([]Ref, error) {
	if strings.HasPrefix(prefix, "/") || strings.Contains(prefix, "..") {
		return nil, fmt.Errorf("list refs: %w prefix %q: must be relative and may not contain \"..\"", ErrInvalidName, prefix)
	}
	var names []string
	// Start at the deepest directory the prefix names, or at the top.
	dir := ""
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		dir = prefix[:i]
	}
	if dir == "" {
		top, err := s.fs.ReadDir(".")
		if err != nil && !isNotExist(err) {
			return nil, fmt.Errorf("list refs: %w", err)
		}
		for _, fi := range top {
			switch {
			case fi.Name() == "refs" && fi.IsDir() && strings.HasPrefix("refs", prefix):
				if err := s.walk("refs", &names); err != nil {
					return nil, err
				}
			case isPseudoRef(fi.Name()) && fi.Mode().IsRegular():
				names = append(names, fi.Name())
			}
		}
	} else if strings.HasPrefix(dir+"/", "refs/") {
		if err := s.walk(dir, &names); err != nil {
			return nil, err
		}
	}

	sort.Strings(names)
	var refs []Ref
	for _, name := range names {
		if !strings.HasPrefix(name, prefix) {
			continue
		}
		_, v, exists, err := s.resolve(name)
		if err != nil {
			return nil, fmt.Errorf("list refs: %w", err)
		}
		if !exists {
			continue // a dangling symbolic ref, or deleted meanwhile
		}
		refs = append(refs, Ref{Name: name, ID: v.id})
	}
	return refs, nil
}

// walk appends the names of the ref files below dir to names.
func (s *Store) walk(dir string, names *[]string) error {
	entries, err := s.fs.ReadDir(dir)
	if err != nil {
		if isNotExist(err) {
			return nil
		}
		return fmt.Errorf("list refs: %w", err)
	}
	for _, fi := range entries {
		name := path.Join(dir, fi.Name())
		switch {
		case fi.IsDir():
			if err := s.walk(name, names); err != nil {
				return err
			}
		case strings.HasSuffix(name, ".lock"):
			// an update in progress, or a stale lock reported by Update
		case !fi.Mode().IsRegular():
			return fmt.Errorf("list refs: %s is neither a ref file nor a directory", s.display(name))
		default:
			if reason := nameProblem(name); reason != "" {
				return fmt.Errorf("list refs: file %s is not a ref: %s", s.display(name), reason)
			}
			*names = append(*names, name)
		}
	}
	return nil
}
