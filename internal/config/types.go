package config

import (
	"net"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"github.com/hashicorp/hcl/v2"

	"github.com/halo-ha/halo/core"
)

// Source records where a block was written, and where each of its
// attributes' values were, so that later messages (a plugin rejecting its
// configuration, a port already in use at run time) can point at the line.
type Source struct {
	// Range is the block header: its type and labels.
	Range   hcl.Range
	attrs   map[string]hcl.Range
	invalid map[string]bool
}

// AttrRange returns the range of the value of the named attribute, or the
// block header when the attribute was not written (its value is a default).
func (s *Source) AttrRange(name string) hcl.Range {
	if r, ok := s.attrs[name]; ok {
		return r
	}
	return s.Range
}

// IsSet reports whether the named attribute was written in the file, as
// opposed to filled in by a default.
func (s *Source) IsSet(name string) bool {
	_, ok := s.attrs[name]
	return ok
}

// Valid reports whether none of the named attributes had a value that was
// rejected; checks that relate several attributes skip reported ones.
func (s *Source) Valid(names ...string) bool {
	for _, n := range names {
		if s.invalid[n] {
			return false
		}
	}
	return true
}

func (s *Source) setAttr(name string, r hcl.Range) {
	if s.attrs == nil {
		s.attrs = make(map[string]hcl.Range)
	}
	s.attrs[name] = r
}

func (s *Source) unset(name string) { delete(s.attrs, name) }

func (s *Source) setInvalid(name string) {
	if s.invalid == nil {
		s.invalid = make(map[string]bool)
	}
	s.invalid[name] = true
}

// Cluster is the content of cluster.hcl: the nodes that know each other and
// their addresses on each named network.
type Cluster struct {
	Source
	Name string
	// File is the path of the cluster file as it was given.
	File string

	APIPort    int // agent API and console (HTTPS)
	HealthPort int // cloud health endpoint, GET /health/<module>
	// KeyFile holds the cluster key that authenticates heartbeats (HMAC).
	KeyFile string

	TLS      TLS
	Networks []*Network // in declaration order
	Nodes    []*Node    // in declaration order
	Users    []*User    // in declaration order
	// Metrics is the optional plain-HTTP metrics listener; nil = none
	// (GET /metrics is still served on the API).
	Metrics *Metrics
}

// Metrics is the cluster's metrics block: every node serves GET /metrics
// in plain HTTP on Port, so that Prometheus scrapes without a client
// certificate (the figures are read-only; the API keeps mutual TLS).
type Metrics struct {
	Source
	Port int
	// Networks are those whose node address is listened on; nil = every
	// network the node has an address on.
	Networks      []string
	NetworkRanges []hcl.Range
	// Loopback also listens on 127.0.0.1 (a Prometheus agent on the node).
	Loopback bool
}

// MetricsAddrs returns the host:port addresses node's metrics listener
// serves, each once; none without a metrics block.
func (c *Cluster) MetricsAddrs(node string) []string {
	m, n := c.Metrics, c.Node(node)
	if m == nil || n == nil {
		return nil
	}
	nets := m.Networks
	if nets == nil {
		nets = c.NetworkNames()
	}
	var out []string
	add := func(ip string) {
		a := net.JoinHostPort(ip, strconv.Itoa(m.Port))
		if !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	for _, name := range nets {
		if ip, ok := n.Addresses[name]; ok {
			add(ip.String())
		}
	}
	if m.Loopback {
		add("127.0.0.1")
	}
	return out
}

// Network returns the declared network with that name, or nil.
func (c *Cluster) Network(name string) *Network {
	for _, n := range c.Networks {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// Node returns the declared node with that name, or nil.
func (c *Cluster) Node(name string) *Node {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// NetworkNames lists the declared networks in declaration order.
func (c *Cluster) NetworkNames() []string {
	names := make([]string, len(c.Networks))
	for i, n := range c.Networks {
		names[i] = n.Name
	}
	return names
}

// NodeNames lists the declared nodes in declaration order.
func (c *Cluster) NodeNames() []string {
	names := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		names[i] = n.Name
	}
	return names
}

// TLS locates the mutual-TLS material every node uses to talk to its peers
// and to serve the API. Paths are absolute once loaded (relative paths in
// the file are resolved against the cluster file's directory).
type TLS struct {
	Source
	CAFile   string // cluster CA certificate
	CertFile string // this node's certificate, signed by the CA
	KeyFile  string // this node's private key
}

// Network is a named network (e.g. "default", "replication"). Each node has
// at most one address on each network.
type Network struct {
	Source
	Name string
}

// Node is one server running `halo agent`.
type Node struct {
	Source
	Name string
	// Addresses maps a network name to this node's address on it.
	Addresses map[string]netip.Addr
	// AddressRanges maps a network name to where its address was written.
	AddressRanges map[string]hcl.Range
}

// Role is a console/API role.
type Role string

const (
	RoleAdmin   Role = "admin"   // everything
	RoleControl Role = "control" // monitor and commands
	RoleMonitor Role = "monitor" // read-only
)

// User is an API/console user. Without a PasswordHash the user can only
// authenticate with a client certificate whose common name is Name.
type User struct {
	Source
	Name         string
	Role         Role
	PasswordHash string // bcrypt ($2a$, $2b$ or $2y$)
}

// Kind is the kind of a module.
type Kind string

const (
	KindMirror Kind = "mirror" // 2 nodes, replication and failover
	KindFarm   Kind = "farm"   // N nodes, load balancing and failover
	KindLight  Kind = "light"  // 1 node, checkers and local restart
)

// Module is the content of modules/<name>/module.hcl, with every default
// filled in.
type Module struct {
	Source
	Name string
	// File is the path of the module file as it was given; Dir its
	// directory, absolute.
	File string
	Dir  string

	Description string
	Kind        Kind
	ID          int      // unique in the cluster; default ports derive from it
	Nodes       []string // in declaration order
	NodeRanges  []hcl.Range

	// Mirror only (zero on other kinds).
	Failover       bool
	DefaultPrimary string // "" = none
	SyncDelta      time.Duration
	// SplitBrainWinner is SplitBrainLongestAlone, SplitBrainDefaultPrimary or
	// a node name.
	SplitBrainWinner string

	MaxLoop      int
	LoopInterval time.Duration

	Heartbeat   *Heartbeat   // mirror only; nil otherwise
	Replication *Replication // mirror only; nil when nothing is replicated
	Farm        *Farm        // farm only; nil otherwise
	VIPs        []*VIP
	Health      Health
	App         App
	Checks      []*Check // in declaration order
}

// Check returns the checker with that instance name, or nil.
func (m *Module) Check(name string) *Check {
	for _, c := range m.Checks {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// HasNode reports whether the module runs on the named node.
func (m *Module) HasNode(name string) bool {
	for _, n := range m.Nodes {
		if n == name {
			return true
		}
	}
	return false
}

// Split-brain policies besides a node name.
const (
	SplitBrainLongestAlone   = "longest_alone"
	SplitBrainDefaultPrimary = "default_primary"
)

// Heartbeat configures a mirror's heartbeats: one UDP flow per network.
type Heartbeat struct {
	Source
	Pulse    time.Duration // interval between heartbeats
	Timeout  time.Duration // loss on every network for this long = peer down
	Networks []string
	// NetworkRanges holds where each network was written (or the block
	// header when Networks is a default).
	NetworkRanges []hcl.Range
	Port          int // UDP; derived from the module id unless set
}

// VIP is a virtual IP address held by the node that serves the module.
type VIP struct {
	Source
	Plugin           string       // VIP plugin; the built-in "vip" uses netlink and gratuitous ARP
	Address          netip.Prefix // address with the prefix length of its subnet
	Network          string       // network whose interface carries it
	Interface        string       // "" = the interface holding the node's address on Network
	AnnounceCount    int          // gratuitous ARP / unsolicited NA repetitions
	AnnounceInterval time.Duration
	// Config is the rest of the vip block: the plugin's own settings,
	// unparsed (see Check.Config). Empty for the built-in vip plugin.
	Config hcl.Body
}

// Health configures the cloud health endpoint GET /health/<module>.
type Health struct {
	Source
	Enabled bool
	Port    int // defaults to the cluster's health_port
}

// ReplicationMode says when a replicated write returns to the application.
type ReplicationMode string

const (
	ModeSync    ReplicationMode = "sync"    // peer received and applied it; fsync waits for both disks
	ModeDurable ReplicationMode = "durable" // every write waits for the peer's disk
	ModeAsync   ReplicationMode = "async"   // bounded lag (MaxLag)
)

// Replication configures real-time file replication of a mirror module.
type Replication struct {
	Source
	Mode         ReplicationMode
	Network      string
	Port         int // TCP; derived from the module id unless set
	StallTimeout time.Duration
	MaxLag       time.Duration // async only; zero otherwise
	ZoneSize     int64         // journal zone, bytes (power of two)
	// QuarantineDir receives a split-brain loser's divergent files; "" =
	// under the agent's state directory.
	QuarantineDir string
	Resync        Resync
	Dirs          []*Dir
}

// Resync bounds a resynchronisation.
type Resync struct {
	Source
	Parallel  int   // concurrent transfers
	Bandwidth int64 // bytes per second; 0 = unlimited
}

// Dir is one replicated directory.
type Dir struct {
	Source
	Path      string   // absolute and clean
	Exclude   []string // glob patterns relative to Path (path.Match syntax)
	MustExist []string // relative paths that must exist before the module starts here
}

// Balance is a farm's load-balancing key.
type Balance string

const (
	BalanceClientIP     Balance = "client_ip"
	BalanceClientIPPort Balance = "client_ip_port"
)

// Farm configures a farm module's membership and load balancing.
type Farm struct {
	Source
	Network string // membership and layer-2 forwarding network
	Port    int    // memberlist, TCP and UDP; derived from the module id unless set
	Pulse   time.Duration
	Timeout time.Duration
	Balance Balance
	// Power weighs each node's share of the 256 buckets; every module node
	// has an entry (default 1). 0 = receives no new flows.
	Power map[string]int
	// Ports are the destination ports balanced on the VIP; empty = all.
	Ports []int

	powerRanges map[string]hcl.Range // where each power key was written
}

// App configures the plugin that starts and stops the application. The
// script plugin runs Scripts/<name> with arguments (current state, next
// state, action), Env added to its environment; StartTimeout bounds start
// scripts, StopTimeout the graceful run of a stop script.
type App struct {
	Source
	Plugin string
	// Scripts is the script plugin's directory, absolute once loaded
	// (written relative to the module directory).
	Scripts      string
	StartTimeout time.Duration
	StopTimeout  time.Duration // graceful stop; then the stop script runs again with "force"
	Env          map[string]string
	// Config is the rest of the app block: the plugin's own settings,
	// unparsed (see Check.Config). Empty for the built-in script plugin.
	Config hcl.Body
}

// Check is one checker instance: `check "<type>" "<name>" { ... }`.
type Check struct {
	Source
	Type     string // plugin: errd, tcp, ping, custom, splitbrain, intf, ip, module, or an installed one
	Name     string // instance: resource checker.<Name>
	Interval time.Duration
	Timeout  time.Duration
	Action   core.CheckAction
	When     core.When
	// Config is everything in the block besides the common attributes: the
	// plugin's own settings, still unparsed so the plugin host can decode it
	// against the plugin's schema and keep file:line:col in its errors.
	Config hcl.Body
}

// Spec is the part of the checker the core state machines reason about.
func (c *Check) Spec() core.CheckerSpec {
	return core.CheckerSpec{Name: c.Name, Type: c.Type, Action: c.Action, When: c.When}
}
