package config

import (
	"path/filepath"
	"time"

	"github.com/hashicorp/hcl/v2"
)

// Every default of the configuration is here, and only here: decoding
// leaves unset attributes at their zero value and Source.IsSet false, then
// the apply functions below fill them in before any semantic check runs.

// Cluster defaults.
const (
	DefaultAPIPort    = 9453 // agent API and web console, HTTPS
	DefaultHealthPort = 9010 // cloud health endpoint
	// TLS material and the cluster key, relative to the cluster file's
	// directory (so a test node with its own config directory gets its own).
	DefaultCAFile         = "tls/ca.pem"
	DefaultCertFile       = "tls/node.pem"
	DefaultKeyFile        = "tls/node-key.pem"
	DefaultClusterKeyFile = "tls/cluster.key"
)

// Module defaults, common to every kind.
const (
	DefaultMaxLoop      = 3
	DefaultLoopInterval = 24 * time.Hour
)

// Mirror defaults.
const (
	DefaultFailover         = true
	DefaultSplitBrainWinner = SplitBrainLongestAlone
	DefaultSyncDelta        = time.Duration(0) // never start ALONE on data of unknown age

	DefaultPulse            = 1 * time.Second
	DefaultHeartbeatTimeout = 5 * time.Second

	DefaultReplicationMode = ModeSync
	DefaultStallTimeout    = 10 * time.Second
	DefaultMaxLag          = 5 * time.Second // async only
	DefaultZoneSize        = 64 << 10        // the reference uses 8 MiB
	DefaultResyncParallel  = 4
	DefaultResyncBandwidth = 0 // unlimited
)

// Farm defaults.
const (
	DefaultBalance     = BalanceClientIP
	DefaultPower       = 1
	DefaultFarmPulse   = 1 * time.Second
	DefaultFarmTimeout = 5 * time.Second
)

// VIP defaults.
const (
	DefaultVIPPlugin        = "vip"
	DefaultAnnounceCount    = 3
	DefaultAnnounceInterval = 1 * time.Second
)

// Application and checker defaults.
const (
	DefaultAppPlugin     = "script"
	DefaultScriptsDir    = "scripts"
	DefaultStartTimeout  = 60 * time.Second
	DefaultStopTimeout   = 30 * time.Second
	DefaultCheckInterval = 10 * time.Second
	// A checker's timeout defaults to half its interval, so a hung probe is
	// reported before the next one is due.
	DefaultCheckTimeoutDivisor = 2
	DefaultCheckAction         = "restart"
	DefaultCheckWhen           = "both"
)

// Network defaults: a module that does not name its networks uses these
// when the cluster declares them.
const (
	DefaultNetwork            = "default"
	DefaultReplicationNetwork = "replication" // if declared; otherwise DefaultNetwork
)

// Module ids and the ports derived from them. Readable on purpose: module
// 12 uses 20012 (heartbeat, UDP), 21012 (replication, TCP) and 22012 (farm
// membership, TCP+UDP), so a firewall rule can be written from the id.
const (
	MinModuleID         = 1
	MaxModuleID         = 999
	HeartbeatPortBase   = 20000
	ReplicationPortBase = 21000
	FarmPortBase        = 22000
)

// HeartbeatPort is the default heartbeat port of module id.
func HeartbeatPort(id int) int { return HeartbeatPortBase + id }

// ReplicationPort is the default replication port of module id.
func ReplicationPort(id int) int { return ReplicationPortBase + id }

// FarmPort is the default farm membership port of module id.
func FarmPort(id int) int { return FarmPortBase + id }

func applyClusterDefaults(c *Cluster) {
	if !c.IsSet("api_port") {
		c.APIPort = DefaultAPIPort
	}
	if !c.IsSet("health_port") {
		c.HealthPort = DefaultHealthPort
	}
	base := filepath.Dir(c.File)
	c.KeyFile = resolvePath(base, c.KeyFile, DefaultClusterKeyFile)
	c.TLS.CAFile = resolvePath(base, c.TLS.CAFile, DefaultCAFile)
	c.TLS.CertFile = resolvePath(base, c.TLS.CertFile, DefaultCertFile)
	c.TLS.KeyFile = resolvePath(base, c.TLS.KeyFile, DefaultKeyFile)
}

// resolvePath returns p (or def when p is empty) made absolute against base.
func resolvePath(base, p, def string) string {
	if p == "" {
		p = def
	}
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	if abs, err := filepath.Abs(filepath.Join(base, p)); err == nil {
		return abs
	}
	return filepath.Join(base, p)
}

// applyModuleDefaults fills in every unset attribute. cluster may be nil
// (a module checked on its own); network defaults then assume the
// conventional names.
func applyModuleDefaults(m *Module, c *Cluster) {
	if !m.IsSet("max_loop") {
		m.MaxLoop = DefaultMaxLoop
	}
	if !m.IsSet("loop_interval") {
		m.LoopInterval = DefaultLoopInterval
	}
	for _, v := range m.VIPs {
		if !v.IsSet("plugin") {
			v.Plugin = DefaultVIPPlugin
		}
		if !v.IsSet("network") {
			v.Network = DefaultNetwork
		}
		if !v.IsSet("announce_count") {
			v.AnnounceCount = DefaultAnnounceCount
		}
		if !v.IsSet("announce_interval") {
			v.AnnounceInterval = DefaultAnnounceInterval
		}
	}
	if m.Kind == KindMirror {
		if !m.IsSet("failover") {
			m.Failover = DefaultFailover
		}
		if !m.IsSet("split_brain_winner") {
			m.SplitBrainWinner = DefaultSplitBrainWinner
		}
		if !m.IsSet("sync_delta") {
			m.SyncDelta = DefaultSyncDelta
		}
		if m.Heartbeat == nil {
			m.Heartbeat = &Heartbeat{Source: Source{Range: m.Range}}
		}
		applyHeartbeatDefaults(m, c)
		if m.Replication != nil {
			applyReplicationDefaults(m, c)
		}
	}
	if m.Kind == KindFarm {
		if m.Farm == nil {
			m.Farm = &Farm{Source: Source{Range: m.Range}}
		}
		applyFarmDefaults(m, c)
	}
	if !m.Health.IsSet("enabled") {
		m.Health.Enabled = true
	}
	if !m.Health.IsSet("port") {
		m.Health.Port = DefaultHealthPort
		if c != nil {
			m.Health.Port = c.HealthPort
		}
	}
	applyAppDefaults(m)
	for _, ch := range m.Checks {
		if !ch.IsSet("interval") {
			ch.Interval = DefaultCheckInterval
		}
		if !ch.IsSet("timeout") {
			ch.Timeout = ch.Interval / DefaultCheckTimeoutDivisor
		}
		// Action and When are zero-valued enums whose zero is the default
		// (restart, both); nothing to fill in.
	}
}

func applyHeartbeatDefaults(m *Module, c *Cluster) {
	hb := m.Heartbeat
	if !hb.IsSet("pulse") {
		hb.Pulse = DefaultPulse
	}
	if !hb.IsSet("timeout") {
		hb.Timeout = DefaultHeartbeatTimeout
	}
	if !hb.IsSet("port") {
		hb.Port = HeartbeatPort(m.ID)
	}
	if !hb.IsSet("networks") {
		// Every network on which all the module's nodes have an address:
		// heartbeats on more networks tell a dead peer from a cut link.
		hb.Networks = sharedNetworks(m, c)
		hb.NetworkRanges = make([]hcl.Range, len(hb.Networks))
		for i := range hb.NetworkRanges {
			hb.NetworkRanges[i] = hb.Range
		}
	}
}

func applyReplicationDefaults(m *Module, c *Cluster) {
	r := m.Replication
	if !r.IsSet("mode") {
		r.Mode = DefaultReplicationMode
	}
	if !r.IsSet("network") {
		r.Network = DefaultNetwork
		if c == nil || c.Network(DefaultReplicationNetwork) != nil {
			r.Network = DefaultReplicationNetwork
		}
	}
	if !r.IsSet("port") {
		r.Port = ReplicationPort(m.ID)
	}
	if !r.IsSet("stall_timeout") {
		r.StallTimeout = DefaultStallTimeout
	}
	if !r.IsSet("max_lag") && r.Mode == ModeAsync {
		r.MaxLag = DefaultMaxLag
	}
	if !r.IsSet("zone_size") {
		r.ZoneSize = DefaultZoneSize
	}
	if !r.Resync.IsSet("parallel") {
		r.Resync.Parallel = DefaultResyncParallel
	}
	if !r.Resync.IsSet("bandwidth") {
		r.Resync.Bandwidth = DefaultResyncBandwidth
	}
}

func applyFarmDefaults(m *Module, c *Cluster) {
	f := m.Farm
	if !f.IsSet("network") {
		// Forwarding to the serving nodes happens at layer 2 on the VIP's
		// network, so membership follows it.
		f.Network = DefaultNetwork
		if len(m.VIPs) > 0 {
			f.Network = m.VIPs[0].Network
		}
	}
	if !f.IsSet("port") {
		f.Port = FarmPort(m.ID)
	}
	if !f.IsSet("pulse") {
		f.Pulse = DefaultFarmPulse
	}
	if !f.IsSet("timeout") {
		f.Timeout = DefaultFarmTimeout
	}
	if !f.IsSet("balance") {
		f.Balance = DefaultBalance
	}
	if f.Power == nil {
		f.Power = make(map[string]int)
	}
	for _, n := range m.Nodes {
		if _, ok := f.Power[n]; !ok {
			f.Power[n] = DefaultPower
		}
	}
}

func applyAppDefaults(m *Module) {
	a := &m.App
	if !a.IsSet("plugin") {
		a.Plugin = DefaultAppPlugin
	}
	if a.Plugin == DefaultAppPlugin && !a.IsSet("scripts") {
		a.Scripts = DefaultScriptsDir
	}
	if a.Scripts != "" && !filepath.IsAbs(a.Scripts) {
		a.Scripts = resolvePath(m.Dir, a.Scripts, "")
	}
	if !a.IsSet("start_timeout") {
		a.StartTimeout = DefaultStartTimeout
	}
	if !a.IsSet("stop_timeout") {
		a.StopTimeout = DefaultStopTimeout
	}
	if a.Env == nil {
		a.Env = map[string]string{}
	}
}

// sharedNetworks lists, in cluster declaration order, the networks on
// which every node of m has an address.
func sharedNetworks(m *Module, c *Cluster) []string {
	if c == nil {
		return []string{DefaultNetwork}
	}
	var nets []string
	for _, n := range c.Networks {
		all := true
		for _, name := range m.Nodes {
			node := c.Node(name)
			if node == nil {
				continue // reported elsewhere
			}
			if _, ok := node.Addresses[n.Name]; !ok {
				all = false
				break
			}
		}
		if all {
			nets = append(nets, n.Name)
		}
	}
	return nets
}
