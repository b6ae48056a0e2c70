package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

// pendingCommands lists the SPEC §4 commands whose implementation has not
// landed yet. They exist so the command surface is visible and scripted
// callers get a distinct exit code (2) instead of a silent success.
// A command moves out of this list when it works for real.
var pendingCommands = []struct{ use, short string }{
	{"snapshot <module> <out.tar.gz>", "Bundle config, logs, state and versions for support"},
}

func addPendingCommands(root *cobra.Command) {
	for _, p := range pendingCommands {
		root.AddCommand(&cobra.Command{
			Use:                p.use,
			Short:              p.short + " (not yet available)",
			DisableFlagParsing: true,
			RunE: func(cmd *cobra.Command, _ []string) error {
				return &exitError{code: 2, msg: fmt.Sprintf("%q is not yet available in this build", cmd.Name())}
			},
		})
	}
}
