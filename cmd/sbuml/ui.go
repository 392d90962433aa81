package main

import (
	"context"
	"fmt"
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
			s, err := openScrapbook()
			if err != nil {
				return err
			}
			s.Close()
			srv, err := ui.New(s.Dir, opts)
			if err != nil {
				return err
			}
			defer srv.Close()
			ln, err := ui.Listen(addr, opts)
			if err != nil {
				return err
			}
			scheme := "http"
			if opts.TLS {
				scheme = "https"
			}
			fmt.Fprintf(os.Stderr, "sbuml ui: open %s://%s/ (Ctrl-C stops)\n", scheme, ln.Addr())
			hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second}
			ctx, stop := interruptible()
			defer stop()
			done := make(chan error, 1)
			go func() {
				if opts.TLS {
					done <- hs.ServeTLS(ln, certFile, keyFile)
				} else {
					done <- hs.Serve(ln)
				}
			}()
			select {
			case err := <-done:
				return fmt.Errorf("ui: %w", err)
			case <-ctx.Done():
			}
			srv.Close()
			shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return hs.Shutdown(shutdown)
		},
	}
	c.Flags().StringVar(&addr, "addr", ui.DefaultAddr, "address to listen on (other than loopback only with --token-file)")
	c.Flags().StringVar(&tokenFile, "token-file", "", "file holding the token every request must carry")
	c.Flags().StringVar(&opts.Accel, "accel", "auto", "accelerator of machines booted or checked out from the page: kvm, tcg or auto")
	c.Flags().StringVar(&certFile, "tls-cert", "", "TLS certificate file (PEM)")
	c.Flags().StringVar(&keyFile, "tls-key", "", "TLS key file (PEM)")
	return c
}
