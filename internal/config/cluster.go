package config

import (
	"net/netip"
	"regexp"
	"slices"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
)

var clusterFileSchema = &hcl.BodySchema{
	Blocks: []hcl.BlockHeaderSchema{{Type: "cluster", LabelNames: []string{"name"}}},
}

var clusterSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "api_port"},
		{Name: "health_port"},
		{Name: "key_file"},
	},
	Blocks: []hcl.BlockHeaderSchema{
		{Type: "tls"},
		{Type: "network", LabelNames: []string{"name"}},
		{Type: "node", LabelNames: []string{"name"}},
		{Type: "user", LabelNames: []string{"name"}},
		{Type: "metrics"},
	},
}

var metricsSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{{Name: "port"}, {Name: "networks"}, {Name: "loopback"}},
}

var tlsSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{{Name: "ca_file"}, {Name: "cert_file"}, {Name: "key_file"}},
}

var networkSchema = &hcl.BodySchema{}

var nodeSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{{Name: "addresses"}},
}

var userSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{{Name: "role"}, {Name: "password_hash"}},
}

// Names of clusters, nodes, networks and modules end up in file names, URL
// paths, certificate names and environment values: keep them plain.
var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)

func (d *diags) checkName(what, name string, r hcl.Range) bool {
	if nameRE.MatchString(name) {
		return true
	}
	d.errorf(r, "Invalid "+what+" name", "%s name %q must start with a letter or digit and contain only letters, digits, '.', '_' and '-' (at most 63 characters).", upperFirst(what), name)
	return false
}

// decodeClusterFile decodes the cluster block of a parsed file and checks
// it on its own. It returns nil only when the file has no usable cluster
// block.
func decodeClusterFile(f *hcl.File, filename string) (*Cluster, hcl.Diagnostics) {
	d := &diags{}
	content, ds := f.Body.Content(clusterFileSchema)
	d.add(ds)
	var block *hcl.Block
	for _, b := range content.Blocks {
		if block != nil {
			d.errorf(b.DefRange, "Duplicate cluster block", "A cluster file holds one cluster block; the first is at %s.", posString(block.DefRange))
			continue
		}
		block = b
	}
	if block == nil {
		if !ds.HasErrors() {
			d.errorf(content.MissingItemRange, "Missing cluster block", "%s has no cluster block; a cluster file looks like: cluster \"prod\" { network \"default\" {} node \"node1\" { addresses = { default = \"198.18.0.1\" } } }.", filename)
		}
		return nil, d.list
	}
	c := decodeCluster(d, block, filename)
	applyClusterDefaults(c)
	checkCluster(d, c)
	return c, d.list
}

func decodeCluster(d *diags, block *hcl.Block, filename string) *Cluster {
	c := &Cluster{Source: Source{Range: block.DefRange}, Name: block.Labels[0], File: filename}
	d.checkName("cluster", c.Name, block.LabelRanges[0])
	content, ds := block.Body.Content(clusterSchema)
	d.add(ds)
	a := d.attrsOf(content, &c.Source, "cluster")
	a.port("api_port", &c.APIPort, "")
	a.port("health_port", &c.HealthPort, "")
	a.str("key_file", &c.KeyFile)

	if tb := d.blockSingleton(content.Blocks, "tls"); tb != nil {
		c.TLS.Range = tb.DefRange
		tc, ds := tb.Body.Content(tlsSchema)
		d.add(ds)
		ta := d.attrsOf(tc, &c.TLS.Source, "tls")
		ta.str("ca_file", &c.TLS.CAFile)
		ta.str("cert_file", &c.TLS.CertFile)
		ta.str("key_file", &c.TLS.KeyFile)
	} else {
		c.TLS.Range = block.DefRange
	}
	if mb := d.blockSingleton(content.Blocks, "metrics"); mb != nil {
		c.Metrics = decodeMetrics(d, mb)
	}

	for _, b := range content.Blocks {
		switch b.Type {
		case "network":
			n := &Network{Source: Source{Range: b.DefRange}, Name: b.Labels[0]}
			if first := c.Network(n.Name); first != nil {
				d.duplicate(b.DefRange, first.Range, "network", n.Name)
				continue
			}
			d.checkName("network", n.Name, b.LabelRanges[0])
			_, ds := b.Body.Content(networkSchema)
			d.add(ds)
			c.Networks = append(c.Networks, n)
		case "user":
			u := decodeUser(d, b)
			for _, first := range c.Users {
				if first.Name == u.Name {
					d.duplicate(b.DefRange, first.Range, "user", u.Name)
					u = nil
					break
				}
			}
			if u != nil {
				c.Users = append(c.Users, u)
			}
		}
	}
	// Nodes after networks, so addresses can be checked against every
	// network wherever it is declared in the block.
	for _, b := range content.Blocks {
		if b.Type != "node" {
			continue
		}
		n := decodeNode(d, b, c)
		if first := c.Node(n.Name); first != nil {
			d.duplicate(b.DefRange, first.Range, "node", n.Name)
			continue
		}
		c.Nodes = append(c.Nodes, n)
	}
	return c
}

func decodeMetrics(d *diags, b *hcl.Block) *Metrics {
	m := &Metrics{Source: Source{Range: b.DefRange}}
	content, ds := b.Body.Content(metricsSchema)
	d.add(ds)
	a := d.attrsOf(content, &m.Source, "metrics")
	a.required("port")
	a.port("port", &m.Port, "")
	if a.strList("networks", &m.Networks, &m.NetworkRanges) && m.Networks == nil {
		m.Networks = []string{} // written empty: no network, unlike unset
	}
	a.boolean("loopback", &m.Loopback)
	return m
}

// checkMetrics checks the metrics block against the cluster's networks
// and ports.
func checkMetrics(d *diags, c *Cluster) {
	m := c.Metrics
	if m == nil {
		return
	}
	for i, name := range m.Networks {
		r := m.NetworkRanges[i]
		if c.Network(name) == nil {
			d.errorf(r, "Undeclared network", "Metrics network %q is not declared in the cluster; declared networks: %s.", name, quoteList(c.NetworkNames()))
			continue
		}
		if j := slices.Index(m.Networks, name); j < i {
			d.errorf(r, "Duplicate network", "Network %q is already listed at %s.", name, posString(m.NetworkRanges[j]))
		}
	}
	if m.Networks != nil && len(m.Networks) == 0 && !m.Loopback && m.Valid("networks", "loopback") {
		d.errorf(m.AttrRange("networks"), "Metrics listen nowhere", "metrics has no network and loopback is false: list a network, set loopback = true, or remove the metrics block.")
	}
	if !m.Valid("port") || !m.IsSet("port") {
		return
	}
	for _, other := range []struct {
		name string
		port int
	}{{"api_port", c.APIPort}, {"health_port", c.HealthPort}} {
		if c.Valid(other.name) && m.Port == other.port {
			d.errorf(m.AttrRange("port"), "Port collision", "metrics port %d is already the cluster's %s; they must differ.", m.Port, other.name)
		}
	}
}

func decodeNode(d *diags, b *hcl.Block, c *Cluster) *Node {
	n := &Node{
		Source:        Source{Range: b.DefRange},
		Name:          b.Labels[0],
		Addresses:     map[string]netip.Addr{},
		AddressRanges: map[string]hcl.Range{},
	}
	d.checkName("node", n.Name, b.LabelRanges[0])
	content, ds := b.Body.Content(nodeSchema)
	d.add(ds)
	a := d.attrsOf(content, &n.Source, "node")
	a.required("addresses")
	entries, _ := a.mapEntries("addresses", cty.String, "an IP address string")
	for _, e := range entries {
		if c.Network(e.Key) == nil {
			d.errorf(e.KeyRange, "Undeclared network", "Network %q is not declared in the cluster; declared networks: %s. Add network %q {} to the cluster block.", e.Key, quoteList(c.NetworkNames()), e.Key)
			continue
		}
		addr, err := netip.ParseAddr(e.Value.AsString())
		if err != nil {
			d.errorf(e.ValueRange, "Invalid address", "Address %q of node %q on network %q must be an IP address such as \"198.18.0.1\"; host names are not accepted, so failover never depends on DNS.", e.Value.AsString(), n.Name, e.Key)
			continue
		}
		if addr.IsUnspecified() || addr.IsMulticast() {
			d.errorf(e.ValueRange, "Invalid address", "Address %s of node %q cannot be unspecified or multicast.", addr, n.Name)
			continue
		}
		n.Addresses[e.Key] = addr
		n.AddressRanges[e.Key] = e.ValueRange
	}
	if content.Attributes["addresses"] != nil && len(entries) == 0 && n.Valid("addresses") {
		d.errorf(n.AttrRange("addresses"), "Missing address", "Node %q needs an address on at least one network.", n.Name)
	}
	return n
}

var validRoles = []string{string(RoleAdmin), string(RoleControl), string(RoleMonitor)}

func decodeUser(d *diags, b *hcl.Block) *User {
	u := &User{Source: Source{Range: b.DefRange}, Name: b.Labels[0]}
	d.checkName("user", u.Name, b.LabelRanges[0])
	content, ds := b.Body.Content(userSchema)
	d.add(ds)
	a := d.attrsOf(content, &u.Source, "user")
	a.required("role")
	var role string
	if a.oneOf("role", &role, validRoles) {
		u.Role = Role(role)
	}
	if a.str("password_hash", &u.PasswordHash) {
		h := u.PasswordHash
		if !(strings.HasPrefix(h, "$2a$") || strings.HasPrefix(h, "$2b$") || strings.HasPrefix(h, "$2y$")) || len(h) != 60 {
			d.errorf(u.AttrRange("password_hash"), "Invalid password hash", "password_hash of user %q must be a bcrypt hash (60 characters starting with $2a$, $2b$ or $2y$), never the password itself; make one with `htpasswd -nbBC 10 \"\" PASSWORD | cut -d: -f2`.", u.Name)
		}
	}
	return u
}

// checkCluster runs the checks that need the whole cluster block.
func checkCluster(d *diags, c *Cluster) {
	if len(c.Networks) == 0 {
		d.errorf(c.Range, "Missing network", "Cluster %q declares no network; add at least network \"default\" {}.", c.Name)
	}
	if len(c.Nodes) == 0 {
		d.errorf(c.Range, "Missing node", "Cluster %q declares no node; add node \"<name>\" { addresses = { default = \"198.18.0.1\" } }.", c.Name)
	}
	if c.Valid("api_port", "health_port") && c.APIPort == c.HealthPort {
		r := c.AttrRange("health_port")
		if !c.IsSet("health_port") {
			r = c.AttrRange("api_port")
		}
		d.errorf(r, "Port collision", "api_port and health_port are both %d; they must differ.", c.APIPort)
	}
	checkMetrics(d, c)
	// The same address on two nodes of the same network makes heartbeats and
	// replication talk to the wrong machine.
	for _, net := range c.Networks {
		seen := map[netip.Addr]*Node{}
		for _, n := range c.Nodes {
			addr, ok := n.Addresses[net.Name]
			if !ok {
				continue
			}
			if first, dup := seen[addr]; dup {
				d.errorf(n.AddressRanges[net.Name], "Duplicate address", "Address %s on network %q is already node %q's, at %s.", addr, net.Name, first.Name, posString(first.AddressRanges[net.Name]))
				continue
			}
			seen[addr] = n
		}
	}
}
