package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/halo-ha/halo/internal/config"
	"github.com/halo-ha/halo/internal/pki"
	"github.com/halo-ha/halo/internal/replication/daemon"
)

// module is the benchmark's mirror module name.
const module = "bench"

// bedConfig is what both daemon processes are started with (written as
// JSON by the benchmark, read by `fsbench daemon`).
type bedConfig struct {
	Port  int                 `json:"port"`
	Mode  string              `json:"mode"`
	PKI   string              `json:"pki"`
	Nodes map[string]nodeConf `json:"nodes"`
}

type nodeConf struct {
	Addr string `json:"addr"`
	Repl string `json:"repl"` // the replicated directory
	Data string `json:"data"` // the daemon's data directory
}

// runDaemon is `fsbench daemon -config F -node N`: the module's
// replication daemon (package daemon, as `halo replicate` runs it) in
// this process. SIGUSR1 starts a CPU profile into the file named by
// <data>/profile.path, SIGUSR2 stops it.
func runDaemon(args []string) error {
	fs := flag.NewFlagSet("daemon", flag.ContinueOnError)
	cfgPath := fs.String("config", "", "bed configuration (JSON)")
	node := fs.String("node", "", "this node's name")
	if err := fs.Parse(args); err != nil {
		return err
	}
	raw, err := os.ReadFile(*cfgPath)
	if err != nil {
		return fmt.Errorf("read bed configuration: %w", err)
	}
	var bc bedConfig
	if err := json.Unmarshal(raw, &bc); err != nil {
		return fmt.Errorf("parse %s: %w", *cfgPath, err)
	}
	me, ok := bc.Nodes[*node]
	if !ok {
		return fmt.Errorf("node %q is not in %s", *node, *cfgPath)
	}
	clust := &config.Cluster{Name: module}
	var names []string
	for _, n := range []string{"n1", "n2"} {
		nc := bc.Nodes[n]
		addr, err := netip.ParseAddr(nc.Addr)
		if err != nil {
			return fmt.Errorf("node %s address: %w", n, err)
		}
		clust.Nodes = append(clust.Nodes, &config.Node{Name: n, Addresses: map[string]netip.Addr{"replication": addr}})
		names = append(names, n)
	}
	mod := &config.Module{
		Name: module, Kind: config.KindMirror, Nodes: names,
		Replication: &config.Replication{
			Mode: config.ReplicationMode(bc.Mode), Network: "replication", Port: bc.Port,
			StallTimeout: 10 * time.Second, ZoneSize: 64 << 10,
			Resync: config.Resync{Parallel: 4},
			Dirs:   []*config.Dir{{Path: me.Repl}},
		},
	}
	read := func(name string) []byte {
		b, rerr := os.ReadFile(filepath.Join(bc.PKI, name))
		if rerr != nil {
			err = errors.Join(err, rerr)
		}
		return b
	}
	ca, cert, key := read("ca.pem"), read(*node+".pem"), read(*node+".key")
	if err != nil {
		return fmt.Errorf("read TLS material: %w", err)
	}
	mat, err := pki.ParseMaterial(ca, cert, key, time.Now())
	if err != nil {
		return fmt.Errorf("parse TLS material: %w", err)
	}
	logf, err := os.OpenFile(filepath.Join(me.Data, "daemon.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open daemon log: %w", err)
	}
	defer logf.Close()
	d, err := daemon.New(daemon.Config{Module: mod, Cluster: clust, Node: *node, DataDir: me.Data, TLS: mat,
		Logger: hclog.New(&hclog.LoggerOptions{Name: *node, Level: hclog.Info, Output: logf})})
	if err != nil {
		return fmt.Errorf("start daemon: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go profileOnSignal(filepath.Join(me.Data, "profile.path"))
	return d.Run(ctx)
}

func profileOnSignal(pathFile string) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGUSR1, syscall.SIGUSR2)
	var out *os.File
	for s := range sig {
		switch {
		case s == syscall.SIGUSR1 && out == nil:
			p, err := os.ReadFile(pathFile)
			if err != nil {
				fmt.Fprintf(os.Stderr, "profile: %v\n", err)
				continue
			}
			if out, err = os.Create(strings.TrimSpace(string(p))); err != nil {
				fmt.Fprintf(os.Stderr, "profile: %v\n", err)
				continue
			}
			if err := pprof.StartCPUProfile(out); err != nil {
				fmt.Fprintf(os.Stderr, "profile: %v\n", err)
				out.Close()
				out = nil
			}
		case s == syscall.SIGUSR2 && out != nil:
			pprof.StopCPUProfile()
			out.Close()
			out = nil
		}
	}
}
