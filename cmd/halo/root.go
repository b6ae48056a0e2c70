package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

// Version is set at build time with -ldflags "-X main.Version=...".
var Version = "0.1.0-dev"

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "halo",
		Short:         "halo: software-only high availability for Linux applications",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(
		newVersionCmd(),
		newValidateCmd(),
		newAgentCmd(),
		newStatusCmd(),
		newLogsCmd(),
		newResourceCmd(),
		newPluginCmd(),
		newClusterCmd(),
		newReplicateCmd(),
		newVerifyCmd(),
		newDiffCmd(),
		newModuleAdminCmd(),
		newReloadCmd(),
		newSwitchCommand("failover", "Enable or suspend automatic failover"),
		newSwitchCommand("checker", "Enable or suspend checkers"),
		newSwitchCommand("errd", "Enable or suspend process checkers"),
	)
	for _, c := range moduleCommands {
		root.AddCommand(newModuleCommand(c.verb, c.short))
	}
	addPendingCommands(root)
	return root
}

// moduleCommands send one admin command to the local agent.
var moduleCommands = []struct{ verb, short string }{
	{"start", "Start a module on this node"},
	{"stop", "Stop a module on this node"},
	{"restart", "Restart the application locally (no role change)"},
	{"stopstart", "Stop then start the module (on PRIM: a failover)"},
	{"forcestop", "Stop the module at once (stop scripts run with force)"},
	{"swap", "Exchange the primary and secondary roles"},
	{"prim", "Make this node primary (its data declared up to date)"},
	{"second", "Make this node secondary"},
	{"primforce", "Force this node primary even on inconsistent data"},
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the halo version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintf(cmd.OutOrStdout(), "halo %s\n", Version)
			return nil
		},
	}
}
