package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"

	"github.com/hashicorp/go-hclog"
	"github.com/spf13/cobra"

	"github.com/halo-ha/halo/internal/agent"
	"github.com/halo-ha/halo/internal/agent/sched"
	"github.com/halo-ha/halo/internal/config"
	"github.com/halo-ha/halo/internal/pki"
	"github.com/halo-ha/halo/internal/pluginhost"
)

func newAgentCmd() *cobra.Command {
	var configDir, dataDir, pluginDir, node, socket, logLevel, priority string
	var rtPriority int
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the halo agent on this node",
		Long: `Run the halo agent: load <config-dir>/cluster.hcl and <config-dir>/modules/*/module.hcl,
run every module of this node, and serve the API on <data-dir>/halo.sock.
Every path has a flag and an environment variable, so several nodes can run on one machine.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger := hclog.New(&hclog.LoggerOptions{Name: "halo", Level: hclog.LevelFromString(logLevel), Output: os.Stderr})
			policy, err := sched.ParsePolicy(priority)
			if err != nil {
				return &exitError{code: 2, msg: err.Error()}
			}
			// First, so that every thread of the agent starts real-time;
			// the processes it starts reset to the normal policy whenever
			// they start.
			rt, schedNote := setPriority(policy, rtPriority, logger)
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()

			// Plugins inherit the agent's environment: a long-running custom
			// checker reports through `halo resource set`, which finds the
			// agent by HALO_SOCKET.
			if socket == "" {
				socket = filepath.Join(dataDir, "halo.sock")
			}
			os.Setenv("HALO_SOCKET", socket)
			host, err := pluginhost.New(pluginhost.Options{Dir: pluginDir, Logger: logger.Named("plugins"), StateDir: dataDir, Node: node})
			if err != nil {
				return fmt.Errorf("plugins: %w", err)
			}
			agent.RecoverStaging(configDir, logger)
			// Plugin schemas take part in validation: a typo in a checker
			// block stops the agent with its file:line:col.
			cfg, diags := config.Load(config.Options{Plugins: host}, configDir)
			if diags.HasErrors() {
				host.Close()
				_ = config.WriteDiagnostics(cmd.ErrOrStderr(), diags)
				return &exitError{code: 1, msg: fmt.Sprintf("configuration in %s has %d error(s)", configDir, countErrors(diags))}
			}
			_ = config.WriteDiagnostics(cmd.ErrOrStderr(), diags) // warnings
			if node == "" {
				node, err = guessNode(cfg.Cluster)
				if err != nil {
					host.Close()
					return err
				}
			}
			if cfg.Cluster != nil && cfg.Cluster.Node(node) == nil {
				host.Close()
				return fmt.Errorf("node %q is not declared in %s", node, cfg.Cluster.File)
			}
			opts := agent.Options{
				Node: node, Version: Version, Cluster: cfg.Cluster, Modules: cfg.Modules,
				DataDir: dataDir, Socket: socket, Plugins: host, Logger: logger,
				ConfigDir: configDir, Schemas: host,
				Realtime: rt, SchedulingNote: schedNote,
			}
			if cfg.Cluster != nil {
				// The TCP API is mutual TLS only: without the cluster's
				// certificates (halo cluster init) it stays off, and so
				// does the mirror modules' control channel.
				m, err := pki.LoadNodeMaterial(cfg.Cluster, node)
				if err != nil {
					logger.Warn("TCP API and peer control channel disabled: no usable TLS material (run halo cluster init)", "error", err)
				} else {
					opts.APITLS = m.ServerConfig(pki.RequireClientCert)
					opts.TLS = m
					for _, ip := range nodeAddresses(cfg.Cluster, node) {
						opts.APIAddrs = append(opts.APIAddrs, net.JoinHostPort(ip, strconv.Itoa(cfg.Cluster.APIPort)))
					}
				}
				// Heartbeats are authenticated with the cluster key; only
				// mirror modules need it, and they fail to start without.
				if key, err := pki.LoadClusterKey(cfg.Cluster.KeyFile); err != nil {
					if hasMirror(cfg.Modules, node) {
						logger.Warn("no usable cluster key: mirror modules cannot start (run halo cluster init)", "error", err)
					}
				} else {
					opts.ClusterKey = key
				}
				// Cloud load balancers probe the node's own addresses.
				opts.HealthHosts = nodeAddresses(cfg.Cluster, node)
				// Prometheus scrapes the metrics block's listener, if any.
				opts.MetricsAddrs = cfg.Cluster.MetricsAddrs(node)
			}
			a, err := agent.New(ctx, opts)
			if err != nil {
				host.Close()
				return err
			}
			return a.Run(ctx)
		},
	}
	cmd.Flags().StringVar(&configDir, "config-dir", envOr("HALO_CONFIG_DIR", defaultConfigDir), "configuration directory (env HALO_CONFIG_DIR)")
	cmd.Flags().StringVar(&dataDir, "data-dir", envOr("HALO_DATA_DIR", defaultDataDir), "state directory (env HALO_DATA_DIR)")
	cmd.Flags().StringVar(&pluginDir, "plugin-dir", envOr("HALO_PLUGIN_DIR", defaultPluginDir), "plugin directory (env HALO_PLUGIN_DIR)")
	cmd.Flags().StringVar(&node, "node", os.Getenv("HALO_NODE"), "this node's name in cluster.hcl (env HALO_NODE; default: the host name)")
	cmd.Flags().StringVar(&socket, "socket", os.Getenv("HALO_SOCKET"), "API socket (env HALO_SOCKET; default <data-dir>/halo.sock)")
	cmd.Flags().StringVar(&logLevel, "log-level", envOr("HALO_LOG_LEVEL", "info"), "trace, debug, info, warn or error")
	cmd.Flags().StringVar(&priority, "priority", envOr("HALO_PRIORITY", string(sched.Realtime)),
		"scheduling of the agent's threads (env HALO_PRIORITY): realtime (SCHED_RR, so that heartbeats stay on time on a saturated node; "+
			"falls back to normal with a warning without CAP_SYS_NICE) or normal. Plugins, scripts and the application always run at normal priority")
	cmd.Flags().IntVar(&rtPriority, "rt-priority", sched.DefaultPriority, "real-time priority (1..99) with --priority realtime")
	return cmd
}

// setPriority applies the scheduling policy asked for to the agent's
// threads. It returns the real-time threads (nil at normal priority) and,
// at normal priority, why.
func setPriority(policy sched.Policy, rtPriority int, logger hclog.Logger) (*sched.RealtimeThreads, string) {
	if policy == sched.Normal {
		logger.Info("agent runs at normal priority (--priority normal): heartbeats may be late when the CPUs are saturated")
		return nil, "--priority normal"
	}
	rt, err := sched.Enable(rtPriority)
	if err != nil {
		logger.Warn("real-time priority refused, agent runs at normal priority: heartbeats may be late when the CPUs are saturated (run as root or grant CAP_SYS_NICE)",
			"error", err)
		return nil, fmt.Sprintf("real-time priority refused: %v", err)
	}
	logger.Info("agent threads run at real-time priority; the processes it starts run at normal priority", "policy", rt.String())
	return rt, ""
}

// nodeAddresses lists the node's addresses, in network declaration order,
// each once.
func nodeAddresses(c *config.Cluster, node string) []string {
	n := c.Node(node)
	var out []string
	for _, net := range c.NetworkNames() {
		if ip, ok := n.Addresses[net]; ok && !slices.Contains(out, ip.String()) {
			out = append(out, ip.String())
		}
	}
	return out
}

// hasMirror reports whether a mirror module runs on node.
func hasMirror(mods []*config.Module, node string) bool {
	for _, m := range mods {
		if m.Kind == config.KindMirror && m.HasNode(node) {
			return true
		}
	}
	return false
}

// guessNode picks this node's name: the host name, when the cluster
// declares it.
func guessNode(c *config.Cluster) (string, error) {
	hn, err := os.Hostname()
	if err != nil {
		return "", fmt.Errorf("no --node given and the host name is unknown: %w", err)
	}
	if c == nil || c.Node(hn) != nil {
		return hn, nil
	}
	return "", fmt.Errorf("no --node given and the host name %q is not a node of %s", hn, filepath.Base(c.File))
}
