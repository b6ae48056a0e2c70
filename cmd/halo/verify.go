package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/halo-ha/halo/internal/replication/daemon/ctl"
)

// replFlags locate a module's replication daemon on this node: verify and
// diff ask it, and it compares with its peer's daemon over the
// replication network (mutual TLS), so neither command needs the peer's
// API.
type replFlags struct {
	dataDir string
	timeout time.Duration
}

func (f *replFlags) register(cmd *cobra.Command, timeout time.Duration) {
	cmd.Flags().StringVar(&f.dataDir, "data-dir", envOr("HALO_DATA_DIR", defaultDataDir), "agent state directory (env HALO_DATA_DIR)")
	cmd.Flags().DurationVar(&f.timeout, "timeout", timeout, "how long the comparison may take")
}

func (f *replFlags) call(module string, req ctl.Request) (ctl.Response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
	defer cancel()
	resp, err := ctl.Client{Socket: ctl.SocketPath(f.dataDir, module)}.Call(ctx, req)
	if err != nil {
		return resp, fmt.Errorf("module %s: %w (is the module a mirror with replicated directories, running on this node?)", module, err)
	}
	return resp, nil
}

func newVerifyCmd() *cobra.Command {
	var f replFlags
	cmd := &cobra.Command{
		Use:   "verify <module>",
		Short: "Compare both nodes' replicated trees (exit 1 if they differ)",
		Long: `Compare the module's replicated directories on this node and on its peer:
contents (whole-file hashes), sizes, kinds, permissions, owners, times, xattrs,
symlink targets and hard links. Lists every difference (up to 1000) and exits 1
if there is any. Files the application changes during the comparison may show.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			resp, err := f.call(args[0], ctl.Request{Op: ctl.OpVerify})
			if err != nil {
				return err
			}
			rep := resp.Verify
			out := cmd.OutOrStdout()
			for _, d := range rep.Differences {
				fmt.Fprintln(out, d)
			}
			if rep.Truncated {
				fmt.Fprintln(out, "… more differences not listed")
			}
			if n := len(rep.Differences); n > 0 {
				return &exitError{code: 1, msg: fmt.Sprintf("%s and %s differ: %d difference(s) in %v", rep.Local, rep.Peer, n, rep.Took.Round(time.Millisecond))}
			}
			fmt.Fprintf(out, "%s and %s are identical (%d files compared in %v)\n", rep.Local, rep.Peer, rep.Files, rep.Took.Round(time.Millisecond))
			return nil
		},
	}
	f.register(cmd, time.Hour)
	return cmd
}

func newDiffCmd() *cobra.Command {
	var f replFlags
	cmd := &cobra.Command{
		Use:   "diff <module>",
		Short: "Estimate what a resync between both nodes would send, and how long it would take",
		Long: `Estimate the resync from the node that is not the target to the other, read-only,
with the plan the resync would use: incremental when both nodes' journals start at
the same checkpoint (the dirty ranges of files both hold, plus what differs below
new or replaced paths), a block comparison of both trees when it would be full
(first synchronization, a journal not trusted, journals of different
generations, an incremental resync that failed). The agent still resyncs in full
after a split brain, over data imposed by primforce, after halo second, or to
resume an interrupted full resync; the output says which estimate it is and why.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			resp, err := f.call(args[0], ctl.Request{Op: ctl.OpDiff})
			if err != nil {
				return err
			}
			rep := resp.Diff
			fmt.Fprintf(cmd.OutOrStdout(), "%s -> %s: %d objects to change, %d bytes to send, about %v\n%s\n",
				rep.Source, rep.Target, rep.Files, rep.Bytes, rep.Estimate.Round(time.Millisecond), rep.Reason)
			return nil
		},
	}
	f.register(cmd, time.Hour)
	return cmd
}
