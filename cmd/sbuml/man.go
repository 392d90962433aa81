package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

func init() { rootCmd.AddCommand(manCmd()) }

// manCmd writes the manual pages, made from the commands' own help by
// cobra's doc package: sbuml.1 and one page per command (sbuml-commit.1,
// sbuml-remote-add.1, ...). make install puts them in place.
func manCmd() *cobra.Command {
	var dir string
	c := &cobra.Command{
		Use:     "man --dir DIR",
		Short:   "Write sbuml's manual pages into a directory",
		Example: "  sbuml man --dir /usr/local/share/man/man1\n  sbuml man --dir /tmp/man && man /tmp/man/sbuml-commit.1",
		Args:    cobra.NoArgs,
		Hidden:  true,
		RunE: func(cmd *cobra.Command, args []string) error {
			if dir == "" {
				return usagef("man: give --dir, the directory to write the pages into")
			}
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return fmt.Errorf("man: %w", err)
			}
			v, _ := buildVersion()
			header := &doc.GenManHeader{Title: "SBUML", Section: "1", Source: "sbuml " + v, Manual: "sbuml manual"}
			root := cmd.Root()
			root.DisableAutoGenTag = true
			if err := doc.GenManTree(root, header, dir); err != nil {
				return fmt.Errorf("man: %w", err)
			}
			return nil
		},
	}
	c.Flags().StringVar(&dir, "dir", "", "directory to write the pages into")
	return c
}
