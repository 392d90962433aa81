package sbuml

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/sbuml/sbuml/objects"
	"github.com/sbuml/sbuml/transport"
)

// S3Settings are the settings of a remote in S3 (an s3://BUCKET/PREFIX
// URL) that override what the environment (AWS_ENDPOINT_URL,
// AWS_REGION, AWS_PROFILE) and ~/.aws/config say. Credentials always
// come from there.
type S3Settings struct {
	// Endpoint is the URL of an S3-compatible server.
	Endpoint string `json:"endpoint,omitempty"`
	// Region is the bucket's region.
	Region string `json:"region,omitempty"`
	// PathStyle addresses buckets as ENDPOINT/BUCKET (implied for an
	// endpoint that is an IP address or localhost).
	PathStyle bool `json:"path_style,omitempty"`
	// UnsafeNoConditionalWrites lets pushes move refs on a store without
	// conditional writes, where two hosts pushing one branch at the same
	// moment can lose an update.
	UnsafeNoConditionalWrites bool `json:"unsafe_no_conditional_writes,omitempty"`
}

// check validates the settings.
func (c *S3Settings) check() error {
	if c == nil || c.Endpoint == "" {
		return nil
	}
	if !isWebURL(c.Endpoint) || strings.ContainsAny(c.Endpoint, "?# \t\n") {
		return fmt.Errorf("S3 endpoint %q: want an http:// or https:// URL such as https://s3.example.org", c.Endpoint)
	}
	return nil
}

// s3Options returns the options that reach a bucket with settings c,
// keeping pack indexes in the scrapbook at dir.
func s3Options(c *S3Settings, dir string) transport.S3Options {
	o := transport.S3Options{CacheDir: filepath.Join(dir, s3CacheDir)}
	if c != nil {
		o.Endpoint, o.Region, o.PathStyle, o.UnsafeNoConditionalWrites = c.Endpoint, c.Region, c.PathStyle, c.UnsafeNoConditionalWrites
	}
	return o
}

// s3CacheDir is where a scrapbook keeps the pack indexes of the buckets
// it reads: immutable files named by their checksum, so a transfer
// downloads only the indexes of packs it has not seen.
const s3CacheDir = "cache/s3"

// s3SettingsFor returns given, or else the S3 settings of a configured
// remote at url, so that a bucket added with an endpoint is reached by
// URL#SNAPSHOT too.
func (s *Scrapbook) s3SettingsFor(url string, given *S3Settings) *S3Settings {
	if given != nil || !transport.IsS3URL(url) {
		return given
	}
	rs, err := s.Remotes()
	if err != nil {
		return nil
	}
	for _, r := range rs {
		if r.URL == url {
			return r.S3
		}
	}
	return nil
}

// RemoteGCOptions tune GCRemote.
type RemoteGCOptions struct {
	// MinAge spares packs younger than this from being condemned (0:
	// transport.DefaultGCMinAge; negative: none are spared).
	MinAge time.Duration
	// Limits bound each request.
	Limits transport.Limits
}

// GCRemote collects the garbage of a scrapbook in S3 (a configured
// remote's name, or an s3:// URL), safely while other hosts push to it:
// each run deletes what the run before condemned, once the pushes that
// were under way then have ended, and condemns what no ref reaches now
// (see transport.GCS3).
func (s *Scrapbook) GCRemote(ctx context.Context, remote string, opts RemoteGCOptions) (*transport.GCResult, error) {
	r, _, err := s.openRemote(ctx, remote, TransferOptions{Limits: opts.Limits})
	if err != nil {
		return nil, fmt.Errorf("gc %s: %w", remote, err)
	}
	defer r.Close()
	s3r, ok := r.(*transport.S3)
	if !ok {
		return nil, fmt.Errorf("gc %s: not a scrapbook in S3; run 'sbuml gc' in the scrapbook itself", remote)
	}
	res, err := transport.GCS3(ctx, s3r, transport.GCOptions{MinAge: opts.MinAge})
	if err != nil {
		return res, fmt.Errorf("gc %s: %w", remote, err)
	}
	return res, nil
}

// DeleteRemoteRefs deletes branches or tags (or full ref names) of a
// remote, each by compare-and-swap from the value it has when read, and
// the remote-tracking branches of a named remote. What only they
// reached becomes garbage there, for the remote's own gc.
func (s *Scrapbook) DeleteRemoteRefs(ctx context.Context, remote string, names []string, opts TransferOptions) ([]transport.RefResult, error) {
	r, name, err := s.openRemote(ctx, remote, opts)
	if err != nil {
		return nil, fmt.Errorf("push --delete: %w", err)
	}
	defer r.Close()
	list, err := r.ListRefs(ctx)
	if err != nil {
		return nil, fmt.Errorf("push --delete: %w", err)
	}
	var done []transport.RefResult
	for _, n := range names {
		ref, ok := findRemoteRef(list, n)
		if !ok {
			return done, fmt.Errorf("push --delete: remote %s has no branch or tag called %q", r.URL(), n)
		}
		if err := r.UpdateRef(ctx, ref.Name, ref.ID, objects.Zero); err != nil {
			return done, fmt.Errorf("push --delete: %w", err)
		}
		done = append(done, transport.RefResult{Name: ref.Name, Old: ref.ID, Status: "deleted"})
		if branch, ok := strings.CutPrefix(ref.Name, "refs/heads/"); ok && name != "" {
			if err := s.setTracking(name, branch, objects.Zero, "push --delete"); err != nil {
				return done, err
			}
		}
	}
	return done, nil
}
