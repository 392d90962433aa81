package sbuml

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/sbuml/sbuml/internal/atomicfile"
	"github.com/sbuml/sbuml/internal/lockfile"
	"github.com/sbuml/sbuml/objects"
	"github.com/sbuml/sbuml/refs"
	"github.com/sbuml/sbuml/scrapbook"
	"github.com/sbuml/sbuml/transport"
)

// RemoteConfig names another scrapbook that this one pushes to and
// pulls from (SBUML's posting of snapshots, with git's vocabulary).
type RemoteConfig struct {
	// Name is a short name such as "origin"; pulled branches appear as
	// refs/remotes/NAME/BRANCH.
	Name string `json:"name"`
	// URL is a directory path, file://, http:// or https:// URL.
	URL string `json:"url"`
	// TokenFile, if set, holds the bearer token for pushing to a smart
	// server.
	TokenFile string `json:"token_file,omitempty"`
	// S3, for an s3:// URL, says how to reach the bucket where the
	// environment and ~/.aws do not.
	S3 *S3Settings `json:"s3,omitempty"`
}

// remotesFile is the scrapbook file that lists its remotes.
const remotesFile = scrapbook.RemotesFile

type remotesConfig struct {
	Remotes []RemoteConfig `json:"remotes"`
}

// ValidateRemoteName checks a remote name: a valid short ref name
// without slashes.
func ValidateRemoteName(name string) error {
	if err := refs.ValidateShortName(name); err != nil {
		return fmt.Errorf("remote name: %w", err)
	}
	if strings.Contains(name, "/") {
		return fmt.Errorf("remote name %q: may not contain '/'", name)
	}
	return nil
}

// Remotes lists the scrapbook's remotes, sorted by name.
func (s *Scrapbook) Remotes() ([]RemoteConfig, error) {
	c, err := s.readRemotes()
	if err != nil {
		return nil, err
	}
	return c.Remotes, nil
}

// LookupRemote returns the remote called name.
func (s *Scrapbook) LookupRemote(name string) (*RemoteConfig, error) {
	c, err := s.readRemotes()
	if err != nil {
		return nil, err
	}
	for _, r := range c.Remotes {
		if r.Name == name {
			return &r, nil
		}
	}
	return nil, fmt.Errorf("no remote called %q (see 'sbuml remote ls')", name)
}

// AddRemote adds a remote. A directory path is made absolute so that the
// remote works from any working directory.
func (s *Scrapbook) AddRemote(rc RemoteConfig) error {
	if err := ValidateRemoteName(rc.Name); err != nil {
		return err
	}
	u, err := normalizeURL(rc.URL)
	if err != nil {
		return fmt.Errorf("remote %s: %w", rc.Name, err)
	}
	rc.URL = u
	if rc.S3 != nil && !transport.IsS3URL(u) {
		return fmt.Errorf("remote %s: S3 settings (endpoint, region, path style) are for s3:// URLs", rc.Name)
	}
	if err := rc.S3.check(); err != nil {
		return fmt.Errorf("remote %s: %w", rc.Name, err)
	}
	if rc.TokenFile != "" {
		if rc.TokenFile, err = filepath.Abs(rc.TokenFile); err != nil {
			return err
		}
	}
	return s.editRemotes(func(c *remotesConfig) error {
		for _, r := range c.Remotes {
			if r.Name == rc.Name {
				return fmt.Errorf("remote %s already exists (URL %s); remove it first", rc.Name, r.URL)
			}
		}
		c.Remotes = append(c.Remotes, rc)
		sort.Slice(c.Remotes, func(i, j int) bool { return c.Remotes[i].Name < c.Remotes[j].Name })
		return nil
	})
}

// RemoveRemote removes a remote and its remote-tracking refs.
func (s *Scrapbook) RemoveRemote(name string) error {
	if err := s.editRemotes(func(c *remotesConfig) error {
		for i, r := range c.Remotes {
			if r.Name == name {
				c.Remotes = append(c.Remotes[:i], c.Remotes[i+1:]...)
				return nil
			}
		}
		return fmt.Errorf("no remote called %q", name)
	}); err != nil {
		return err
	}
	tracking, err := s.Refs.List("refs/remotes/" + name + "/")
	if err != nil {
		return err
	}
	for _, r := range tracking {
		if err := s.Refs.Update(r.Name, r.ID, objects.Zero, "remote remove "+name); err != nil {
			return err
		}
	}
	return nil
}

// normalizeURL checks a remote URL and makes a path absolute.
func normalizeURL(u string) (string, error) {
	switch {
	case u == "":
		return "", errors.New("empty URL")
	case strings.HasPrefix(u, "http://"), strings.HasPrefix(u, "https://"):
		if strings.ContainsAny(u, "?# \t\n") {
			return "", fmt.Errorf("URL %q may not contain a query, fragment or white space", u)
		}
		return u, nil
	case strings.HasPrefix(u, "file://"):
		return u, nil
	case transport.IsS3URL(u):
		bucket, prefix, err := transport.ParseS3URL(u)
		if err != nil {
			return "", err
		}
		return strings.TrimSuffix(transport.S3Scheme+bucket+"/"+prefix, "/"), nil
	case strings.Contains(u, "://"):
		return "", fmt.Errorf("URL %q: unsupported scheme (use a path, file://, http://, https:// or s3://)", u)
	}
	return filepath.Abs(u)
}

func (s *Scrapbook) readRemotes() (*remotesConfig, error) {
	p := filepath.Join(s.Dir, remotesFile)
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return &remotesConfig{}, nil
	}
	if err != nil {
		return nil, err
	}
	var c remotesConfig
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("%s is corrupt: %v", p, err)
	}
	return &c, nil
}

// editRemotes changes the remotes file under its lock file.
func (s *Scrapbook) editRemotes(change func(*remotesConfig) error) error {
	p := filepath.Join(s.Dir, remotesFile)
	lock, err := lockfile.Create(p+".lock", 0o644, refs.LockWait)
	if err != nil {
		return fmt.Errorf("change the remotes: %w", err)
	}
	defer lock.Release()
	c, err := s.readRemotes()
	if err != nil {
		return err
	}
	if err := change(c); err != nil {
		return err
	}
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(p, append(b, '\n'), 0o644)
}

// TransferOptions tune Push, Pull, Clone, Publish and FetchLink.
type TransferOptions struct {
	// Force lets a push replace a remote ref that is not an ancestor of
	// what is pushed. It never overrides the compare-and-swap.
	Force bool
	// TokenFile holds the bearer token for pushing to a smart server; it
	// overrides the remote's configured token file.
	TokenFile string
	// Concurrency is the number of requests in flight (0: the default).
	Concurrency int
	// Progress, if set, is called a few times a second.
	Progress func(transport.Progress)
	// Client makes HTTP requests (nil: one from transport.NewHTTPClient).
	// Whatever it is, Limits bound every request.
	Client *http.Client
	// Limits bound each HTTP request and what a remote may list (zero
	// fields: the defaults; the command line reads them from the
	// environment, see transport.LimitsFromEnv).
	Limits transport.Limits
	// Notify, if set, is told what the user should know before data
	// travels: the host a link file sends a download to, a push token
	// about to go over plain http to another host.
	Notify func(string)
	// S3 sets how to reach a bucket named by an s3:// URL that is not a
	// configured remote (clone, fetch, checkout of a link).
	S3 *S3Settings
}

func (o TransferOptions) transport() transport.Options {
	return transport.Options{Concurrency: o.Concurrency, Progress: o.Progress}
}

// open returns the options to open a remote with.
func (o TransferOptions) open(token string) transport.OpenOptions {
	return transport.OpenOptions{Token: token, Client: o.Client, Limits: o.Limits, Notify: o.Notify}
}

// openRemote opens a configured remote by name, or a URL or path. The
// name is "" for a URL.
func (s *Scrapbook) openRemote(ctx context.Context, remote string, opts TransferOptions) (transport.Remote, string, error) {
	rc := &RemoteConfig{URL: remote}
	if ValidateRemoteName(remote) == nil && !isPathLike(remote) {
		var err error
		if rc, err = s.LookupRemote(remote); err != nil {
			return nil, "", err
		}
	}
	tokenFile := rc.TokenFile
	if opts.TokenFile != "" {
		tokenFile = opts.TokenFile
	}
	token, err := ReadTokenFile(tokenFile)
	if err != nil {
		return nil, "", err
	}
	o := opts.open(token)
	o.S3 = s3Options(s.s3SettingsFor(rc.URL, rc.S3), s.Dir)
	r, err := transport.Open(ctx, rc.URL, o)
	if err != nil {
		return nil, "", err
	}
	return r, rc.Name, nil
}

// isPathLike reports whether arg looks like a path or URL rather than a
// remote name.
func isPathLike(arg string) bool {
	return strings.ContainsAny(arg, "/:") || arg == "." || arg == ".."
}

// ReadTokenFile reads a bearer token file (sbuml serve's, sbuml ui's, a
// remote's): its content without surrounding white space, which must be
// one token, a single line without spaces. An empty name gives an empty
// token.
func ReadTokenFile(name string) (string, error) {
	if name == "" {
		return "", nil
	}
	b, err := os.ReadFile(name)
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" || strings.ContainsAny(tok, " \t\r\n") {
		return "", fmt.Errorf("token file %s must hold one token: a single line without spaces", name)
	}
	return tok, nil
}

// PushResult describes a push.
type PushResult struct {
	Remote string                `json:"remote"`
	Refs   []transport.RefResult `json:"refs"`
	Stats  *transport.Stats      `json:"stats"`
}

// Push sends local branches or tags to a remote (a configured name, or a
// URL or path): the snapshots and whatever they reach that the remote
// lacks, then the remote refs of the same names, each moved by
// compare-and-swap. refs are branch or tag names, or full ref names;
// none means the current branch. A push that is not a fast-forward is
// refused unless opts.Force. Pushing to a named remote also moves its
// remote-tracking refs.
func (s *Scrapbook) Push(ctx context.Context, remote string, names []string, opts TransferOptions) (*PushResult, error) {
	// The snapshots sent, and the tracking refs set after, must not be
	// removed by a gc meanwhile.
	release, err := s.holdObjects()
	if err != nil {
		return nil, fmt.Errorf("push: %w", err)
	}
	defer release()
	if len(names) == 0 {
		b, err := s.CurrentBranch()
		if err != nil {
			return nil, fmt.Errorf("push: no branch given and HEAD names none: %w", err)
		}
		names = []string{b}
	}
	var updates []transport.RefUpdate
	for _, n := range names {
		full, id, err := s.localRef(n)
		if err != nil && len(names) == 1 && n == names[0] && errors.Is(err, refs.ErrNotFound) {
			// Machines commit to branches of their own names, not main.
			return nil, fmt.Errorf("push: %w; name what to push: sbuml push %s BRANCH (see sbuml branch)", err, remote)
		}
		if err != nil {
			return nil, fmt.Errorf("push: %w", err)
		}
		updates = append(updates, transport.RefUpdate{Name: full, New: id, Force: opts.Force})
	}
	pushed := make([]objects.ID, len(updates))
	for i, u := range updates {
		pushed[i] = u.New
	}
	claims, err := s.childClaimUpdates(ctx, pushed)
	if err != nil {
		return nil, fmt.Errorf("push: %w", err)
	}
	updates = append(updates, claims...)
	r, name, err := s.openRemote(ctx, remote, opts)
	if err != nil {
		return nil, fmt.Errorf("push: %w", err)
	}
	defer r.Close()
	topts := opts.transport()
	if topts.Haves, err = s.trackingHaves(name); err != nil {
		return nil, fmt.Errorf("push: %w", err)
	}
	results, stats, err := transport.Push(ctx, s.Objects, r, updates, topts)
	res := &PushResult{Remote: r.URL(), Refs: results, Stats: stats}
	if err != nil {
		return res, err
	}
	if name != "" {
		for _, u := range results {
			if branch, ok := strings.CutPrefix(u.Name, "refs/heads/"); ok {
				if err := s.setTracking(name, branch, u.New, "push"); err != nil {
					return res, err
				}
			}
		}
	}
	return res, nil
}

// trackingHaves returns the snapshots of the remote-tracking refs of
// remote (none for a URL, named ""): the remote had them when they were
// last pushed or pulled, so a push need not ask about what they reach.
func (s *Scrapbook) trackingHaves(remote string) ([]objects.ID, error) {
	if remote == "" {
		return nil, nil
	}
	tracking, err := s.Refs.List("refs/remotes/" + remote + "/")
	if err != nil {
		return nil, err
	}
	haves := make([]objects.ID, len(tracking))
	for i, r := range tracking {
		haves[i] = r.ID
	}
	return haves, nil
}

// localRef resolves a branch name, tag name or full ref name to the full
// name and the snapshot it points at.
func (s *Scrapbook) localRef(name string) (string, objects.ID, error) {
	candidates := []string{name}
	if !strings.HasPrefix(name, "refs/") {
		candidates = []string{"refs/heads/" + name, "refs/tags/" + name}
	}
	for _, c := range candidates {
		if err := refs.ValidateName(c); err != nil {
			return "", objects.Zero, err
		}
		id, err := s.Refs.Get(c)
		if err == nil {
			return c, id, nil
		}
		if !errors.Is(err, refs.ErrNotFound) {
			return "", objects.Zero, err
		}
	}
	return "", objects.Zero, fmt.Errorf("no branch or tag called %q: %w", name, refs.ErrNotFound)
}

// setTracking points refs/remotes/REMOTE/BRANCH at id, whatever it held.
func (s *Scrapbook) setTracking(remote, branch string, id objects.ID, why string) error {
	name := "refs/remotes/" + remote + "/" + branch
	old, err := s.tip(name)
	if err != nil || old == id {
		return err
	}
	return s.Refs.Update(name, old, id, why)
}

// RefChange is a local ref that a pull created or moved, or left alone.
type RefChange struct {
	// Remote is the remote's ref, Name the local one.
	Remote string     `json:"remote"`
	Name   string     `json:"name"`
	Old    objects.ID `json:"old"`
	New    objects.ID `json:"new"`
	// Status is "created", "updated", "up to date", or why the ref was
	// left alone.
	Status string `json:"status"`
}

// PullResult describes a pull or a clone.
type PullResult struct {
	Remote string           `json:"remote"`
	Refs   []RefChange      `json:"refs"`
	Stats  *transport.Stats `json:"stats"`
}

// Pull fetches from a configured remote the snapshots of its branches
// and tags (or of the branches, tags or full ref names named) and
// whatever they reach that this scrapbook lacks, then points
// refs/remotes/REMOTE/BRANCH at each branch and creates the tags (and
// other refs) this scrapbook does not have; one it has at another
// snapshot is left alone and reported. Objects
// are verified and stored as they arrive, so a pull that is cut off
// keeps what it received and the next one fetches only the rest. Refs
// move only after everything they reach is stored.
func (s *Scrapbook) Pull(ctx context.Context, remote string, names []string, opts TransferOptions) (*PullResult, error) {
	if err := ValidateRemoteName(remote); err != nil || isPathLike(remote) {
		return nil, fmt.Errorf("pull: %q is not a remote name; pull records refs/remotes/NAME/..., so add the URL first with 'sbuml remote add NAME URL'", remote)
	}
	r, name, err := s.openRemote(ctx, remote, opts)
	if err != nil {
		return nil, fmt.Errorf("pull: %w", err)
	}
	defer r.Close()
	res, _, err := s.pull(ctx, r, name, names, opts)
	return res, err
}

// pull fetches from r and updates the refs recorded for remote name. It
// also returns the remote's ref list.
func (s *Scrapbook) pull(ctx context.Context, r transport.Remote, name string, names []string, opts TransferOptions) (*PullResult, *transport.RefList, error) {
	release, err := s.lockObjects()
	if err != nil {
		return nil, nil, fmt.Errorf("pull: %w", err)
	}
	defer release()
	list, err := r.ListRefs(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("pull: %w", err)
	}
	var chosen []transport.Ref
	if len(names) == 0 {
		for _, ref := range list.Refs {
			if strings.HasPrefix(ref.Name, "refs/heads/") || strings.HasPrefix(ref.Name, "refs/tags/") {
				chosen = append(chosen, ref)
			}
		}
	}
	for _, n := range names {
		ref, ok := findRemoteRef(list, n)
		if !ok {
			return nil, nil, fmt.Errorf("pull: remote %s has no branch or tag called %q", r.URL(), n)
		}
		chosen = append(chosen, ref)
	}
	want := make([]objects.ID, 0, len(chosen))
	for _, ref := range chosen {
		want = append(want, ref.ID)
	}
	res := &PullResult{Remote: r.URL()}
	res.Stats, err = transport.Fetch(ctx, s.Objects, r, want, opts.transport())
	if err != nil {
		if errors.Is(err, objects.ErrCorrupt) || errors.Is(err, transport.ErrProtocol) {
			return res, list, fmt.Errorf("pull: %w", err)
		}
		return res, list, fmt.Errorf("pull: %w (what arrived is kept; pull again to fetch the rest)", err)
	}
	for _, ref := range chosen {
		c := RefChange{Remote: ref.Name, New: ref.ID}
		if branch, ok := strings.CutPrefix(ref.Name, "refs/heads/"); ok {
			c.Name = "refs/remotes/" + name + "/" + branch
		} else {
			c.Name = ref.Name
		}
		if c.Old, err = s.tip(c.Name); err != nil {
			return res, list, err
		}
		switch {
		case c.Old == c.New:
			c.Status = "up to date"
		case !c.Old.IsZero() && !strings.HasPrefix(c.Name, "refs/remotes/"):
			// Tags and other refs are created, never moved, by a pull.
			c.Status = fmt.Sprintf("left alone: the local ref is at %s", c.Old.Short())
		default:
			if err := s.Refs.Update(c.Name, c.Old, c.New, "pull "+r.URL()); err != nil {
				return res, list, fmt.Errorf("pull: %w", err)
			}
			c.Status = "updated"
			if c.Old.IsZero() {
				c.Status = "created"
			}
		}
		res.Refs = append(res.Refs, c)
	}
	claims, err := s.pullChildClaims(ctx, r, list, opts)
	res.Refs = append(res.Refs, claims...)
	if err != nil {
		return res, list, fmt.Errorf("pull: child numbering: %w", err)
	}
	return res, list, nil
}

// findRemoteRef finds a branch, tag or full ref name in a ref list.
func findRemoteRef(l *transport.RefList, name string) (transport.Ref, bool) {
	for _, full := range []string{name, "refs/heads/" + name, "refs/tags/" + name} {
		if id := l.Get(full); !id.IsZero() {
			return transport.Ref{Name: full, ID: id}, true
		}
	}
	return transport.Ref{}, false
}

// Clone makes a new scrapbook in dir holding everything the remote at
// url has: each remote branch becomes a local branch and a
// remote-tracking branch of the remote "origin", tags are copied, and
// HEAD names the branch the remote's HEAD names. If the transfer is cut
// off, the scrapbook keeps what arrived; 'sbuml pull origin' in it
// fetches the rest.
func Clone(ctx context.Context, url, dir string, opts TransferOptions) (*Scrapbook, *PullResult, error) {
	u, err := normalizeURL(url)
	if err != nil {
		return nil, nil, fmt.Errorf("clone: %w", err)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("clone: %w", err)
	}
	if err := opts.S3.check(); err != nil {
		return nil, nil, fmt.Errorf("clone: %w", err)
	}
	o := opts.open("")
	o.S3 = s3Options(opts.S3, abs)
	r, err := transport.Open(ctx, u, o)
	if err != nil {
		return nil, nil, fmt.Errorf("clone: %w", err)
	}
	defer r.Close()
	// A remote whose refs cannot be taken leaves no scrapbook behind.
	if _, err := r.ListRefs(ctx); err != nil {
		return nil, nil, fmt.Errorf("clone: %w", err)
	}
	s, err := Init(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("clone: %w", err)
	}
	origin := RemoteConfig{Name: "origin", URL: u}
	if transport.IsS3URL(u) {
		origin.S3 = opts.S3
	}
	if err := s.AddRemote(origin); err != nil {
		return nil, nil, fmt.Errorf("clone: %w", err)
	}
	res, list, err := s.pull(ctx, r, "origin", nil, opts)
	if err != nil {
		return s, res, fmt.Errorf("clone into %s: %w", s.Dir, err)
	}
	for _, c := range res.Refs {
		if branch, ok := strings.CutPrefix(c.Remote, "refs/heads/"); ok {
			if err := s.Refs.Update("refs/heads/"+branch, objects.Zero, c.New, "clone "+u); err != nil {
				return s, res, fmt.Errorf("clone: %w", err)
			}
		}
	}
	if head, ok := strings.CutPrefix(list.Head, "refs/heads/"); ok && !list.Get(list.Head).IsZero() && head != DefaultBranch {
		if err := s.Refs.SetSymbolic("HEAD", list.Head); err != nil {
			return s, res, fmt.Errorf("clone: %w", err)
		}
	}
	return s, res, nil
}
