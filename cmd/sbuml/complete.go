package main

import (
	"os"
	"strings"

	"github.com/sbuml/sbuml"
	"github.com/spf13/cobra"
)

// Shell completion ('sbuml completion bash|zsh|fish|powershell') offers
// the names a scrapbook holds where a command takes one: machines,
// branches, tags, remotes, images, and the values of flags that take one
// of a few words. A completer reads the scrapbook the command line names
// (--scrapbook, $SBUML_DIR, ~/.sbuml) and changes nothing; where there is
// none, it offers nothing.

// A completer lists the candidates for one argument or flag value.
type completer func(s *sbuml.Scrapbook) []string

// completeArgs completes the i-th argument with fns[i]; a nil completer
// leaves the argument to the shell (a path), and arguments past the last
// completer get nothing.
func completeArgs(fns ...completer) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, prefix string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) >= len(fns) {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return complete(fns[len(args)], prefix)
	}
}

// completeEach completes every argument with fn (the machines of halt).
func completeEach(fn completer) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, prefix string) ([]cobra.Completion, cobra.ShellCompDirective) {
		return complete(fn, prefix)
	}
}

func complete(fn completer, prefix string) ([]cobra.Completion, cobra.ShellCompDirective) {
	if fn == nil {
		return nil, cobra.ShellCompDirectiveDefault
	}
	return withPrefix(candidates(fn), prefix), cobra.ShellCompDirectiveNoFileComp
}

// completeFlag registers fn as the completion of flag name of c.
func completeFlag(c *cobra.Command, name string, fn completer) {
	c.RegisterFlagCompletionFunc(name, func(cmd *cobra.Command, args []string, prefix string) ([]cobra.Completion, cobra.ShellCompDirective) {
		return withPrefix(candidates(fn), prefix), cobra.ShellCompDirectiveNoFileComp
	})
}

// completeWords registers the fixed values a flag takes.
func completeWords(c *cobra.Command, name string, words ...string) {
	c.RegisterFlagCompletionFunc(name, cobra.FixedCompletions(words, cobra.ShellCompDirectiveNoFileComp))
}

// candidates runs fn on the scrapbook the command line names, if any.
func candidates(fn completer) []string {
	s, err := openScrapbook()
	if err != nil {
		return nil
	}
	defer s.Close()
	return fn(s)
}

func withPrefix(all []string, prefix string) []cobra.Completion {
	var out []cobra.Completion
	for _, c := range all {
		if strings.HasPrefix(c, prefix) {
			out = append(out, c)
		}
	}
	return out
}

// refNames lists the refs under prefix by their short names.
func refNames(s *sbuml.Scrapbook, prefix string) []string {
	all, err := s.Refs.List(prefix)
	if err != nil {
		return nil
	}
	names := make([]string, 0, len(all))
	for _, r := range all {
		names = append(names, strings.TrimPrefix(r.Name, prefix))
	}
	return names
}

func completeBranches(s *sbuml.Scrapbook) []string { return refNames(s, "refs/heads/") }
func completeTags(s *sbuml.Scrapbook) []string     { return refNames(s, "refs/tags/") }
func completeImages(s *sbuml.Scrapbook) []string   { return refNames(s, "refs/images/") }

// completeRevisions offers branches and tags, the names a snapshot is
// most often given by.
func completeRevisions(s *sbuml.Scrapbook) []string {
	return append(completeBranches(s), completeTags(s)...)
}

// completeMachines lists the machines kept under the scrapbook's
// machines/ directory.
func completeMachines(s *sbuml.Scrapbook) []string {
	des, err := os.ReadDir(s.MachinesDir())
	if err != nil {
		return nil
	}
	var names []string
	for _, de := range des {
		if de.IsDir() && !strings.HasPrefix(de.Name(), ".") {
			names = append(names, de.Name())
		}
	}
	return names
}

func completeRemotes(s *sbuml.Scrapbook) []string {
	rs, err := s.Remotes()
	if err != nil {
		return nil
	}
	names := make([]string, 0, len(rs))
	for _, r := range rs {
		names = append(names, r.Name)
	}
	return names
}
