package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	neturl "net/url"
	"os"
	"runtime/debug"
	"time"

	"github.com/sbuml/sbuml"
	"github.com/sbuml/sbuml/objects"
	"github.com/sbuml/sbuml/transport"
	"github.com/spf13/cobra"
)

func init() {
	rootCmd.AddCommand(remoteCmd(), pushCmd(), pullCmd(), cloneCmd(), serveCmd(), publishCmd(), fetchCmd())
}

// DefaultServeAddr is where `sbuml serve` listens unless told otherwise.
const DefaultServeAddr = "127.0.0.1:8417"

// notify tells the user, on stderr, what they should know before data
// travels (see sbuml.TransferOptions.Notify).
func notify(msg string) {
	fmt.Fprintln(os.Stderr, "sbuml: "+escapeText(msg, false))
}

// announceLink names the host a link file of this machine sends a
// download to, before anything is downloaded: the file may have come
// from anywhere.
func announceLink(arg string) {
	fi, err := os.Stat(arg)
	if err != nil || !fi.Mode().IsRegular() {
		return
	}
	b, err := os.ReadFile(arg)
	if err != nil {
		return
	}
	if l, err := sbuml.ParseLink(b); err == nil {
		if u, err := neturl.Parse(l.URL); err == nil {
			host := u.Host
			if u.Scheme == "s3" {
				host = "s3://" + host // a bucket
			}
			notify(fmt.Sprintf("link file %s sends the download to %s", arg, host))
		}
	}
}

// remoteReport is what remote add and remote rm report.
type remoteReport struct {
	Action string `json:"action"` // "added" or "removed"
	sbuml.RemoteConfig
}

func remoteCmd() *cobra.Command {
	c := &cobra.Command{
		Use:     "remote",
		Short:   "Manage the scrapbooks this one pushes to and pulls from",
		Example: "  sbuml remote add origin https://book.example.org/\n  sbuml remote ls",
	}
	remove := &cobra.Command{
		Use:               "remove NAME",
		Aliases:           []string{"rm"},
		Short:             "Remove a remote and its remote-tracking branches",
		Example:           "  sbuml remote rm backup",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeArgs(completeRemotes),
		RunE: withScrapbook(func(_ context.Context, s *sbuml.Scrapbook, args []string) (remoteReport, error) {
			rc, err := s.LookupRemote(args[0])
			if err != nil {
				return remoteReport{}, err
			}
			if err := s.RemoveRemote(args[0]); err != nil {
				return remoteReport{}, err
			}
			return remoteReport{"removed", *rc}, nil
		}, printRemoteReport),
	}
	addJSONFlag(remove)
	ls := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List the remotes",
		Example: "  sbuml remote ls\n  sbuml remote ls --json",
		Args:    cobra.NoArgs,
		RunE: withScrapbook(func(_ context.Context, s *sbuml.Scrapbook, _ []string) ([]sbuml.RemoteConfig, error) {
			return s.Remotes()
		}, func(rs []sbuml.RemoteConfig) {
			for _, r := range rs {
				fmt.Printf("%s\t%s\n", quoteName(r.Name), quoteName(r.URL))
			}
		}),
	}
	addJSONFlag(ls)
	c.AddCommand(remoteAddCmd(), remove, ls, remoteGCCmd())
	return c
}

func remoteAddCmd() *cobra.Command {
	var tokenFile string
	var s3 sbuml.S3Settings
	add := &cobra.Command{
		Use:   "add NAME URL",
		Short: "Add a remote",
		Long: `Add a remote called NAME at URL: a directory (another scrapbook, or one made by
'sbuml publish'), an http:// or https:// URL of 'sbuml serve', or of a published
directory on any web server, or s3://BUCKET[/PREFIX], a scrapbook in S3 or an
S3-compatible store (the first push makes it). --token-file names the file
holding the bearer token that 'sbuml serve' wants for pushes.

S3 credentials, region and endpoint come from where AWS tools take them
(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION,
AWS_ENDPOINT_URL, AWS_PROFILE with ~/.aws/credentials and ~/.aws/config);
--endpoint, --region and --path-style set them for this remote. A store that
does not honour conditional writes (If-Match, If-None-Match) is refused, since
two hosts pushing one branch at once could lose an update there, unless
--unsafe-no-conditional-writes says that only one host ever pushes.`,
		Example: `  sbuml remote add backup /mnt/usb/scrapbook
  sbuml remote add origin http://10.0.0.5:8417/ --token-file ~/.sbuml-token
  sbuml remote add cloud s3://my-bucket/books/main --region eu-west-1`,
		Args: cobra.ExactArgs(2),
		RunE: withScrapbook(func(_ context.Context, s *sbuml.Scrapbook, args []string) (remoteReport, error) {
			rc := sbuml.RemoteConfig{Name: args[0], URL: args[1], TokenFile: tokenFile}
			if s3 != (sbuml.S3Settings{}) {
				rc.S3 = &s3
			}
			if err := s.AddRemote(rc); err != nil {
				return remoteReport{}, err
			}
			return remoteReport{"added", rc}, nil
		}, printRemoteReport),
	}
	add.Flags().StringVar(&tokenFile, "token-file", "", "file holding the bearer token for pushing")
	add.Flags().StringVar(&s3.Endpoint, "endpoint", "", "S3: the URL of an S3-compatible server (default: $AWS_ENDPOINT_URL, else AWS)")
	add.Flags().StringVar(&s3.Region, "region", "", "S3: the bucket's region (default: $AWS_REGION or the profile's)")
	add.Flags().BoolVar(&s3.PathStyle, "path-style", false, "S3: address buckets as ENDPOINT/BUCKET (implied for an IP address or localhost)")
	add.Flags().BoolVar(&s3.UnsafeNoConditionalWrites, "unsafe-no-conditional-writes", false,
		"S3: push to a store without conditional writes, where concurrent pushes to one branch can lose an update")
	addJSONFlag(add)
	return add
}

func remoteGCCmd() *cobra.Command {
	var opts sbuml.RemoteGCOptions
	c := &cobra.Command{
		Use:   "gc REMOTE",
		Short: "Free what no ref of a scrapbook in S3 reaches, safely while others push",
		Long: `Free the space of objects that no ref of REMOTE, a scrapbook in S3 (a remote's
name or an s3:// URL), reaches. It is safe while other hosts push to the
bucket, in two steps: each run condemns the packs holding garbage (after
copying what they hold that is still reached), and deletes what the run
before it condemned once every push that was under way then has ended. So
space comes back at the second run. Packs younger than --min-age are left for
a later run: they may belong to a push under way.`,
		Example:           "  sbuml remote gc cloud\n  sbuml remote gc s3://my-bucket/books/main --min-age 1h",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeArgs(completeRemotes),
		RunE: withScrapbook(func(ctx context.Context, s *sbuml.Scrapbook, args []string) (*transport.GCResult, error) {
			if opts.MinAge == 0 {
				opts.MinAge = -1 // none spared
			}
			return s.GCRemote(ctx, args[0], opts)
		}, printRemoteGC),
	}
	c.Flags().DurationVar(&opts.MinAge, "min-age", transport.DefaultGCMinAge, "leave packs younger than this for a later gc")
	addJSONFlag(c)
	return c
}

func printRemoteGC(res *transport.GCResult) {
	if res.Waiting > 0 {
		fmt.Printf("the last gc's deletions wait for %d pushes that began before it; nothing else was done\n", res.Waiting)
		return
	}
	fmt.Printf("deleted %d packs (%s) that the last gc condemned\n", res.Deleted, transport.FormatBytes(res.DeletedBytes))
	fmt.Printf("%d objects reached; condemned %d packs (%s, %s of it garbage), copying %d objects (%s) they held that are still reached\n",
		res.Live, res.Condemned, transport.FormatBytes(res.CondemnedBytes), transport.FormatBytes(res.GarbageBytes), res.Copied, transport.FormatBytes(res.CopiedBytes))
}

func printRemoteReport(r remoteReport) {
	fmt.Printf("%s remote %s (%s)\n", r.Action, quoteName(r.Name), quoteName(r.URL))
}

func pushCmd() *cobra.Command {
	var opts sbuml.TransferOptions
	var del bool
	c := &cobra.Command{
		Use:   "push REMOTE [REF...]",
		Short: "Send branches or tags to another scrapbook",
		Long: `Send branches or tags (default: the current branch) to REMOTE, a remote's name
or a URL or path. Only the objects the remote lacks travel. The remote refs
move last, each by compare-and-swap, and only if the remote's snapshot is an
ancestor of the one pushed (--force drops that check, never the
compare-and-swap). A smart server wants the bearer token from --token-file or
the remote's configured token file. --delete deletes the named branches or
tags of the remote instead, each by compare-and-swap.`,
		Example: `  sbuml push origin
  sbuml push origin main v1 --token-file ~/.sbuml-token
  sbuml push /mnt/usb/scrapbook m1
  sbuml push --delete origin old-experiment`,
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: completeArgs(completeRemotes, completeRevisions, completeRevisions, completeRevisions),
		RunE: withScrapbook(func(ctx context.Context, s *sbuml.Scrapbook, args []string) (*sbuml.PushResult, error) {
			if del {
				return deleteRemoteRefs(ctx, s, args, opts)
			}
			bar := newBar()
			opts.Progress, opts.Notify = bar.transfer, notify
			res, err := s.Push(ctx, args[0], args[1:], opts)
			bar.done()
			if res != nil {
				summarize(res.Stats, "sent")
			}
			return res, err
		}, func(res *sbuml.PushResult) {
			for _, r := range res.Refs {
				printRefLine(r.Name, r.Status, r.Old, r.New)
			}
		}),
	}
	c.Flags().BoolVarP(&opts.Force, "force", "f", false, "replace remote refs even if the push is not a fast-forward")
	c.Flags().StringVar(&opts.TokenFile, "token-file", "", "file holding the bearer token (default: the remote's)")
	c.Flags().BoolVarP(&del, "delete", "d", false, "delete the named branches or tags of the remote")
	addJSONFlag(c)
	return c
}

// deleteRemoteRefs is push --delete REMOTE REF...: its report is a push's,
// each ref "deleted".
func deleteRemoteRefs(ctx context.Context, s *sbuml.Scrapbook, args []string, opts sbuml.TransferOptions) (*sbuml.PushResult, error) {
	if len(args) < 2 {
		return nil, usagef("push --delete: name the branches or tags of the remote to delete")
	}
	opts.Notify = notify
	refs, err := s.DeleteRemoteRefs(ctx, args[0], args[1:], opts)
	return &sbuml.PushResult{Remote: args[0], Refs: refs}, err
}

// summarize prints, unless --json, what a transfer moved: on stderr, as
// the summary that follows a progress bar.
func summarize(st *transport.Stats, verb string) {
	if st != nil && !flagJSON {
		fmt.Fprintln(os.Stderr, st.Summary(verb))
	}
}

// printRefLine prints what a push, pull, clone or publish did to one
// ref: its name, what happened, and from where to where it moved.
func printRefLine(name, status string, old, new objects.ID) {
	move := new.Short()
	switch {
	case new.IsZero():
		move = "(was " + old.Short() + ")"
	case old.IsZero():
	case old == new:
		move = old.Short()
	default:
		move = old.Short() + ".." + new.Short()
	}
	fmt.Printf("%s: %s %s\n", quoteName(name), escapeText(status, false), move)
}

// printPull prints the refs a pull or clone moved.
func printPull(res *sbuml.PullResult) {
	for _, r := range res.Refs {
		printRefLine(r.Name, r.Status, r.Old, r.New)
	}
}

func pullCmd() *cobra.Command {
	var opts sbuml.TransferOptions
	c := &cobra.Command{
		Use:   "pull REMOTE [REF...]",
		Short: "Fetch branches and tags from another scrapbook",
		Long: `Fetch from the remote REMOTE its branches and tags (or the branches and tags
named) with everything this scrapbook lacks, then point refs/remotes/REMOTE/B
at each branch B and create the tags this scrapbook does not have. Every object
is verified before it is stored. A pull that is cut off keeps what arrived;
run it again to fetch the rest.`,
		Example: `  sbuml pull origin
  sbuml pull origin main`,
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: completeArgs(completeRemotes),
		RunE: withScrapbook(func(ctx context.Context, s *sbuml.Scrapbook, args []string) (*sbuml.PullResult, error) {
			bar := newBar()
			opts.Progress = bar.transfer
			res, err := s.Pull(ctx, args[0], args[1:], opts)
			bar.done()
			if res != nil {
				summarize(res.Stats, "received")
			}
			return res, err
		}, printPull),
	}
	addJSONFlag(c)
	return c
}

// cloneReport is what clone reports: the pull into the new scrapbook.
type cloneReport struct {
	Dir string `json:"dir"`
	*sbuml.PullResult
}

func cloneCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "clone URL DIR",
		Short: "Copy a whole scrapbook into a new one",
		Long: `Make a new scrapbook in DIR holding everything the scrapbook at URL has: a path,
an http(s):// URL of 'sbuml serve', or of a published directory. Its branches
become local branches and remote-tracking branches of the remote "origin".`,
		Example: `  sbuml clone https://book.example.org/ ~/book
  sbuml clone /mnt/usb/scrapbook ./copy`,
		Args: cobra.ExactArgs(2),
		RunE: withoutScrapbook(func(ctx context.Context, args []string) (cloneReport, error) {
			bar := newBar()
			s, res, err := sbuml.Clone(ctx, args[0], args[1], sbuml.TransferOptions{Progress: bar.transfer})
			bar.done()
			if res != nil {
				summarize(res.Stats, "received")
			}
			if s == nil {
				return cloneReport{}, err
			}
			defer s.Close()
			if err != nil && !errors.Is(err, objects.ErrCorrupt) && !errors.Is(err, transport.ErrProtocol) {
				err = fmt.Errorf("%w; to finish, run: sbuml --scrapbook %s pull origin", err, s.Dir)
			}
			return cloneReport{Dir: s.Dir, PullResult: res}, err
		}, func(r cloneReport) {
			printPull(r.PullResult)
			fmt.Fprintf(os.Stderr, "cloned into %s\n", r.Dir)
		}),
	}
	addJSONFlag(c)
	return c
}

// fetchReport is what fetch reports.
type fetchReport struct {
	Snapshot objects.ID       `json:"snapshot"`
	Stats    *transport.Stats `json:"stats"`
}

func fetchCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "fetch URL#SNAPSHOT | FILE.sbuml",
		Short: "Fetch one snapshot of another scrapbook",
		Long: `Fetch one snapshot, and everything it reaches that this scrapbook lacks, from
URL#SNAPSHOT (SNAPSHOT: an ID, or a branch or tag of the remote; without it,
the remote's HEAD) or from a .sbuml link file, and print its ID. No ref moves.`,
		Example: `  sbuml fetch https://book.example.org/#main
  sbuml fetch ~/Downloads/demo.sbuml`,
		Args: cobra.ExactArgs(1),
		RunE: withScrapbook(func(ctx context.Context, s *sbuml.Scrapbook, args []string) (fetchReport, error) {
			bar := newBar()
			id, st, err := s.FetchLink(ctx, args[0], sbuml.TransferOptions{Progress: bar.transfer, Notify: notify})
			bar.done()
			summarize(st, "received")
			return fetchReport{Snapshot: id, Stats: st}, err
		}, func(r fetchReport) { fmt.Println(r.Snapshot) }),
	}
	addJSONFlag(c)
	return c
}

func publishCmd() *cobra.Command {
	var url string
	c := &cobra.Command{
		Use:   "publish DIR --url URL",
		Short: "Write the scrapbook as a static directory for any web server",
		Long: `Write the branches and tags of the scrapbook into DIR, a new, empty or earlier
published directory, for a web server to serve at URL: the objects in packs
with their indexes (any web server serves them, by byte ranges where it can),
refs.json, index.html listing every snapshot, and a link file per branch
(branches/NAME.sbuml), tag (tags/NAME.sbuml) and snapshot (snapshots/ID.sbuml)
that 'sbuml open' and a browser understand. Others clone or pull from URL.
Publishing again adds only new objects.`,
		Example: `  sbuml publish /var/www/book --url https://book.example.org/
  python3 -m http.server -d /var/www/book 8000 &`,
		Args: cobra.ExactArgs(1),
		RunE: withScrapbook(func(ctx context.Context, s *sbuml.Scrapbook, args []string) (*sbuml.PublishResult, error) {
			if url == "" {
				return nil, usagef("publish: --url is required: the address where %s will be served", args[0])
			}
			bar := newBar()
			res, err := s.Publish(ctx, args[0], url, sbuml.TransferOptions{Progress: bar.transfer})
			bar.done()
			if res != nil {
				summarize(res.Stats, "wrote")
			}
			return res, err
		}, func(res *sbuml.PublishResult) {
			for _, r := range res.Refs {
				printRefLine(r.Name, r.Status, r.Old, r.New)
			}
			fmt.Printf("published %d snapshots in %s for %s (index.html, %d link files)\n", res.Snapshots, res.Dir, res.URL, len(res.Links))
		}),
	}
	c.Flags().StringVar(&url, "url", "", "the http(s):// URL where DIR will be served (required)")
	addJSONFlag(c)
	return c
}

// serveFlags are the flags of sbuml serve.
type serveFlags struct {
	addr, tokenFile, certFile, keyFile string
	readOnly                           bool
	limits                             transport.ServerLimits
	maxMemory                          sizeFlag
}

func serveCmd() *cobra.Command {
	var f serveFlags
	c := &cobra.Command{
		Use:   "serve",
		Short: "Serve the scrapbook over HTTP for clone, pull and push",
		Long: `Serve the scrapbook over HTTP (the smart protocol of docs/transport.md) for
'sbuml clone', 'pull' and 'push' on other machines. Anyone who can reach the
address may read. Pushing needs the bearer token held in --token-file; without
one, pushes are refused. --read-only refuses pushes whatever the token. With
--tls-cert and --tls-key the server speaks HTTPS. The other flags bound what
clients can make the server hold; excess load is answered 503 with a time to
retry after.`,
		Example: `  sbuml serve --token-file ~/.sbuml-token
  sbuml serve --addr 0.0.0.0:8417 --read-only --tls-cert cert.pem --tls-key key.pem`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return serve(f) },
	}
	c.Flags().StringVar(&f.addr, "addr", DefaultServeAddr, "address to listen on")
	c.Flags().BoolVar(&f.readOnly, "read-only", false, "refuse every push")
	c.Flags().StringVar(&f.tokenFile, "token-file", "", "file holding the bearer token that pushes must carry")
	c.Flags().StringVar(&f.certFile, "tls-cert", "", "TLS certificate file (PEM)")
	c.Flags().StringVar(&f.keyFile, "tls-key", "", "TLS key file (PEM)")
	c.Flags().IntVar(&f.limits.MaxConns, "max-conns", transport.DefaultServerMaxConns, "open connections at most; more are answered 503 and closed")
	c.Flags().IntVar(&f.limits.MaxRequests, "max-requests", transport.DefaultServerMaxRequests, "requests handled at once; more are answered 503 with Retry-After")
	f.maxMemory = transport.DefaultServerMaxMemory
	c.Flags().Var(&f.maxMemory, "max-memory", "memory for request bodies (pushed objects, ID lists) at once, e.g. 512M")
	c.Flags().DurationVar(&f.limits.HeaderTimeout, "header-timeout", transport.DefaultServerHeaderTimeout, "time to read a request's headers")
	c.Flags().DurationVar(&f.limits.IdleTimeout, "idle-timeout", transport.DefaultServerIdleTimeout, "time a connection may wait for its next request")
	c.Flags().Int64Var(&f.limits.LowSpeedLimit, "low-speed-limit", transport.DefaultLowSpeedLimit, "bytes/s a body must move at, both ways, after --low-speed-time")
	c.Flags().DurationVar(&f.limits.LowSpeedTime, "low-speed-time", transport.DefaultLowSpeedTime, "how long a body may lag behind --low-speed-limit, or stall")
	return c
}

// serve runs sbuml serve until SIGINT or SIGTERM.
func serve(f serveFlags) error {
	if (f.certFile == "") != (f.keyFile == "") {
		return usagef("serve: give both --tls-cert and --tls-key, or neither")
	}
	f.limits.MaxMemory = int64(f.maxMemory)
	// Garbage from finished requests is collected before the process
	// grows far past what requests may hold.
	debug.SetMemoryLimit(f.limits.MaxMemory + 128<<20)
	opts := transport.ServerOptions{ReadOnly: f.readOnly, Log: serveLog, Limits: f.limits}
	if f.tokenFile != "" {
		var err error
		if opts.Token, err = sbuml.ReadTokenFile(f.tokenFile); err != nil {
			return fmt.Errorf("serve: %w", err)
		}
	}
	d, err := transport.OpenScrapbook(scrapbookDir())
	if err != nil {
		return err
	}
	defer d.Close()
	ln, err := net.Listen("tcp", f.addr)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	push := "push needs the token in " + f.tokenFile
	switch {
	case f.readOnly:
		push = "read-only"
	case f.tokenFile == "":
		push = "push disabled (no --token-file)"
	}
	fmt.Fprintf(os.Stderr, "serving %s at %s://%s/ (%s)\n", d.Path(), scheme(f.certFile), ln.Addr(), push)
	handler := transport.NewServer(d, opts)
	if err := serveUntilInterrupted(handler.HTTPServer(), handler.LimitListener(ln), f.certFile, f.keyFile, nil); err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}

// serveLog prints a refused or failed request on stderr.
func serveLog(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s %s\n", time.Now().Format("2006-01-02 15:04:05"), fmt.Sprintf(format, args...))
}
