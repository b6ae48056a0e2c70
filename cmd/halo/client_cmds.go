package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/halo-ha/halo/sdk/api"
)

// Paths are overridable by flags and environment so several nodes can run
// on one machine (tests, the demo).
const (
	defaultDataDir   = "/var/lib/halo"
	defaultConfigDir = "/etc/halo"
	defaultPluginDir = "/usr/lib/halo/plugins"
)

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// clientFlags are the flags of every command that talks to the local agent.
type clientFlags struct {
	socket  string
	timeout time.Duration
}

func (f *clientFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.socket, "socket", envOr("HALO_SOCKET", filepath.Join(envOr("HALO_DATA_DIR", defaultDataDir), "halo.sock")),
		"agent API socket (env HALO_SOCKET; default <HALO_DATA_DIR>/halo.sock)")
	cmd.Flags().DurationVar(&f.timeout, "timeout", 30*time.Second, "how long to wait for the agent")
}

func (f *clientFlags) client() *api.Client { return api.NewUnixClient(f.socket).WithOrigin("cli") }

func (f *clientFlags) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), f.timeout)
}

func newStatusCmd() *cobra.Command {
	var cf clientFlags
	var verbose, asJSON, quiet bool
	cmd := &cobra.Command{
		Use:   "status [module]",
		Short: "Show module states on this node (-v resources, --json, -q exit code 0..4 = STOP, WAIT, ALONE/UP, PRIM, SECOND)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if quiet && len(args) != 1 {
				return usageError(cmd, "-q needs a module name")
			}
			ctx, cancel := cf.ctx()
			defer cancel()
			c := cf.client()
			var mods []api.ModuleStatus
			if len(args) == 1 {
				m, err := c.Module(ctx, args[0])
				if err != nil {
					return err
				}
				mods = []api.ModuleStatus{m}
			} else {
				ms, err := c.Modules(ctx)
				if err != nil {
					return err
				}
				if verbose {
					for _, m := range ms {
						full, err := c.Module(ctx, m.Module)
						if err != nil {
							return err
						}
						mods = append(mods, full)
					}
				} else {
					mods = ms
				}
			}
			if quiet {
				return &exitError{code: mods[0].ExitCode}
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(mods)
			}
			printStatus(out, mods, verbose)
			return nil
		},
	}
	cf.register(cmd)
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "show resources, switches and max_loop count")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print nothing; exit with the state code")
	return cmd
}

func printStatus(w io.Writer, mods []api.ModuleStatus, verbose bool) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MODULE\tKIND\tNODE\tSTATE\tREADINESS\tSINCE\tREASON")
	for _, m := range mods {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.Module, m.Kind, m.Node, m.State, m.Readiness,
			m.Since.Local().Format("15:04:05"), m.Reason)
	}
	tw.Flush()
	if !verbose {
		for _, m := range mods {
			printReplication(w, m, false)
		}
		return
	}
	for _, m := range mods {
		fmt.Fprintf(w, "\n%s: failover=%s checkers=%s errd=%s  max_loop %d/%d in %s\n", m.Module,
			onOff(m.Switches.Failover), onOff(m.Switches.Checkers), onOff(m.Switches.Errd), m.Loop.Count, m.Loop.Max, m.Loop.Interval)
		printReplication(w, m, true)
		names := make([]string, 0, len(m.Resources))
		for n := range m.Resources {
			names = append(names, n)
		}
		sort.Strings(names)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		for _, n := range names {
			r := m.Resources[n]
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", n, r.Value, r.Since.Local().Format("15:04:05"), r.Message)
		}
		tw.Flush()
	}
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// newModuleCommand builds `halo <verb> <module>` commands that send one
// admin command to the local agent.
func newModuleCommand(verb, short string) *cobra.Command {
	var cf clientFlags
	var fullSync bool
	cmd := &cobra.Command{
		Use:   verb + " <module>",
		Short: short,
		Args:  exactArgs(1, "<module>"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := cf.ctx()
			defer cancel()
			res, err := cf.client().Command(ctx, args[0], api.CommandRequest{Command: verb, FullSync: fullSync})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s on %s: %s\n", res.Module, res.Node, res.Text)
			return nil
		},
	}
	cf.register(cmd)
	if verb == "prim" || verb == "second" || verb == "primforce" {
		cmd.Flags().BoolVar(&fullSync, "fullsync", false, "force a full resynchronisation")
	}
	return cmd
}

// newSwitchCommand builds `halo failover|checker|errd on|off <module>`.
func newSwitchCommand(name, short string) *cobra.Command {
	var cf clientFlags
	var checker string
	cmd := &cobra.Command{
		Use:   name + " on|off <module>",
		Short: short,
		Args:  exactArgs(2, "on|off <module>"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if args[0] != "on" && args[0] != "off" {
				return usageError(cmd, fmt.Sprintf("first argument must be on or off, not %q", args[0]))
			}
			ctx, cancel := cf.ctx()
			defer cancel()
			req := api.CommandRequest{Command: name + "-" + args[0], Checker: checker}
			res, err := cf.client().Command(ctx, args[1], req)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s on %s: %s\n", res.Module, res.Node, res.Text)
			return nil
		},
	}
	cf.register(cmd)
	if name == "checker" {
		cmd.Flags().StringVar(&checker, "name", "", "only this checker (default: all)")
	}
	return cmd
}

func newLogsCmd() *cobra.Command {
	var cf clientFlags
	var follow bool
	var last int
	cmd := &cobra.Command{
		Use:   "logs <module>",
		Short: "Show the module's event log (-f to follow)",
		Args:  exactArgs(1, "<module>"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c := cf.client()
			out := cmd.OutOrStdout()
			ctx, cancel := cf.ctx()
			evs, err := c.Events(ctx, args[0], 0, 0)
			cancel()
			if err != nil {
				return err
			}
			if last > 0 && len(evs) > last {
				evs = evs[len(evs)-last:]
			}
			var seq uint64
			for _, e := range evs {
				printEvent(out, e)
				seq = e.Seq
			}
			if !follow {
				return nil
			}
			fctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			err = c.FollowEvents(fctx, args[0], seq, func(e api.Event) error { printEvent(out, e); return nil })
			if fctx.Err() != nil {
				return nil
			}
			return err
		},
	}
	cf.register(cmd)
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new events")
	cmd.Flags().IntVarP(&last, "lines", "n", 0, "only the last N events")
	return cmd
}

func printEvent(w io.Writer, e api.Event) {
	fmt.Fprintf(w, "%s %-5s %-7s %s\n", e.Time.Local().Format("2006-01-02 15:04:05.000"), e.Level, e.Kind, e.Text)
}

func newResourceCmd() *cobra.Command {
	var cf clientFlags
	root := &cobra.Command{Use: "resource get|set", Short: "Read or set a module resource"}
	get := &cobra.Command{
		Use:   "get <module> <resource>",
		Short: "Print a resource's value",
		Args:  exactArgs(2, "<module> <resource>"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := cf.ctx()
			defer cancel()
			r, err := cf.client().Resource(ctx, args[0], args[1])
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), strings.TrimSpace(r.Value+" "+r.Message))
			return nil
		},
	}
	var msg string
	set := &cobra.Command{
		Use:   "set <module> <resource> <value>",
		Short: "Set a resource (checker.<name> = up|down|unknown feeds the module's checker)",
		Args:  exactArgs(3, "<module> <resource> <value>"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := cf.ctx()
			defer cancel()
			return cf.client().SetResource(ctx, args[0], args[1], api.ResourceSet{Value: args[2], Message: msg})
		},
	}
	set.Flags().StringVarP(&msg, "message", "m", "", "a message shown with the value")
	cf.register(get)
	cf.register(set)
	root.AddCommand(get, set)
	return root
}

func newPluginCmd() *cobra.Command {
	var cf clientFlags
	root := &cobra.Command{Use: "plugin list", Short: "Installed plugins"}
	list := &cobra.Command{
		Use:   "list",
		Short: "List the plugins the agent found: name, kind, version, API version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := cf.ctx()
			defer cancel()
			ps, err := cf.client().Plugins(ctx)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tKIND\tVERSION\tAPI\tPATH\tERROR")
			for _, p := range ps {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", p.Name, p.Kind, p.Version, p.APIVersion, p.Path, p.Error)
			}
			return tw.Flush()
		},
	}
	cf.register(list)
	root.AddCommand(list)
	return root
}

// exactArgs is cobra.ExactArgs with a usage line in the error.
func exactArgs(n int, usage string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usageError(cmd, fmt.Sprintf("expected %s, got %d argument(s)", usage, len(args)))
		}
		return nil
	}
}

// usageError reports bad arguments with exit code 2.
func usageError(cmd *cobra.Command, msg string) error {
	return &exitError{code: 2, msg: fmt.Sprintf("%s: %s (see %s --help)", cmd.CommandPath(), msg, cmd.CommandPath())}
}
