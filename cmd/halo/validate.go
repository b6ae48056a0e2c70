package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/hashicorp/go-hclog"

	"github.com/hashicorp/hcl/v2"
	"github.com/spf13/cobra"

	"github.com/halo-ha/halo/internal/config"
	"github.com/halo-ha/halo/internal/pluginhost"
)

func newValidateCmd() *cobra.Command {
	var clusterFile, configDir, pluginDir string
	var detailed bool
	cmd := &cobra.Command{
		Use:   "validate <file or dir>...",
		Short: "Check cluster and module files; print every diagnostic as file:line:col",
		Long: `Check cluster and module files and print every diagnostic as file:line:col.
Each path may be a cluster file, a module file, a module directory, a modules
directory or a configuration directory (cluster.hcl + modules/). Modules are
checked against the first cluster found among: a cluster file in the paths,
--cluster, a cluster.hcl in a given directory, <config-dir>/cluster.hcl.
Exits 1 when any diagnostic is an error.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts := config.Options{
				ClusterFile:        clusterFile,
				DefaultClusterFile: filepath.Join(configDir, config.ClusterFileName),
			}
			// With a plugin directory, each plugin block is checked against
			// the schema its plugin declares, at its file:line:col.
			if pluginDir != "" {
				host, err := pluginhost.New(pluginhost.Options{Dir: pluginDir, Logger: hclog.NewNullLogger()})
				if err != nil {
					return fmt.Errorf("plugins: %w", err)
				}
				defer host.Close()
				opts.Plugins = host
			}
			cfg, diags := config.Load(opts, args...)
			out := cmd.OutOrStdout()
			if detailed {
				_ = config.WriteDiagnosticsDetailed(out, diags, cfg.Files(), 100, false)
			} else {
				_ = config.WriteDiagnostics(out, diags)
			}
			if diags.HasErrors() {
				return &exitError{code: 1, msg: fmt.Sprintf("%d error(s)", countErrors(diags))}
			}
			fmt.Fprintf(out, "ok: %s\n", summary(cfg))
			return nil
		},
	}
	cmd.Flags().StringVar(&clusterFile, "cluster", "", "cluster file to validate modules against")
	cmd.Flags().StringVar(&configDir, "config-dir", envOr("HALO_CONFIG_DIR", defaultConfigDir), "configuration directory (env HALO_CONFIG_DIR)")
	cmd.Flags().StringVar(&pluginDir, "plugin-dir", os.Getenv("HALO_PLUGIN_DIR"), "check plugin blocks against the schemas of the plugins in this directory (env HALO_PLUGIN_DIR)")
	cmd.Flags().BoolVar(&detailed, "detailed", false, "show each diagnostic with its source lines")
	return cmd
}

func countErrors(diags hcl.Diagnostics) int {
	n := 0
	for _, d := range diags {
		if d.Severity == hcl.DiagError {
			n++
		}
	}
	return n
}

func summary(cfg *config.Config) string {
	s := ""
	if cfg.Cluster != nil {
		s = fmt.Sprintf("cluster %q (%d nodes), ", cfg.Cluster.Name, len(cfg.Cluster.Nodes))
	}
	s += fmt.Sprintf("%d module(s)", len(cfg.Modules))
	for i, m := range cfg.Modules {
		if i == 0 {
			s += ":"
		}
		s += fmt.Sprintf(" %s (%s)", m.Name, m.Kind)
	}
	return s
}
