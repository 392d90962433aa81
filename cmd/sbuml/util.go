package main

import (
	"encoding/json"
	"os"
	"strings"

	"github.com/spf13/cobra"
)

// oneLine folds an error message onto a single line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// addJSONFlag gives a read command its --json flag.
func addJSONFlag(c *cobra.Command) {
	c.Flags().BoolVar(&flagJSON, "json", false, "print machine-readable JSON")
}

// printJSON writes v as indented JSON to stdout.
func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
