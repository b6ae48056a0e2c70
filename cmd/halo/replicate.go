package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/hashicorp/go-hclog"
	"github.com/spf13/cobra"

	"github.com/halo-ha/halo/internal/agent"
	"github.com/halo-ha/halo/internal/config"
	"github.com/halo-ha/halo/internal/pki"
	"github.com/halo-ha/halo/internal/replication/daemon"
)

// The agent runs replication daemons with this very binary.
func init() {
	if exe, err := os.Executable(); err == nil {
		agent.DaemonExecutable = exe
	}
}

func newReplicateCmd() *cobra.Command {
	var module, configDir, dataDir, node, logLevel string
	cmd := &cobra.Command{
		Use:   "replicate --module M",
		Short: "Run a mirror module's replication daemon (the agent starts and supervises it)",
		Long: `Run the replication daemon of one mirror module: FUSE capture and journal on the
primary, read-only mounts and the applier on the secondary, resyncs, verify and
diff. The agent starts it in its own session so that it outlives an agent restart,
and drives it through <data-dir>/<module>/repl.sock.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if module == "" || node == "" {
				return usageError(cmd, "--module and --node are required")
			}
			logger := hclog.New(&hclog.LoggerOptions{Name: "replicate." + module, Level: hclog.LevelFromString(logLevel), Output: os.Stderr})
			cfg, diags := config.Load(config.Options{}, configDir)
			if diags.HasErrors() {
				_ = config.WriteDiagnostics(cmd.ErrOrStderr(), diags)
				return &exitError{code: 1, msg: fmt.Sprintf("configuration in %s has %d error(s)", configDir, countErrors(diags))}
			}
			var mod *config.Module
			for _, m := range cfg.Modules {
				if m.Name == module {
					mod = m
				}
			}
			if mod == nil || !mod.HasNode(node) {
				return fmt.Errorf("module %s does not run on node %s in %s", module, node, configDir)
			}
			if cfg.Cluster == nil {
				return fmt.Errorf("no cluster file in %s", configDir)
			}
			tlsm, err := pki.LoadNodeMaterial(cfg.Cluster, node)
			if err != nil {
				return fmt.Errorf("replication needs the node's TLS material: %w", err)
			}
			d, err := daemon.New(daemon.Config{
				Module: mod, Cluster: cfg.Cluster, Node: node, DataDir: dataDir,
				TLS: tlsm, Logger: logger, Build: Version,
			})
			if err != nil {
				return fmt.Errorf("replication daemon for %s: %w", module, err)
			}
			// The daemon has no terminal (the agent starts it with setsid);
			// SIGTERM or SIGINT stop it, unmounting.
			signal.Ignore(syscall.SIGHUP, syscall.SIGPIPE)
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return d.Run(ctx)
		},
	}
	cmd.Flags().StringVar(&module, "module", "", "mirror module to replicate")
	cmd.Flags().StringVar(&configDir, "config-dir", envOr("HALO_CONFIG_DIR", defaultConfigDir), "configuration directory (env HALO_CONFIG_DIR)")
	cmd.Flags().StringVar(&dataDir, "data-dir", envOr("HALO_DATA_DIR", defaultDataDir), "state directory (env HALO_DATA_DIR)")
	cmd.Flags().StringVar(&node, "node", os.Getenv("HALO_NODE"), "this node's name (env HALO_NODE)")
	cmd.Flags().StringVar(&logLevel, "log-level", envOr("HALO_LOG_LEVEL", "info"), "trace, debug, info, warn or error")
	return cmd
}
