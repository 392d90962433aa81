package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	neturl "net/url"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
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

// interruptible returns a context cancelled by the first SIGINT or
// SIGTERM, so that an interrupted command ends cleanly (a transfer keeps
// what it received, an import what it stored, an export removes what it
// wrote, gc leaves nothing half done), and a second one ends the process
// at once.
func interruptible() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		select {
		case <-sigs:
			// The first interrupt ends the work cleanly (a transfer keeps
			// what arrived); from now on the default action applies, so
			// a second one ends the process at once.
			signal.Stop(sigs)
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, func() {
		signal.Stop(sigs)
		cancel()
	}
}

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

func remoteCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "remote",
		Short: "Manage the scrapbooks this one pushes to and pulls from",
	}
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
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := openScrapbook()
			if err != nil {
				return err
			}
			rc := sbuml.RemoteConfig{Name: args[0], URL: args[1], TokenFile: tokenFile}
			if s3 != (sbuml.S3Settings{}) {
				rc.S3 = &s3
			}
			return s.AddRemote(rc)
		},
	}
	add.Flags().StringVar(&tokenFile, "token-file", "", "file holding the bearer token for pushing")
	add.Flags().StringVar(&s3.Endpoint, "endpoint", "", "S3: the URL of an S3-compatible server (default: $AWS_ENDPOINT_URL, else AWS)")
	add.Flags().StringVar(&s3.Region, "region", "", "S3: the bucket's region (default: $AWS_REGION or the profile's)")
	add.Flags().BoolVar(&s3.PathStyle, "path-style", false, "S3: address buckets as ENDPOINT/BUCKET (implied for an IP address or localhost)")
	add.Flags().BoolVar(&s3.UnsafeNoConditionalWrites, "unsafe-no-conditional-writes", false,
		"S3: push to a store without conditional writes, where concurrent pushes to one branch can lose an update")
	remove := &cobra.Command{
		Use:     "remove NAME",
		Aliases: []string{"rm"},
		Short:   "Remove a remote and its remote-tracking branches",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := openScrapbook()
			if err != nil {
				return err
			}
			return s.RemoveRemote(args[0])
		},
	}
	ls := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List the remotes",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := openScrapbook()
			if err != nil {
				return err
			}
			rs, err := s.Remotes()
			if err != nil {
				return err
			}
			if flagJSON {
				if rs == nil {
					rs = []sbuml.RemoteConfig{}
				}
				return printJSON(rs)
			}
			for _, r := range rs {
				fmt.Printf("%s\t%s\n", quoteName(r.Name), quoteName(r.URL))
			}
			return nil
		},
	}
	addJSONFlag(ls)
	c.AddCommand(add, remove, ls, remoteGCCmd())
	return c
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
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := openScrapbook()
			if err != nil {
				return err
			}
			if opts.MinAge == 0 {
				opts.MinAge = -1 // none spared
			}
			ctx, stop := interruptible()
			defer stop()
			res, err := s.GCRemote(ctx, args[0], opts)
			if err != nil {
				return err
			}
			if flagJSON {
				return printJSON(res)
			}
			if res.Waiting > 0 {
				fmt.Printf("the last gc's deletions wait for %d pushes that began before it; nothing else was done\n", res.Waiting)
				return nil
			}
			fmt.Printf("deleted %d packs (%s) that the last gc condemned\n", res.Deleted, transport.FormatBytes(res.DeletedBytes))
			fmt.Printf("%d objects reached; condemned %d packs (%s, %s of it garbage), copying %d objects (%s) they held that are still reached\n",
				res.Live, res.Condemned, transport.FormatBytes(res.CondemnedBytes), transport.FormatBytes(res.GarbageBytes), res.Copied, transport.FormatBytes(res.CopiedBytes))
			return nil
		},
	}
	c.Flags().DurationVar(&opts.MinAge, "min-age", transport.DefaultGCMinAge, "leave packs younger than this for a later gc")
	addJSONFlag(c)
	return c
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
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := openScrapbook()
			if err != nil {
				return err
			}
			ctx, stop := interruptible()
			defer stop()
			if del {
				return deleteRemoteRefs(ctx, s, args, opts)
			}
			bar := newProgressBar(os.Stderr)
			opts.Progress, opts.Notify = bar.update, notify
			res, err := s.Push(ctx, args[0], args[1:], opts)
			bar.clear()
			if res != nil && res.Stats != nil && !flagJSON {
				fmt.Fprintln(os.Stderr, res.Stats.Summary("sent"))
			}
			if err != nil {
				return err
			}
			if flagJSON {
				return printJSON(res)
			}
			for _, r := range res.Refs {
				fmt.Printf("%s: %s %s\n", quoteName(r.Name), escapeText(r.Status, false), movement(r.Old.Short(), r.New.Short(), r.Old.IsZero()))
			}
			return nil
		},
	}
	c.Flags().BoolVarP(&opts.Force, "force", "f", false, "replace remote refs even if the push is not a fast-forward")
	c.Flags().StringVar(&opts.TokenFile, "token-file", "", "file holding the bearer token (default: the remote's)")
	c.Flags().BoolVarP(&del, "delete", "d", false, "delete the named branches or tags of the remote")
	addJSONFlag(c)
	return c
}

// deleteRemoteRefs is push --delete REMOTE REF...
func deleteRemoteRefs(ctx context.Context, s *sbuml.Scrapbook, args []string, opts sbuml.TransferOptions) error {
	if len(args) < 2 {
		return errors.New("push --delete: name the branches or tags of the remote to delete")
	}
	opts.Notify = notify
	res, err := s.DeleteRemoteRefs(ctx, args[0], args[1:], opts)
	if flagJSON && err == nil {
		return printJSON(res)
	}
	for _, r := range res {
		fmt.Printf("%s: deleted (was %s)\n", quoteName(r.Name), r.Old.Short())
	}
	return err
}

// movement describes a ref moving from old to new.
func movement(old, new string, created bool) string {
	if created {
		return new
	}
	if old == new {
		return old
	}
	return old + ".." + new
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
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := openScrapbook()
			if err != nil {
				return err
			}
			ctx, stop := interruptible()
			defer stop()
			bar := newProgressBar(os.Stderr)
			opts.Progress = bar.update
			res, err := s.Pull(ctx, args[0], args[1:], opts)
			bar.clear()
			return finishPull(res, err)
		},
	}
	addJSONFlag(c)
	return c
}

// finishPull prints the outcome of a pull or clone.
func finishPull(res *sbuml.PullResult, err error) error {
	if res != nil && res.Stats != nil && !flagJSON {
		fmt.Fprintln(os.Stderr, res.Stats.Summary("received"))
	}
	if err != nil {
		return err
	}
	if flagJSON {
		return printJSON(res)
	}
	for _, r := range res.Refs {
		fmt.Printf("%s: %s %s\n", quoteName(r.Name), escapeText(r.Status, false), movement(r.Old.Short(), r.New.Short(), r.Old.IsZero()))
	}
	return nil
}

func cloneCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "clone URL DIR",
		Short: "Copy a whole scrapbook into a new one",
		Long: `Make a new scrapbook in DIR holding everything the scrapbook at URL has: a path,
an http(s):// URL of 'sbuml serve', or of a published directory. Its branches
become local branches and remote-tracking branches of the remote "origin".`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := interruptible()
			defer stop()
			bar := newProgressBar(os.Stderr)
			s, res, err := sbuml.Clone(ctx, args[0], args[1], sbuml.TransferOptions{Progress: bar.update})
			bar.clear()
			if err != nil && s != nil && !errors.Is(err, objects.ErrCorrupt) && !errors.Is(err, transport.ErrProtocol) {
				err = fmt.Errorf("%w; to finish, run: sbuml --scrapbook %s pull origin", err, s.Dir)
			}
			if err := finishPull(res, err); err != nil {
				return err
			}
			if !flagJSON {
				fmt.Fprintf(os.Stderr, "cloned into %s\n", s.Dir)
			}
			return nil
		},
	}
	addJSONFlag(c)
	return c
}

func fetchCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "fetch URL#SNAPSHOT | FILE.sbuml",
		Short: "Fetch one snapshot of another scrapbook",
		Long: `Fetch one snapshot, and everything it reaches that this scrapbook lacks, from
URL#SNAPSHOT (SNAPSHOT: an ID, or a branch or tag of the remote; without it,
the remote's HEAD) or from a .sbuml link file, and print its ID. No ref moves.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := openScrapbook()
			if err != nil {
				return err
			}
			ctx, stop := interruptible()
			defer stop()
			bar := newProgressBar(os.Stderr)
			id, st, err := s.FetchLink(ctx, args[0], sbuml.TransferOptions{Progress: bar.update, Notify: notify})
			bar.clear()
			if st != nil && !flagJSON {
				fmt.Fprintln(os.Stderr, st.Summary("received"))
			}
			if err != nil {
				return err
			}
			if flagJSON {
				return printJSON(map[string]any{"snapshot": id, "stats": st})
			}
			fmt.Println(id)
			return nil
		},
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
published directory, for a web server to serve at URL: the objects, refs.json,
index.html listing every snapshot, and a link file per branch
(branches/NAME.sbuml), tag (tags/NAME.sbuml) and snapshot (snapshots/ID.sbuml)
that 'sbuml open' and a browser understand. Others clone or pull from URL. Publishing again adds only
new objects.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if url == "" {
				return errors.New("publish: --url is required: the address where DIR will be served")
			}
			s, err := openScrapbook()
			if err != nil {
				return err
			}
			ctx, stop := interruptible()
			defer stop()
			bar := newProgressBar(os.Stderr)
			res, err := s.Publish(ctx, args[0], url, sbuml.TransferOptions{Progress: bar.update})
			bar.clear()
			if res != nil && res.Stats != nil && !flagJSON {
				fmt.Fprintln(os.Stderr, res.Stats.Summary("wrote"))
			}
			if err != nil {
				return err
			}
			if flagJSON {
				return printJSON(res)
			}
			for _, r := range res.Refs {
				fmt.Printf("%s: %s %s\n", quoteName(r.Name), escapeText(r.Status, false), movement(r.Old.Short(), r.New.Short(), r.Old.IsZero()))
			}
			fmt.Printf("published %d snapshots in %s for %s (index.html, %d link files)\n", res.Snapshots, res.Dir, res.URL, len(res.Links))
			return nil
		},
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
		return errors.New("serve: give both --tls-cert and --tls-key, or neither")
	}
	s, err := openScrapbook()
	if err != nil {
		return err
	}
	f.limits.MaxMemory = int64(f.maxMemory)
	// Garbage from finished requests is collected before the process
	// grows far past what requests may hold.
	debug.SetMemoryLimit(f.limits.MaxMemory + 128<<20)
	opts := transport.ServerOptions{ReadOnly: f.readOnly, Log: serveLog, Limits: f.limits}
	if f.tokenFile != "" {
		if opts.Token, err = readTokenFile(f.tokenFile); err != nil {
			return fmt.Errorf("serve: %w", err)
		}
	}
	d, err := transport.OpenDir(s.Dir)
	if err != nil {
		return err
	}
	defer d.Close()
	ln, err := net.Listen("tcp", f.addr)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	scheme := "http"
	if f.certFile != "" {
		scheme = "https"
	}
	push := "push needs the token in " + f.tokenFile
	switch {
	case f.readOnly:
		push = "read-only"
	case f.tokenFile == "":
		push = "push disabled (no --token-file)"
	}
	fmt.Fprintf(os.Stderr, "serving %s at %s://%s/ (%s)\n", s.Dir, scheme, ln.Addr(), push)
	handler := transport.NewServer(d, opts)
	srv := handler.HTTPServer()
	ln = handler.LimitListener(ln)
	ctx, stop := interruptible()
	defer stop()
	done := make(chan error, 1)
	go func() {
		if f.certFile != "" {
			done <- srv.ServeTLS(ln, f.certFile, f.keyFile)
		} else {
			done <- srv.Serve(ln)
		}
	}()
	select {
	case err := <-done:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	fmt.Fprintln(os.Stderr, "stopping")
	shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return srv.Shutdown(shutdown)
}

// serveLog prints a refused or failed request on stderr.
func serveLog(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s %s\n", time.Now().Format("2006-01-02 15:04:05"), fmt.Sprintf(format, args...))
}

// readTokenFile reads a bearer token: one line without spaces.
func readTokenFile(name string) (string, error) {
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

// progressBar draws a transfer's progress on one line of a terminal.
type progressBar struct {
	f      *os.File
	drawn  bool
	active bool
}

// newProgressBar returns a bar drawing on f if f is a terminal, and one
// that draws nothing otherwise.
func newProgressBar(f *os.File) *progressBar {
	return &progressBar{f: f, active: isTerminal(f)}
}

// update redraws the bar; it is a transport progress callback.
func (b *progressBar) update(p transport.Progress) {
	if !b.active {
		return
	}
	rate := float64(p.Bytes) / max(p.Elapsed.Seconds(), 0.001)
	line := fmt.Sprintf("%s %d objects", p.Phase, p.Objects)
	if p.Phase != "finding" && p.TotalObjects > 0 {
		const width = 30
		frac := min(float64(p.Objects)/float64(p.TotalObjects), 1)
		full := int(frac * width)
		line = fmt.Sprintf("%-9s [%s%s] %d/%d objects", p.Phase, strings.Repeat("=", full), strings.Repeat(" ", width-full), p.Objects, p.TotalObjects)
	}
	line += fmt.Sprintf(", %s (%s/s)", humanBytes(p.Bytes), humanBytes(int64(rate)))
	fmt.Fprintf(b.f, "\r\x1b[K%s", line)
	b.drawn = true
}

// clear erases the bar.
func (b *progressBar) clear() {
	if b.drawn {
		fmt.Fprint(b.f, "\r\x1b[K")
		b.drawn = false
	}
}
