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
	{"agent", "Run the halo agent on this node"},
	{"status [module]", "Show module states (-v, --json, -q)"},
	{"start <module>", "Start a module on this node"},
	{"stop <module>", "Stop a module on this node"},
	{"restart <module>", "Restart the application locally (no role change)"},
	{"stopstart <module>", "Stop then start the module (on PRIM: a failover)"},
	{"forcestop <module>", "Stop the module without graceful stop scripts"},
	{"swap <module>", "Exchange the primary and secondary roles"},
	{"prim <module>", "Make this node primary (data declared up to date)"},
	{"second <module>", "Make this node secondary"},
	{"primforce <module>", "Force this node primary even on inconsistent data"},
	{"reload <module>", "Apply live-changeable settings of an edited module file"},
	{"failover on|off <module>", "Enable or suspend automatic failover"},
	{"checker on|off <module>", "Enable or suspend checkers"},
	{"errd on|off <module>", "Enable or suspend process checkers"},
	{"logs <module>", "Show the module's event log (-f to follow)"},
	{"module list|install|uninstall|package|deploy", "Manage module bundles"},
	{"verify <module>", "Compare both nodes' replicated trees"},
	{"diff <module>", "Estimate what a resync would send"},
	{"snapshot <module> <out.tar.gz>", "Bundle config, logs, state and versions for support"},
	{"plugin list", "List installed plugins"},
	{"cluster init|status", "Create cluster CA and keys; show cluster status"},
	{"resource get|set", "Read or set a module resource"},
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
