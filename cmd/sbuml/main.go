// Command sbuml is the command-line interface to sbuml scrapbooks: it saves
// running Linux machines as content-addressed snapshots and brings them back.
//
// This package holds flags and printing only; the work is done by the
// github.com/sbuml/sbuml package and its sub-packages.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/sbuml/sbuml"
	"github.com/sbuml/sbuml/transport"
	"github.com/spf13/cobra"
)

// rootCmd is the top of the command tree; each command file adds itself in init.
var rootCmd = &cobra.Command{
	Use:           "sbuml",
	Short:         "A computation scrapbook for Linux machines",
	Long:          "sbuml saves the complete running state of Linux machines as snapshots in a\ncontent-addressed scrapbook, and restores, branches and moves them.",
	SilenceUsage:  true,
	SilenceErrors: true,
	// The limits of remotes come from the environment: say at once if
	// one of those variables is nonsense.
	PersistentPreRunE: func(*cobra.Command, []string) error {
		_, err := transport.LimitsFromEnv()
		return err
	},
}

// global flags
var (
	flagScrapbook string
	flagJSON      bool
)

func init() {
	rootCmd.PersistentFlags().StringVar(&flagScrapbook, "scrapbook", "", "scrapbook directory (default $SBUML_DIR, else ~/.sbuml)")
}

func main() {
	// A machine's keeper is this program run again (see sbuml.KeeperMain).
	sbuml.KeeperMain()
	if err := rootCmd.Execute(); err != nil {
		var status exitStatus
		if errors.As(err, &status) {
			os.Exit(int(status))
		}
		if err != errSilentFailure {
			fmt.Fprintln(os.Stderr, "sbuml: "+escapeText(oneLine(err.Error()), false))
		}
		os.Exit(1)
	}
}
