package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/sbuml/sbuml"
	"github.com/sbuml/sbuml/ui"
	"github.com/spf13/cobra"
)

func init() { rootCmd.AddCommand(uiCmd()) }

func uiCmd() *cobra.Command {
	var (
		addr, tokenFile, certFile, keyFile string
		opts                               ui.Options
	)
	c := &cobra.Command{
		Use:   "ui",
		Short: "Show the scrapbook in a browser: history graph, machines, consoles",
		Long: `Serve a web page showing the scrapbook: its history as a graph (branches, tags,
machines on the snapshot they continue from), a snapshot's tree and sizes, the
machines with their serial consoles and screens, and the actions: boot, commit,
checkout, rewind, freeze, continue, halt, tag, branch, delete a branch or tag,
gc. Each action does what the sbuml command of that name does. A commit made in
a shell appears on the page without a reload.

It listens on 127.0.0.1. Any other address needs --token-file: every request
then needs the token in that file (the page asks for it once).`,
		Example: `  sbuml ui
  sbuml ui --addr 0.0.0.0:8418 --token-file ~/.sbuml-ui-token`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if (certFile == "") != (keyFile == "") {
				return usagef("ui: give both --tls-cert and --tls-key, or neither")
			}
			if tokenFile != "" {
				tok, err := sbuml.ReadTokenFile(tokenFile)
				if err != nil {
					return fmt.Errorf("ui: %w", err)
				}
				opts.Token = tok
			}
			opts.TLS = certFile != ""
			opts.Log = serveLog
			return runUI(addr, certFile, keyFile, opts)
		},
	}
	c.Flags().StringVar(&addr, "addr", ui.DefaultAddr, "address to listen on (other than loopback only with --token-file)")
	c.Flags().StringVar(&tokenFile, "token-file", "", "file holding the token every request must carry")
	c.Flags().StringVar(&opts.Accel, "accel", "auto", "accelerator of machines booted or checked out from the page: kvm, tcg or auto")
	c.Flags().StringVar(&certFile, "tls-cert", "", "TLS certificate file (PEM)")
	c.Flags().StringVar(&keyFile, "tls-key", "", "TLS key file (PEM)")
	return c
}

// runUI serves the page for the scrapbook the flags name until
// interrupted.
func runUI(addr, certFile, keyFile string, opts ui.Options) error {
	s, err := openScrapbook()
	if err != nil {
		return err
	}
	s.Close() // the page opens it for each request
	srv, err := ui.New(s.Dir, opts)
	if err != nil {
		return err
	}
	defer srv.Close()
	ln, err := ui.Listen(addr, opts)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "sbuml ui: open %s://%s/ (Ctrl-C stops)\n", scheme(certFile), ln.Addr())
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second}
	if err := serveUntilInterrupted(hs, ln, certFile, keyFile, srv.Close); err != nil {
		return fmt.Errorf("ui: %w", err)
	}
	return nil
}

// scheme is https with a TLS certificate, else http.
func scheme(certFile string) string {
	if certFile != "" {
		return "https"
	}
	return "http"
}

// serveUntilInterrupted serves hs on ln (with TLS if certFile is set)
// until the first interrupt, then calls stopping (if set) and shuts hs
// down, giving requests under way 10 s to end.
func serveUntilInterrupted(hs *http.Server, ln net.Listener, certFile, keyFile string, stopping func() error) error {
	ctx, stop := interruptible()
	defer stop()
	done := make(chan error, 1)
	go func() {
		if certFile != "" {
			done <- hs.ServeTLS(ln, certFile, keyFile)
		} else {
			done <- hs.Serve(ln)
		}
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	fmt.Fprintln(os.Stderr, "stopping")
	if stopping != nil {
		stopping()
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return hs.Shutdown(shutdown)
}
