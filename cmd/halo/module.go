package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/halo-ha/halo/internal/bundle"
	"github.com/halo-ha/halo/internal/config"
	"github.com/halo-ha/halo/internal/pki"
	"github.com/halo-ha/halo/sdk/api"
)

// `halo module package|install|deploy|list|uninstall` and `halo reload`.

// adminFlags are clientFlags plus what reaching the other nodes takes.
type adminFlags struct {
	clientFlags
	configDir string
	node      string
}

func (f *adminFlags) register(cmd *cobra.Command, peers bool) {
	f.clientFlags.register(cmd)
	cmd.Flags().StringVar(&f.configDir, "config-dir", envOr("HALO_CONFIG_DIR", defaultConfigDir), "configuration directory (env HALO_CONFIG_DIR)")
	if peers {
		cmd.Flags().StringVar(&f.node, "node", os.Getenv("HALO_NODE"), "this node's name (env HALO_NODE; default: asked to the local agent)")
	}
}

func (f *adminFlags) loadCluster() (*config.Cluster, error) {
	path := filepath.Join(f.configDir, config.ClusterFileName)
	c, diags := config.LoadCluster(path)
	if diags.HasErrors() || c == nil {
		var b strings.Builder
		_ = config.WriteDiagnostics(&b, diags)
		return nil, fmt.Errorf("load %s:\n%s", path, strings.TrimSpace(b.String()))
	}
	return c, nil
}

// peerClients returns a client for each named node over its mutual-TLS
// API, with this node's certificate, as mirror peers reach each other.
type peerTarget struct {
	node   string
	client *api.Client
	err    error
}

func (f *adminFlags) peers(ctx context.Context, cluster *config.Cluster, nodes []string) ([]peerTarget, error) {
	self := f.node
	if self == "" {
		v, err := f.client().Version(ctx)
		if err != nil {
			return nil, fmt.Errorf("find this node's name (pass --node): %w", err)
		}
		self = v.Node
	}
	m, err := pki.LoadNodeMaterial(cluster, self)
	if err != nil {
		return nil, fmt.Errorf("reaching the other nodes needs this node's TLS material: %w", err)
	}
	var out []peerTarget
	for _, n := range nodes {
		node := cluster.Node(n)
		if node == nil {
			out = append(out, peerTarget{node: n, err: fmt.Errorf("node %s is not declared in %s", n, cluster.File)})
			continue
		}
		// One address per network, in declaration order: the first that
		// answers is used.
		var addrs []string
		for _, net := range cluster.NetworkNames() {
			if ip, ok := node.Addresses[net]; ok && !slices.Contains(addrs, ip.String()) {
				addrs = append(addrs, ip.String())
			}
		}
		tr := &http.Transport{TLSClientConfig: m.ClientConfig(n)}
		out = append(out, peerTarget{node: n, client: newFailoverClient(addrs, cluster.APIPort, tr)})
	}
	return out, nil
}

// newFailoverClient returns a client whose connections go to the first of
// addrs that accepts: a node is reachable while one of its networks is.
func newFailoverClient(addrs []string, port int, tr *http.Transport) *api.Client {
	tr.DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
		var errs []error
		for _, a := range addrs {
			d := net.Dialer{Timeout: 3 * time.Second}
			c, err := d.DialContext(ctx, network, net.JoinHostPort(a, strconv.Itoa(port)))
			if err == nil {
				return c, nil
			}
			errs = append(errs, err)
		}
		return nil, errors.Join(errs...)
	}
	// The host name is only what TLS verifies (ClientConfig's ServerName).
	return api.NewClient("https://halo-node", &http.Client{Transport: tr}).WithOrigin("cli")
}

func newModuleAdminCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "module",
		Short: "Package, install, deploy, list and uninstall module bundles",
		Args:  cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageError(cmd, fmt.Sprintf("unknown subcommand %q", args[0]))
			}
			return usageError(cmd, "a subcommand is required")
		},
	}
	root.AddCommand(newModulePackageCmd(), newModuleInstallCmd(), newModuleDeployCmd(), newModuleListCmd(), newModuleUninstallCmd())
	// Subcommands inherit it: a bad flag is a usage error (exit 2).
	root.SetFlagErrorFunc(flagUsageError)
	return root
}

// loadModuleDir checks a module directory against the cluster found in
// configDir (or alone without one) and returns its module.
func loadModuleDir(dir, configDir string) (*config.Module, error) {
	var cluster *config.Cluster
	if c, diags := config.LoadCluster(filepath.Join(configDir, config.ClusterFileName)); !diags.HasErrors() {
		cluster = c
	}
	m, diags := config.LoadModule(filepath.Join(dir, config.ModuleFileName), cluster)
	if diags.HasErrors() || m == nil {
		var b strings.Builder
		_ = config.WriteDiagnostics(&b, diags)
		return nil, &exitError{code: 1, msg: fmt.Sprintf("module in %s is invalid:\n%s", dir, strings.TrimSpace(b.String()))}
	}
	return m, nil
}

func newModulePackageCmd() *cobra.Command {
	var out, configDir string
	cmd := &cobra.Command{
		Use:   "package <module-dir>",
		Short: "Make <name>.halo from a module directory (module.hcl, scripts/, README)",
		Args:  exactArgs(1, "<module-dir>"),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := loadModuleDir(args[0], configDir)
			if err != nil {
				return err
			}
			data, err := bundle.Pack(args[0], m.Name)
			if err != nil {
				return err
			}
			if out == "" {
				out = m.Name + bundle.Extension
			}
			if err := writeFileAtomic(out, data); err != nil {
				return err
			}
			b, err := bundle.Read(bytes.NewReader(data))
			if err != nil {
				return fmt.Errorf("check the bundle written: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: module %s, %d files, %s\n", out, m.Name, len(b.Manifest.Files), b.Checksum())
			return nil
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "bundle file to write (default <name>.halo)")
	cmd.Flags().StringVar(&configDir, "config-dir", envOr("HALO_CONFIG_DIR", defaultConfigDir), "configuration directory whose cluster.hcl the module is checked against (env HALO_CONFIG_DIR)")
	return cmd
}

func writeFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	_, werr := tmp.Write(data)
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// readBundle reads a bundle file and returns its bytes and module name.
func readBundle(path string) ([]byte, *bundle.Bundle, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("read bundle: %w", err)
	}
	b, err := bundle.Read(bytes.NewReader(data))
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return data, b, nil
}

func newModuleInstallCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "install <bundle.halo>",
		Short: "Install a module bundle on this node (validated first; a running module is never replaced by an invalid one)",
		Args:  exactArgs(1, "<bundle.halo>"),
		RunE: func(cmd *cobra.Command, args []string) error {
			data, b, err := readBundle(args[0])
			if err != nil {
				return err
			}
			ctx, cancel := cf.ctx()
			defer cancel()
			res, err := cf.client().InstallBundle(ctx, b.Module(), data)
			if err != nil {
				return err
			}
			printAdminResult(cmd.OutOrStdout(), res)
			return nil
		},
	}
	cf.register(cmd)
	return cmd
}

func printAdminResult(w io.Writer, res api.AdminResult) {
	fmt.Fprintln(w, res.Text)
	for _, a := range res.Applied {
		fmt.Fprintf(w, "  applied: %s\n", a)
	}
}

func newModuleDeployCmd() *cobra.Command {
	var f adminFlags
	cmd := &cobra.Command{
		Use:   "deploy <module|bundle.halo>",
		Short: "Install a module on every node of the module over the mutual-TLS API and report per node",
		Long: `Install a module on every node it lists, over each node's mutual-TLS API with this
node's certificate. The argument is a bundle file, or the name of a module installed in
<config-dir>/modules, which is packaged first. Each node validates the module itself and
refuses it, with the reason, if it is invalid or if it runs there and the change needs a restart.`,
		Args: exactArgs(1, "<module|bundle.halo>"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var data []byte
			if st, err := os.Stat(args[0]); err == nil && !st.IsDir() {
				if data, _, err = readBundle(args[0]); err != nil {
					return err
				}
			} else {
				dir := filepath.Join(f.configDir, config.ModulesDirName, args[0])
				m, err := loadModuleDir(dir, f.configDir)
				if err != nil {
					return err
				}
				if data, err = bundle.Pack(dir, m.Name); err != nil {
					return err
				}
			}
			b, err := bundle.Read(bytes.NewReader(data))
			if err != nil {
				return err
			}
			cluster, err := f.loadCluster()
			if err != nil {
				return err
			}
			nodes, err := bundleNodes(b, cluster)
			if err != nil {
				return err
			}
			ctx, cancel := f.ctx()
			defer cancel()
			targets, err := f.peers(ctx, cluster, nodes)
			if err != nil {
				return err
			}
			failed := 0
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "deploying %s (%s) to %s\n", b.Module(), b.Checksum(), strings.Join(nodes, ", "))
			for _, t := range targets {
				if t.err != nil {
					failed++
					fmt.Fprintf(w, "%s: FAILED: %v\n", t.node, t.err)
					continue
				}
				res, err := t.client.InstallBundle(ctx, b.Module(), data)
				if err != nil {
					failed++
					fmt.Fprintf(w, "%s: FAILED: %v\n", t.node, err)
					continue
				}
				fmt.Fprintf(w, "%s: %s\n", t.node, res.Text)
				for _, a := range res.Applied {
					fmt.Fprintf(w, "  applied: %s\n", a)
				}
			}
			if failed > 0 {
				return &exitError{code: 1, msg: fmt.Sprintf("deploy of %s failed on %d of %d node(s)", b.Module(), failed, len(targets))}
			}
			return nil
		},
	}
	f.register(cmd, true)
	return cmd
}

// bundleNodes reads the nodes a bundle's module runs on.
func bundleNodes(b *bundle.Bundle, cluster *config.Cluster) ([]string, error) {
	tmp, err := os.MkdirTemp("", "halo-deploy-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	dir := filepath.Join(tmp, b.Module())
	if err := b.Extract(dir); err != nil {
		return nil, err
	}
	m, diags := config.LoadModule(filepath.Join(dir, config.ModuleFileName), cluster)
	if m == nil || len(m.Nodes) == 0 {
		var sb strings.Builder
		_ = config.WriteDiagnostics(&sb, diags)
		return nil, fmt.Errorf("the bundle's module.hcl names no nodes:\n%s", strings.ReplaceAll(strings.TrimSpace(sb.String()), tmp+string(filepath.Separator), ""))
	}
	// Errors beyond the node list are for each node to report: it
	// validates with its own plugins.
	return m.Nodes, nil
}

func newModuleListCmd() *cobra.Command {
	var f adminFlags
	var local bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List installed modules with their configuration checksum on every node; flag nodes that differ",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := f.ctx()
			defer cancel()
			mine, err := f.client().InstalledModules(ctx)
			if err != nil {
				return err
			}
			all := mine
			unreachable := 0
			var queried []string
			w := cmd.OutOrStdout()
			if !local {
				cluster, err := f.loadCluster()
				if err != nil {
					return err
				}
				self := ""
				if len(mine) > 0 {
					self = mine[0].Node
				} else if v, err := f.client().Version(ctx); err == nil {
					self = v.Node
				}
				if f.node == "" {
					f.node = self
				}
				queried = append(queried, self)
				var others []string
				for _, n := range cluster.Nodes {
					if n.Name != self {
						others = append(others, n.Name)
					}
				}
				targets, err := f.peers(ctx, cluster, others)
				if err != nil {
					return err
				}
				for _, t := range targets {
					var ms []api.InstalledModule
					if t.err == nil {
						ms, err = t.client.InstalledModules(ctx)
					} else {
						err = t.err
					}
					if err != nil {
						unreachable++
						fmt.Fprintf(w, "%s: unreachable: %v\n", t.node, err)
						continue
					}
					all = append(all, ms...)
					queried = append(queried, t.node)
				}
			}
			printInstalled(w, all, queried)
			if unreachable > 0 {
				return &exitError{code: 1, msg: fmt.Sprintf("%d node(s) could not be listed", unreachable)}
			}
			return nil
		},
	}
	f.register(cmd, true)
	cmd.Flags().BoolVar(&local, "local", false, "list this node only")
	return cmd
}

// printInstalled prints one line per module and node, then flags modules
// whose configuration differs between nodes.
// queried are the nodes that answered: a module missing from one of
// them, while it lists it, is flagged too.
func printInstalled(w io.Writer, ms []api.InstalledModule, queried []string) {
	slices.SortStableFunc(ms, func(a, b api.InstalledModule) int {
		return strings.Compare(a.Module+"\x00"+a.Node, b.Module+"\x00"+b.Node)
	})
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MODULE\tNODE\tSTATE\tCHECKSUM\tNOTE")
	sums := map[string]map[string][]string{} // module -> checksum -> nodes
	listed := map[string][]string{}          // module -> nodes it lists, where installed
	has := map[string]map[string]bool{}      // module -> nodes that have it
	for _, m := range ms {
		listed[m.Module] = append(listed[m.Module], m.Nodes...)
		if has[m.Module] == nil {
			has[m.Module] = map[string]bool{}
		}
		has[m.Module][m.Node] = true
		state := m.State
		if !m.Runs {
			state = "-"
		}
		var notes []string
		if m.Changed {
			notes = append(notes, "changed on disk, not applied (running "+short(m.Applied)+")")
		}
		if m.Error != "" {
			notes = append(notes, m.Error)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", m.Module, m.Node, state, short(m.Checksum), strings.Join(notes, "; "))
		if sums[m.Module] == nil {
			sums[m.Module] = map[string][]string{}
		}
		sums[m.Module][m.Checksum] = append(sums[m.Module][m.Checksum], m.Node)
	}
	_ = tw.Flush()
	for _, mod := range slices.Sorted(maps.Keys(sums)) {
		var missing []string
		for _, n := range listed[mod] {
			if !has[mod][n] && slices.Contains(queried, n) && !slices.Contains(missing, n) {
				missing = append(missing, n)
			}
		}
		if len(missing) > 0 {
			slices.Sort(missing)
			fmt.Fprintf(w, "MISSING %s: not installed on %s, a node it lists\n", mod, strings.Join(missing, ", "))
		}
		if len(sums[mod]) < 2 {
			continue
		}
		var parts []string
		for sum, nodes := range sums[mod] {
			parts = append(parts, fmt.Sprintf("%s on %s", short(sum), strings.Join(nodes, ", ")))
		}
		slices.Sort(parts)
		fmt.Fprintf(w, "MISMATCH %s: configuration differs between nodes: %s\n", mod, strings.Join(parts, "; "))
	}
}

// short abbreviates a checksum for tables.
func short(sum string) string {
	if s, ok := strings.CutPrefix(sum, "sha256:"); ok && len(s) > 12 {
		return "sha256:" + s[:12]
	}
	if sum == "" {
		return "-"
	}
	return sum
}

func newModuleUninstallCmd() *cobra.Command {
	return moduleAdminCmd("uninstall <module>", "Remove a module from this node (it must be stopped here first)",
		(*api.Client).UninstallModule)
}

func flagUsageError(cmd *cobra.Command, err error) error { return usageError(cmd, err.Error()) }

func newReloadCmd() *cobra.Command {
	return moduleAdminCmd("reload <module>", "Apply a module's edited files: live-changeable settings are applied, others refused with the reason",
		(*api.Client).Reload)
}

// moduleAdminCmd is a command that asks the local agent one thing about
// one module and prints the agent's account of what it did.
func moduleAdminCmd(use, short string, call func(*api.Client, context.Context, string) (api.AdminResult, error)) *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  exactArgs(1, "<module>"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := cf.ctx()
			defer cancel()
			res, err := call(cf.client(), ctx, args[0])
			if err != nil {
				return err
			}
			printAdminResult(cmd.OutOrStdout(), res)
			return nil
		},
	}
	cf.register(cmd)
	cmd.SetFlagErrorFunc(flagUsageError)
	return cmd
}
