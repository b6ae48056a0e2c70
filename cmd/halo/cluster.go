package main

import (
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/halo-ha/halo/internal/config"
	"github.com/halo-ha/halo/internal/pki"
)

func newClusterCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cluster",
		Short: "Create the cluster's CA, keys and certificates; show cluster status",
	}
	cmd.AddCommand(newClusterInitCmd(), newClusterStatusCmd())
	return cmd
}

func newClusterInitCmd() *cobra.Command {
	var clusterFile, outDir string
	var nodes, users []string
	var force bool
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Create the cluster CA, the cluster key and every node's certificate",
		Long: `Create the cluster CA, the cluster key, and each node's certificate and key
for mutual TLS between nodes, from the nodes and addresses in cluster.hcl.

Written under --out (default: a pki directory beside the cluster file):

  ca.pem, ca-key.pem   the cluster CA; keep ca-key.pem offline, it is needed
                       only to add nodes or re-issue certificates
  cluster.key          the cluster key that authenticates heartbeats
  <node>/tls/ca.pem, node.pem, node-key.pem, cluster.key
                       one directory per node, laid out like /etc/halo
  users/<user>/ca.pem, <user>.pem, <user>-key.pem
                       with --user: a client certificate for an API user

Install each node's files into its configuration directory, e.g.:

  scp -rp <out>/node2/* root@node2:/etc/halo/

Running init again reuses the CA and the cluster key, keeps existing node
keys, and re-issues only certificates that no longer fit (addresses changed,
CA replaced, expiring within 30 days): add a node to cluster.hcl and run it
again. --force also replaces the keys of the selected nodes and users, and
node copies of the cluster key that differ from <out>/cluster.key. The CA and
<out>/cluster.key are never replaced: to rotate them, remove them from --out,
run init again with --force, then install every node's new files.

Bring your own CA: place its certificate and key as <out>/ca.pem and
<out>/ca-key.pem before the first run. With only ca.pem (an external CA
whose key halo does not hold) init refuses and says what certificates to
request from that CA.

Secrets are written 0600 in 0700 directories. If anything is wrong (cluster
file, unknown node or user, damaged existing files) nothing is written.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cluster, err := loadClusterForInit(cmd.ErrOrStderr(), clusterFile)
			if err != nil {
				return err
			}
			if outDir == "" {
				outDir = filepath.Join(filepath.Dir(clusterFile), "pki")
			}
			plan, err := pki.PlanInit(pki.InitOptions{
				Cluster: cluster,
				OutDir:  outDir,
				Nodes:   nodes,
				Users:   users,
				Force:   force,
				Now:     time.Now(),
			})
			if err != nil {
				return &exitError{code: 1, msg: err.Error()}
			}
			if err := plan.Apply(); err != nil {
				return &exitError{code: 1, msg: err.Error()}
			}
			printInitPlan(cmd.OutOrStdout(), plan)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&clusterFile, "cluster", filepath.Join(envOr("HALO_CONFIG_DIR", defaultConfigDir), config.ClusterFileName),
		"cluster file (env HALO_CONFIG_DIR sets its directory)")
	f.StringVar(&outDir, "out", "", "output directory (default <cluster file's directory>/pki)")
	f.StringArrayVar(&nodes, "node", nil, "write files for this node only (repeatable; default every node)")
	f.StringArrayVar(&users, "user", nil, "also issue a client certificate for this declared user (repeatable)")
	f.BoolVar(&force, "force", false, "replace existing keys of the selected nodes and users")
	return cmd
}

func loadClusterForInit(stderr io.Writer, path string) (*config.Cluster, error) {
	cluster, diags := config.LoadCluster(path)
	if diags.HasErrors() {
		_ = config.WriteDiagnostics(stderr, diags)
		return nil, &exitError{code: 1, msg: fmt.Sprintf("cluster init: %s has %d error(s); nothing written", path, countErrors(diags))}
	}
	return cluster, nil
}

func printInitPlan(w io.Writer, plan *pki.InitPlan) {
	for _, ch := range plan.Changes {
		note := ""
		if ch.Note != "" {
			note = "  " + ch.Note
		}
		fmt.Fprintf(w, "%-8s %04o %s%s\n", ch.Action, ch.Mode.Perm(), ch.Path, note)
	}
	for _, o := range plan.Outside {
		fmt.Fprintf(w, "note: cluster.hcl names a path outside its directory; move %s\n", o)
	}
	names := make([]string, 0, len(plan.NodeDirs))
	for n := range plan.NodeDirs {
		names = append(names, n)
	}
	slices.Sort(names)
	if len(names) > 0 {
		fmt.Fprintln(w, "install each node's files into its configuration directory, e.g.:")
		for _, n := range names {
			fmt.Fprintf(w, "  scp -rp %s/* root@%s:/etc/halo/\n", plan.NodeDirs[n], n)
		}
	}
	if slices.ContainsFunc(plan.Changes, func(ch pki.FileChange) bool {
		return ch.Action == pki.ActionCreate && strings.HasSuffix(ch.Path, string(filepath.Separator)+pki.CAKeyFileName)
	}) {
		fmt.Fprintf(w, "keep %s offline: it is needed only to add nodes or re-issue certificates\n", filepath.Join(plan.OutDir, pki.CAKeyFileName))
	}
}

func newClusterStatusCmd() *cobra.Command {
	return &cobra.Command{
		Use:                "status",
		Short:              "Show the cluster's nodes and their links (not yet available)",
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return &exitError{code: 2, msg: `"cluster status" is not yet available in this build`}
		},
	}
}
