package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hcldec"

	"github.com/halo-ha/halo/core"
)

// Built-in plugin names (SPEC §1). Others must be installed in the plugin
// directory; without a PluginSchemas to ask, validation warns about them.
var (
	builtinCheckers = []string{"errd", "tcp", "ping", "custom", "splitbrain", "intf", "ip", "module"}
	builtinApps     = []string{"script"}
	builtinVIPs     = []string{"vip"}
)

// Scripts of the script plugin (SPEC §2.4), and those a kind cannot work
// without.
var (
	knownScripts = []string{
		"prestart", "start_prim", "stop_prim", "start_second", "stop_second",
		"start_both", "stop_both", "poststop", "transition",
	}
	requiredScripts = map[Kind][]string{
		KindMirror: {"start_prim", "stop_prim"},
		KindFarm:   {"start_both", "stop_both"},
		KindLight:  {"start_both", "stop_both"},
	}
)

// checkModule runs the checks of one module that need only the module and
// the cluster (nil when there is none: cluster references are skipped).
func checkModule(d *diags, m *Module, c *Cluster, opts *Options) {
	checkModuleNodes(d, m, c)
	if m.Kind == KindMirror {
		checkMirror(d, m, c)
	}
	if m.Kind == KindFarm && m.Farm != nil {
		checkFarm(d, m, c)
	}
	checkVIPs(d, m, c, opts)
	checkApp(d, m, opts)
	checkChecks(d, m, opts)
}

func checkModuleNodes(d *diags, m *Module, c *Cluster) {
	if !m.IsSet("nodes") {
		return
	}
	seen := map[string]hcl.Range{}
	var unique []string
	for i, n := range m.Nodes {
		r := m.NodeRanges[i]
		if first, dup := seen[n]; dup {
			d.errorf(r, "Duplicate node", "Node %q is already listed at %s.", n, posString(first))
			continue
		}
		seen[n] = r
		unique = append(unique, n)
		if c != nil && c.Node(n) == nil {
			msg := fmt.Sprintf("Node %q is not declared in cluster %q (%s); declared nodes: %s.", n, c.Name, c.File, quoteList(c.NodeNames()))
			if s := suggest(n, c.NodeNames()); s != "" {
				msg += fmt.Sprintf(" Did you mean %q?", s)
			}
			d.errorf(r, "Unknown node", "%s", msg)
		}
	}
	r := m.AttrRange("nodes")
	switch m.Kind {
	case KindMirror:
		if len(unique) != 2 {
			d.errorf(r, "Wrong number of nodes", "A mirror module runs on exactly 2 nodes; this one names %d.", len(unique))
		}
	case KindLight:
		if len(unique) != 1 {
			d.errorf(r, "Wrong number of nodes", "A light module runs on exactly 1 node; this one names %d. Use a farm module to run on several.", len(unique))
		}
	case KindFarm:
		if len(unique) < 1 {
			d.errorf(r, "Wrong number of nodes", "A farm module needs at least 1 node.")
		}
	}
}

// useNetwork checks that net is declared and that every node of m has an
// address on it. usedBy says what needs it, for the message.
func useNetwork(d *diags, m *Module, c *Cluster, net string, r hcl.Range, usedBy string) {
	if c == nil {
		return
	}
	if c.Network(net) == nil {
		msg := fmt.Sprintf("Network %q (used by the %s) is not declared in cluster %q (%s); declared networks: %s.", net, usedBy, c.Name, c.File, quoteList(c.NetworkNames()))
		if s := suggest(net, c.NetworkNames()); s != "" {
			msg += fmt.Sprintf(" Did you mean %q?", s)
		}
		d.errorf(r, "Undeclared network", "%s", msg)
		return
	}
	for _, name := range m.Nodes {
		node := c.Node(name)
		if node == nil {
			continue // reported by checkModuleNodes
		}
		if _, ok := node.Addresses[net]; !ok {
			d.errorf(r, "Missing address", "Node %q has no address on network %q, used by the %s; add one to its addresses at %s.", name, net, usedBy, posString(node.Range))
		}
	}
}

func checkMirror(d *diags, m *Module, c *Cluster) {
	if m.DefaultPrimary != "" && m.IsSet("nodes") && !m.HasNode(m.DefaultPrimary) {
		d.errorf(m.AttrRange("default_primary"), "Unknown node", "default_primary %q is not one of the module's nodes (%s).", m.DefaultPrimary, quoteList(m.Nodes))
	}
	if m.IsSet("split_brain_winner") {
		w := m.SplitBrainWinner
		switch {
		case w == SplitBrainLongestAlone:
		case w == SplitBrainDefaultPrimary:
			if m.DefaultPrimary == "" && m.Valid("default_primary") {
				d.errorf(m.AttrRange("split_brain_winner"), "Missing default_primary", "split_brain_winner = %q needs default_primary to be set.", w)
			}
		case m.HasNode(w):
		default:
			valid := append([]string{SplitBrainLongestAlone, SplitBrainDefaultPrimary}, m.Nodes...)
			d.errorf(m.AttrRange("split_brain_winner"), "Invalid value", "%s", invalidChoice("split_brain_winner", w, valid))
		}
	}

	hb := m.Heartbeat
	if hb.Valid("pulse", "timeout") && hb.Timeout <= hb.Pulse {
		d.errorf(timingRange(&hb.Source), "Invalid heartbeat timeout", "The heartbeat timeout (%s) must be longer than its pulse (%s), or every pulse would declare the peer down.", hb.Timeout, hb.Pulse)
	} else if hb.Valid("pulse", "timeout") && hb.Timeout < 3*hb.Pulse {
		d.warnf(timingRange(&hb.Source), "Short heartbeat timeout", "The heartbeat timeout (%s) covers fewer than 3 pulses (%s each): two lost packets make a failover.", hb.Timeout, hb.Pulse)
	}
	if hb.Valid("networks") {
		seen := map[string]hcl.Range{}
		for i, net := range hb.Networks {
			r := hb.NetworkRanges[i]
			if first, dup := seen[net]; dup {
				d.errorf(r, "Duplicate network", "Network %q is already listed at %s.", net, posString(first))
				continue
			}
			seen[net] = r
			useNetwork(d, m, c, net, r, "heartbeat")
		}
		switch {
		case len(hb.Networks) == 0 && hb.IsSet("networks"):
			d.errorf(hb.AttrRange("networks"), "Missing network", "The heartbeat needs at least one network.")
		case len(hb.Networks) == 0 && c != nil && m.IsSet("nodes") && len(m.Nodes) == 2 && c.Node(m.Nodes[0]) != nil && c.Node(m.Nodes[1]) != nil:
			d.errorf(m.AttrRange("nodes"), "No shared network", "Nodes %q and %q have no address on a common network, so they cannot exchange heartbeats.", m.Nodes[0], m.Nodes[1])
		case len(seen) == 1 && c != nil:
			d.warnf(hb.AttrRange("networks"), "Single heartbeat network", "The heartbeat uses only network %q: if that link fails both nodes go ALONE (split brain). Add a second network (e.g. a dedicated replication link) or a splitbrain checker with a witness.", hb.Networks[0])
		}
	}

	if r := m.Replication; r != nil {
		if r.IsSet("max_lag") && r.Mode != ModeAsync && r.Valid("mode") {
			d.errorf(r.AttrRange("max_lag"), "Not valid for this mode", "max_lag only applies to mode = \"async\"; in %q mode nothing lags.", r.Mode)
		}
		if r.Valid("network") {
			useNetwork(d, m, c, r.Network, r.AttrRange("network"), "replication")
		}
		checkDirOverlap(d, r.Dirs, r.Dirs, true, "")
	}
}

// timingRange points at the timeout when it was written, else at the
// pulse: whichever the user chose is what to change.
func timingRange(s *Source) hcl.Range {
	if s.IsSet("timeout") {
		return s.AttrRange("timeout")
	}
	return s.AttrRange("pulse")
}

// checkDirOverlap reports each dir of later that is the same as, inside or
// around a dir of earlier. same is true when later and earlier are the same
// list (each pair is then checked once). other names the module that owns
// earlier, "" for this one.
func checkDirOverlap(d *diags, earlier, later []*Dir, same bool, other string) {
	for j, b := range later {
		limit := len(earlier)
		if same {
			limit = j
		}
		for _, a := range earlier[:limit] {
			owner := ""
			if other != "" {
				owner = fmt.Sprintf(" by module %q", other)
			}
			switch {
			case a.Path == b.Path:
				d.errorf(b.Range, "Duplicate dir", "Directory %q is already replicated%s at %s.", b.Path, owner, posString(a.Range))
			case isUnder(b.Path, a.Path) || isUnder(a.Path, b.Path):
				inner, outer := b.Path, a.Path
				if isUnder(a.Path, b.Path) {
					inner, outer = a.Path, b.Path
				}
				d.errorf(b.Range, "Overlapping dirs", "Directory %q overlaps %q, replicated%s at %s: %q is inside %q. Replicate only the outer one, with exclude for what to leave out.", b.Path, a.Path, owner, posString(a.Range), inner, outer)
			default:
				continue
			}
			break
		}
	}
}

// isUnder reports whether p is strictly inside dir (both clean, absolute).
func isUnder(p, dir string) bool {
	return strings.HasPrefix(p, dir+"/")
}

func checkFarm(d *diags, m *Module, c *Cluster) {
	f := m.Farm
	if f.Valid("pulse", "timeout") && f.Timeout <= f.Pulse {
		d.errorf(timingRange(&f.Source), "Invalid farm timeout", "The farm timeout (%s) must be longer than its pulse (%s).", f.Timeout, f.Pulse)
	}
	if f.Valid("network") {
		useNetwork(d, m, c, f.Network, f.AttrRange("network"), "farm")
	}
	if !m.IsSet("nodes") {
		return
	}
	for _, key := range sortedKeys(f.powerRanges) {
		if !m.HasNode(key) {
			d.errorf(f.powerRanges[key], "Unknown node", "power.%s names a node that is not one of the module's nodes (%s).", key, quoteList(m.Nodes))
		}
	}
	if f.IsSet("power") {
		total := 0
		for _, n := range m.Nodes {
			total += f.Power[n]
		}
		if total == 0 && len(m.Nodes) > 0 {
			d.warnf(f.AttrRange("power"), "No power", "Every node has power 0: no node receives new flows.")
		}
	}
}

func checkVIPs(d *diags, m *Module, c *Cluster, opts *Options) {
	seen := map[string]hcl.Range{}
	for _, v := range m.VIPs {
		checkPluginConfig(d, opts, PluginVIP, v.Plugin, v.AttrRange("plugin"), v.Config, builtinVIPs, vipSchema)
		if v.Valid("network") {
			useNetwork(d, m, c, v.Network, v.AttrRange("network"), "VIP")
		}
		if !v.Address.IsValid() {
			continue
		}
		addr := v.Address.Addr().String()
		if first, dup := seen[addr]; dup {
			d.errorf(v.AttrRange("address"), "Duplicate VIP", "VIP %s is already defined at %s.", addr, posString(first))
			continue
		}
		seen[addr] = v.AttrRange("address")
		if c == nil {
			continue
		}
		for _, node := range c.Nodes {
			for net, a := range node.Addresses {
				if a == v.Address.Addr() {
					d.errorf(v.AttrRange("address"), "VIP is a node address", "VIP %s is node %q's own address on network %q (%s); a VIP must be an unused address.", a, node.Name, net, posString(node.AddressRanges[net]))
				}
			}
		}
		// Gratuitous ARP only reaches clients on the subnet: a VIP outside
		// the node's subnet is reachable only through explicit routes.
		for _, name := range m.Nodes {
			node := c.Node(name)
			if node == nil {
				continue
			}
			a, ok := node.Addresses[v.Network]
			if ok && a.Is4() == v.Address.Addr().Is4() && !v.Address.Contains(a) {
				d.warnf(v.AttrRange("address"), "VIP outside the node's subnet", "VIP %s does not contain node %q's address %s on network %q: clients on that subnet will not reach the VIP unless routes are set.", v.Address, name, a, v.Network)
			}
		}
	}
}

func checkApp(d *diags, m *Module, opts *Options) {
	app := &m.App
	if app.Plugin != DefaultAppPlugin && app.IsSet("scripts") {
		d.errorf(app.AttrRange("scripts"), "Not valid for this plugin", "scripts only applies to the %q app plugin; this module uses %q.", DefaultAppPlugin, app.Plugin)
	}
	checkPluginConfig(d, opts, PluginApp, app.Plugin, app.AttrRange("plugin"), app.Config, builtinApps, appSchema)
	if app.Plugin != DefaultAppPlugin || m.Kind == "" || !app.Valid("scripts") || app.Scripts == "" {
		return
	}
	checkScripts(d, m)
}

// checkScripts checks the script directory on disk: the scripts the kind
// needs exist, and every script present is an executable file.
func checkScripts(d *diags, m *Module) {
	app := &m.App
	r := app.AttrRange("scripts")
	shown := relTo(m.Dir, app.Scripts)
	st, err := os.Stat(app.Scripts)
	if err != nil || !st.IsDir() {
		d.errorf(r, "Missing scripts", "Scripts directory %q does not exist next to the module file; create it with the %s scripts.", shown, strings.Join(requiredScripts[m.Kind], " and "))
		return
	}
	for _, name := range knownScripts {
		p := filepath.Join(app.Scripts, name)
		st, err := os.Stat(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			if contains(requiredScripts[m.Kind], name) {
				d.errorf(r, "Missing script", "A %s module needs script %q in %q: it is run with arguments (current state, next state, action).", m.Kind, name, shown)
			}
		case err != nil:
			d.errorf(r, "Unreadable script", "Script %q: %v.", filepath.Join(shown, name), err)
		case !st.Mode().IsRegular():
			d.errorf(r, "Invalid script", "Script %q is not a regular file.", filepath.Join(shown, name))
		case st.Mode().Perm()&0o111 == 0:
			d.errorf(r, "Script not executable", "Script %q is not executable; run chmod +x on it.", filepath.Join(shown, name))
		}
	}
}

func relTo(base, p string) string {
	if rel, err := filepath.Rel(base, p); err == nil {
		return rel
	}
	return p
}

func checkChecks(d *diags, m *Module, opts *Options) {
	for _, c := range m.Checks {
		if m.Kind != "" && m.Kind != KindMirror {
			if c.IsSet("when") && c.When == core.WhenSecond {
				d.errorf(c.AttrRange("when"), "Not valid for this kind", "when = \"second\" only applies to a mirror module; a %s module has no secondary.", m.Kind)
			}
			if c.IsSet("action") && c.Action == core.ActSwap {
				d.errorf(c.AttrRange("action"), "Not valid for this kind", "action = \"swap\" only applies to a mirror module; a %s module has no roles to exchange.", m.Kind)
			}
			if c.Type == "splitbrain" {
				d.errorf(c.Range, "Not valid for this kind", "A splitbrain checker only applies to a mirror module.")
			}
		}
		if c.Valid("interval", "timeout") && c.Timeout > c.Interval {
			d.errorf(c.AttrRange("timeout"), "Invalid checker timeout", "The checker timeout (%s) must not be longer than its interval (%s).", c.Timeout, c.Interval)
		}
		checkPluginConfig(d, opts, PluginChecker, c.Type, c.Range, c.Config, builtinCheckers, nil)
	}
}

// checkPluginConfig validates a plugin's own settings (body: what halo's
// schema left of the block) against the schema the plugin declares, when a
// PluginSchemas is available. Without one it warns about plugins that are
// not built in, and, when own is given, rejects anything left for a
// built-in plugin whose settings are all halo's (vip, script): own is then
// halo's schema of the block, for "did you mean" suggestions.
func checkPluginConfig(d *diags, opts *Options, kind PluginKind, name string, r hcl.Range, body hcl.Body, builtin []string, own *hcl.BodySchema) {
	if opts == nil || opts.Plugins == nil {
		if contains(builtin, name) && own != nil && body != nil {
			_, ds := body.Content(own)
			d.add(ds)
		}
		if !contains(builtin, name) {
			msg := fmt.Sprintf("%q is not a built-in %s plugin (%s): it must be installed in the plugin directory of every node, and its settings are not checked here.", name, kind, quoteList(builtin))
			if s := suggest(name, builtin); s != "" {
				msg += fmt.Sprintf(" Did you mean %q?", s)
			}
			d.warnf(r, "Unknown plugin", "%s", msg)
		}
		return
	}
	spec, err := opts.Plugins.ConfigSpec(kind, name)
	if err != nil {
		if errors.Is(err, ErrUnknownPlugin) {
			d.errorf(r, "Unknown plugin", "There is no %s plugin named %q.", kind, name)
		} else {
			d.errorf(r, "Plugin unavailable", "Cannot check the settings of %s plugin %q: %v.", kind, name, err)
		}
		return
	}
	if body == nil {
		return
	}
	if spec == nil {
		// The plugin takes no settings: anything left is a mistake.
		_, ds := body.Content(&hcl.BodySchema{})
		d.add(ds)
		return
	}
	_, ds := hcldec.Decode(body, spec, nil)
	d.add(ds)
}
