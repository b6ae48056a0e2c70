package config

import (
	"fmt"
	"sort"

	"github.com/hashicorp/hcl/v2"
)

// CheckModules runs the checks that involve several modules of the same
// cluster: unique names and ids, ports, replicated directories and VIPs.
// modules are compared in order, so the second of a pair is the one
// reported, with the first's location in the message.
func CheckModules(c *Cluster, modules []*Module) hcl.Diagnostics {
	d := &diags{}
	checkModuleNames(d, modules)
	checkPorts(d, c, modules)
	for j, b := range modules {
		for _, a := range modules[:j] {
			if !shareNode(a, b) {
				// On disjoint nodes the same directory is a different one.
				continue
			}
			if a.Replication != nil && b.Replication != nil {
				checkDirOverlap(d, a.Replication.Dirs, b.Replication.Dirs, false, a.Name)
			}
		}
	}
	checkVIPsAcrossModules(d, modules)
	return d.list
}

func checkModuleNames(d *diags, modules []*Module) {
	names := map[string]*Module{}
	ids := map[int]*Module{}
	for _, m := range modules {
		if first, dup := names[m.Name]; dup {
			d.errorf(m.Range, "Duplicate module", "Module %q is already defined at %s.", m.Name, posString(first.Range))
		} else {
			names[m.Name] = m
		}
		if !m.IsSet("id") {
			continue
		}
		if first, dup := ids[m.ID]; dup {
			d.errorf(m.AttrRange("id"), "Duplicate module id", "Module id %d is already used by module %q at %s; ids are unique in the cluster because ports derive from them.", m.ID, first.Name, posString(first.AttrRange("id")))
		} else {
			ids[m.ID] = m
		}
	}
}

func shareNode(a, b *Module) bool {
	for _, n := range a.Nodes {
		if b.HasNode(n) {
			return true
		}
	}
	return false
}

// portUse is one port a module listens on.
type portUse struct {
	port    int
	what    string // "heartbeat port", ...
	module  *Module
	r       hcl.Range
	derived bool
	health  bool // health endpoints share one server: equal health ports are fine
	// reported marks a use already reported as colliding: it is not the
	// "first" of later collisions, which would repeat the same mistake.
	reported bool
}

func (u portUse) describe() string {
	if u.module == nil {
		return u.what
	}
	s := fmt.Sprintf("the %s of module %q", u.what, u.module.Name)
	if u.derived {
		s += fmt.Sprintf(" (derived from id %d)", u.module.ID)
	}
	return s
}

// modulePorts lists the ports m listens on, in a fixed order.
func modulePorts(m *Module) []portUse {
	var ps []portUse
	add := func(port int, what string, src *Source, attr string, health bool) {
		if port == 0 {
			return // a block of the wrong kind, never given its defaults
		}
		u := portUse{port: port, what: what, module: m, r: src.AttrRange(attr), health: health}
		if !src.IsSet(attr) && !health {
			u.derived = true
			u.r = m.AttrRange("id")
		}
		ps = append(ps, u)
	}
	if !m.IsSet("id") {
		return nil // reported as missing; derived ports are meaningless
	}
	if m.Heartbeat != nil && m.Heartbeat.Valid("port") {
		add(m.Heartbeat.Port, "heartbeat port", &m.Heartbeat.Source, "port", false)
	}
	if m.Replication != nil && m.Replication.Valid("port") {
		add(m.Replication.Port, "replication port", &m.Replication.Source, "port", false)
	}
	if m.Farm != nil && m.Farm.Valid("port") {
		add(m.Farm.Port, "farm port", &m.Farm.Source, "port", false)
	}
	if m.Health.Enabled && m.Health.Valid("port") {
		add(m.Health.Port, "health port", &m.Health.Source, "port", true)
	}
	return ps
}

func checkPorts(d *diags, c *Cluster, modules []*Module) {
	// The cluster's ports are open on every node.
	var cluster []portUse
	if c != nil {
		cluster = append(cluster,
			portUse{port: c.APIPort, what: clusterPortName(c, "api_port"), r: c.AttrRange("api_port")},
			portUse{port: c.HealthPort, what: clusterPortName(c, "health_port"), r: c.AttrRange("health_port"), health: true})
	}
	uses := make([][]portUse, len(modules))
	for i, m := range modules {
		uses[i] = modulePorts(m)
	}
	for j, m := range modules {
		for k := range uses[j] {
			u := &uses[j][k]
			if conflict, ok := firstPortConflict(*u, cluster); ok {
				d.errorf(u.r, "Port collision", "Port %d, %s, is already the %s.", u.port, u.describe(), conflict.what)
				u.reported = true
				continue
			}
			// Earlier ports of this module, then those of earlier modules
			// that share a node with it.
			if conflict, ok := firstPortConflict(*u, uses[j][:k]); ok {
				d.errorf(u.r, "Port collision", "Port %d, %s, is already %s at %s.", u.port, u.describe(), conflict.describe(), posString(conflict.r))
				u.reported = true
				continue
			}
			for i := 0; i < j; i++ {
				if !shareNode(modules[i], m) {
					continue
				}
				if conflict, ok := firstPortConflict(*u, uses[i]); ok {
					d.errorf(u.r, "Port collision", "Port %d, %s, is already %s at %s, on a node both modules run on.", u.port, u.describe(), conflict.describe(), posString(conflict.r))
					u.reported = true
					break
				}
			}
		}
	}
}

func clusterPortName(c *Cluster, attr string) string {
	if c.IsSet(attr) {
		return fmt.Sprintf("cluster's %s, set at %s", attr, posString(c.AttrRange(attr)))
	}
	return fmt.Sprintf("cluster's %s (its default)", attr)
}

func firstPortConflict(u portUse, others []portUse) (portUse, bool) {
	for _, o := range others {
		if o.port == u.port && !(o.health && u.health) && !o.reported {
			return o, true
		}
	}
	return portUse{}, false
}

// checkVIPsAcrossModules reports a VIP used by two modules: even on
// disjoint nodes they would fight over the address on the network.
func checkVIPsAcrossModules(d *diags, modules []*Module) {
	type owner struct {
		m *Module
		r hcl.Range
	}
	seen := map[string]owner{}
	for _, m := range modules {
		mine := map[string]bool{}
		for _, v := range m.VIPs {
			if !v.Address.IsValid() {
				continue
			}
			addr := v.Address.Addr().String()
			if mine[addr] {
				continue // reported by checkVIPs
			}
			mine[addr] = true
			if first, dup := seen[addr]; dup {
				d.errorf(v.AttrRange("address"), "Duplicate VIP", "VIP %s is already module %q's, at %s.", addr, first.m.Name, posString(first.r))
				continue
			}
			seen[addr] = owner{m, v.AttrRange("address")}
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
