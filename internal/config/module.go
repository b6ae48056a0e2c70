package config

import (
	"net/netip"
	"path"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"

	"github.com/halo-ha/halo/core"
)

var moduleFileSchema = &hcl.BodySchema{
	Blocks: []hcl.BlockHeaderSchema{{Type: "module", LabelNames: []string{"name"}}},
}

var moduleSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "description"},
		{Name: "kind"},
		{Name: "id"},
		{Name: "nodes"},
		{Name: "failover"},
		{Name: "default_primary"},
		{Name: "max_loop"},
		{Name: "loop_interval"},
		{Name: "sync_delta"},
		{Name: "split_brain_winner"},
	},
	Blocks: []hcl.BlockHeaderSchema{
		{Type: "heartbeat"},
		{Type: "vip"},
		{Type: "health"},
		{Type: "replication"},
		{Type: "farm"},
		{Type: "app"},
		{Type: "check", LabelNames: []string{"type", "name"}},
	},
}

var heartbeatSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{{Name: "pulse"}, {Name: "timeout"}, {Name: "networks"}, {Name: "port"}},
}

var vipSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "plugin"}, {Name: "address"}, {Name: "network"}, {Name: "interface"},
		{Name: "announce_count"}, {Name: "announce_interval"},
	},
}

var healthSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{{Name: "enabled"}, {Name: "port"}},
}

var replicationSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "mode"}, {Name: "network"}, {Name: "port"}, {Name: "stall_timeout"},
		{Name: "max_lag"}, {Name: "zone_size"}, {Name: "quarantine_dir"},
	},
	Blocks: []hcl.BlockHeaderSchema{
		{Type: "resync"},
		{Type: "dir", LabelNames: []string{"path"}},
	},
}

var resyncSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{{Name: "parallel"}, {Name: "bandwidth"}},
}

var dirSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{{Name: "exclude"}, {Name: "must_exist"}},
}

var farmSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "network"}, {Name: "port"}, {Name: "pulse"}, {Name: "timeout"},
		{Name: "balance"}, {Name: "power"}, {Name: "ports"},
	},
}

var appSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "plugin"}, {Name: "scripts"}, {Name: "start_timeout"}, {Name: "stop_timeout"}, {Name: "env"},
	},
}

// checkCommonSchema is the part of a check block halo itself reads; the
// rest belongs to the checker plugin.
var checkCommonSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{{Name: "interval"}, {Name: "timeout"}, {Name: "action"}, {Name: "when"}},
}

var (
	validKinds     = []string{string(KindMirror), string(KindFarm), string(KindLight)}
	validModes     = []string{string(ModeSync), string(ModeDurable), string(ModeAsync)}
	validBalances  = []string{string(BalanceClientIP), string(BalanceClientIPPort)}
	validActions   = []string{"restart", "stopstart", "stop", "wait", "swap"}
	validWhens     = []string{"both", "prim", "second", "pre"}
	mirrorOnlyAttr = []string{"failover", "default_primary", "sync_delta", "split_brain_winner"}
)

// decodeModuleFile decodes the module block of a parsed file. It returns
// nil only when the file has no usable module block.
func decodeModuleFile(d *diags, f *hcl.File, filename string) *Module {
	content, ds := f.Body.Content(moduleFileSchema)
	d.add(ds)
	var block *hcl.Block
	for _, b := range content.Blocks {
		if block != nil {
			d.errorf(b.DefRange, "Duplicate module block", "A module file holds one module block; the first is at %s. Put each module in its own directory.", posString(block.DefRange))
			continue
		}
		block = b
	}
	if block == nil {
		if !ds.HasErrors() {
			d.errorf(content.MissingItemRange, "Missing module block", "%s has no module block; a module file starts with module \"<name>\" { kind = \"mirror\" ... }.", filename)
		}
		return nil
	}
	return decodeModule(d, block, filename)
}

func decodeModule(d *diags, block *hcl.Block, filename string) *Module {
	m := &Module{
		Source: Source{Range: block.DefRange},
		Name:   block.Labels[0],
		File:   filename,
		Dir:    absDir(filename),
	}
	d.checkName("module", m.Name, block.LabelRanges[0])
	if filepath.Base(filename) == "module.hcl" {
		if dir := filepath.Base(m.Dir); dir != m.Name && dir != "." {
			d.errorf(block.LabelRanges[0], "Module name mismatch", "Module %q is in directory %q; the directory of module.hcl must be named after the module, as `halo module install` installs it there.", m.Name, dir)
		}
	}
	content, ds := block.Body.Content(moduleSchema)
	d.add(ds)
	a := d.attrsOf(content, &m.Source, "module")
	a.required("kind", "id", "nodes")
	a.str("description", &m.Description)
	var kind string
	if a.oneOf("kind", &kind, validKinds) {
		m.Kind = Kind(kind)
	}
	a.integer("id", &m.ID, MinModuleID, MaxModuleID)
	a.strList("nodes", &m.Nodes, &m.NodeRanges)
	a.boolean("failover", &m.Failover)
	a.str("default_primary", &m.DefaultPrimary)
	a.integer("max_loop", &m.MaxLoop, 1, 1000)
	a.duration("loop_interval", &m.LoopInterval, false)
	a.duration("sync_delta", &m.SyncDelta, true)
	a.str("split_brain_winner", &m.SplitBrainWinner)

	if m.Kind != "" && m.Kind != KindMirror {
		for _, name := range mirrorOnlyAttr {
			if attr, ok := content.Attributes[name]; ok {
				d.errorf(attr.NameRange, "Not valid for this kind", "%s only applies to a mirror module; this module is a %s.", name, m.Kind)
			}
		}
	}

	if b := d.blockSingleton(content.Blocks, "heartbeat"); b != nil {
		if d.kindAllows(m, b, KindMirror) {
			m.Heartbeat = decodeHeartbeat(d, b)
		}
	}
	if b := d.blockSingleton(content.Blocks, "health"); b != nil {
		m.Health.Range = b.DefRange
		hc, ds := b.Body.Content(healthSchema)
		d.add(ds)
		ha := d.attrsOf(hc, &m.Health.Source, "health")
		ha.boolean("enabled", &m.Health.Enabled)
		ha.port("port", &m.Health.Port, "the cluster's health_port")
	} else {
		m.Health.Range = m.Range
	}
	if b := d.blockSingleton(content.Blocks, "replication"); b != nil {
		if d.kindAllows(m, b, KindMirror) {
			m.Replication = decodeReplication(d, b)
		}
	}
	if b := d.blockSingleton(content.Blocks, "farm"); b != nil {
		if d.kindAllows(m, b, KindFarm) {
			m.Farm = decodeFarm(d, b)
		}
	}
	if b := d.blockSingleton(content.Blocks, "app"); b != nil {
		decodeApp(d, b, &m.App)
	} else {
		m.App.Range = m.Range
	}
	for _, b := range content.Blocks {
		switch b.Type {
		case "vip":
			m.VIPs = append(m.VIPs, decodeVIP(d, b))
		case "check":
			c := decodeCheck(d, b)
			if first := m.Check(c.Name); first != nil {
				d.errorf(b.LabelRanges[1], "Duplicate check", "Check %q is already defined at %s; each checker needs its own name (it becomes resource checker.%s).", c.Name, posString(first.Range), c.Name)
				continue
			}
			m.Checks = append(m.Checks, c)
		}
	}
	return m
}

// kindAllows reports whether a block of this type may appear in m,
// reporting it when not. An unknown kind allows everything: it has been
// reported already.
func (d *diags) kindAllows(m *Module, b *hcl.Block, kinds ...Kind) bool {
	if m.Kind == "" {
		return true
	}
	for _, k := range kinds {
		if m.Kind == k {
			return true
		}
	}
	hint := ""
	switch b.Type {
	case "replication":
		hint = " Only a mirror module replicates files."
	case "heartbeat":
		hint = " Only a mirror module exchanges heartbeats; a farm's membership is set in its farm block."
	case "farm":
		hint = " Only a farm module balances load."
	}
	d.errorf(b.DefRange, "Block not valid for this kind", "A %s block is not allowed in a %s module.%s", b.Type, m.Kind, hint)
	return false
}

// absDir is the absolute directory of a file, so that scripts resolve the
// same wherever the agent's working directory is.
func absDir(filename string) string {
	dir := filepath.Dir(filename)
	if abs, err := filepath.Abs(dir); err == nil {
		return abs
	}
	return dir
}

func decodeHeartbeat(d *diags, b *hcl.Block) *Heartbeat {
	hb := &Heartbeat{Source: Source{Range: b.DefRange}}
	content, ds := b.Body.Content(heartbeatSchema)
	d.add(ds)
	a := d.attrsOf(content, &hb.Source, "heartbeat")
	a.duration("pulse", &hb.Pulse, false)
	a.duration("timeout", &hb.Timeout, false)
	a.strList("networks", &hb.Networks, &hb.NetworkRanges)
	a.port("port", &hb.Port, "derived from the module id")
	return hb
}

func decodeVIP(d *diags, b *hcl.Block) *VIP {
	v := &VIP{Source: Source{Range: b.DefRange}}
	content, remain, ds := b.Body.PartialContent(vipSchema)
	d.add(ds)
	v.Config = remain
	a := d.attrsOf(content, &v.Source, "vip")
	a.required("address")
	if a.str("plugin", &v.Plugin) {
		d.checkName("plugin", v.Plugin, v.AttrRange("plugin"))
	}
	var addr string
	if a.str("address", &addr) {
		p, err := netip.ParsePrefix(addr)
		switch {
		case err != nil && !strings.Contains(addr, "/"):
			d.errorf(v.AttrRange("address"), "Invalid VIP", "address %q needs the prefix length of its subnet, e.g. \"198.18.0.100/24\", so the address is added to the interface with the right netmask.", addr)
			v.unset("address")
			v.setInvalid("address")
		case err != nil:
			d.errorf(v.AttrRange("address"), "Invalid VIP", "address %q is not a valid address/prefix (CIDR) such as \"198.18.0.100/24\" or \"2001:db8::100/64\".", addr)
			v.unset("address")
			v.setInvalid("address")
		case p.Addr().IsUnspecified() || p.Addr().IsMulticast() || p.Addr().IsLoopback():
			d.errorf(v.AttrRange("address"), "Invalid VIP", "address %q cannot be an unspecified, multicast or loopback address.", addr)
			v.setInvalid("address")
		default:
			v.Address = p
		}
	}
	a.str("network", &v.Network)
	if a.str("interface", &v.Interface) && !validInterfaceName(v.Interface) {
		d.errorf(v.AttrRange("interface"), "Invalid interface", "interface %q is not a Linux interface name (1 to 15 characters, no '/', ':' or spaces); leave it out to use the interface that holds the node's address on the VIP's network.", v.Interface)
	}
	a.integer("announce_count", &v.AnnounceCount, 0, 100)
	a.duration("announce_interval", &v.AnnounceInterval, false)
	return v
}

func validInterfaceName(s string) bool {
	if s == "" || len(s) > 15 || s == "." || s == ".." {
		return false
	}
	return !strings.ContainsAny(s, "/: \t\n")
}

func decodeReplication(d *diags, b *hcl.Block) *Replication {
	r := &Replication{Source: Source{Range: b.DefRange}}
	content, ds := b.Body.Content(replicationSchema)
	d.add(ds)
	a := d.attrsOf(content, &r.Source, "replication")
	var mode string
	if a.oneOf("mode", &mode, validModes) {
		r.Mode = ReplicationMode(mode)
	}
	a.str("network", &r.Network)
	a.port("port", &r.Port, "derived from the module id")
	a.duration("stall_timeout", &r.StallTimeout, false)
	a.duration("max_lag", &r.MaxLag, false)
	var zone string
	if a.str("zone_size", &zone) {
		n, err := ParseSize(zone)
		switch {
		case err != nil:
			d.errorf(r.AttrRange("zone_size"), "Invalid size", "zone_size: %v.", err)
			r.unset("zone_size")
		case n < 4<<10 || n > 64<<20 || n&(n-1) != 0:
			d.errorf(r.AttrRange("zone_size"), "Invalid size", "zone_size must be a power of two from 4KiB to 64MiB, not %q.", zone)
			r.unset("zone_size")
		default:
			r.ZoneSize = n
		}
	}
	if a.str("quarantine_dir", &r.QuarantineDir) && !filepath.IsAbs(r.QuarantineDir) {
		d.errorf(r.AttrRange("quarantine_dir"), "Invalid path", "quarantine_dir must be an absolute path, not %q.", r.QuarantineDir)
	}

	r.Resync.Range = b.DefRange
	if rb := d.blockSingleton(content.Blocks, "resync"); rb != nil {
		r.Resync.Range = rb.DefRange
		rc, ds := rb.Body.Content(resyncSchema)
		d.add(ds)
		ra := d.attrsOf(rc, &r.Resync.Source, "resync")
		ra.integer("parallel", &r.Resync.Parallel, 1, 64)
		var bw string
		if ra.str("bandwidth", &bw) {
			n, err := ParseBandwidth(bw)
			if err == nil && n <= 0 {
				err = errSizeSyntax
			}
			if err != nil {
				d.errorf(r.Resync.AttrRange("bandwidth"), "Invalid bandwidth", "bandwidth: %v; leave it out for no limit.", err)
				r.Resync.unset("bandwidth")
			} else {
				r.Resync.Bandwidth = n
			}
		}
	}
	for _, db := range content.Blocks {
		if db.Type != "dir" {
			continue
		}
		dir := decodeDir(d, db)
		if dir == nil {
			continue
		}
		r.Dirs = append(r.Dirs, dir)
	}
	if len(r.Dirs) == 0 {
		d.errorf(b.DefRange, "Missing dir", "The replication block needs at least one dir \"/absolute/path\" { } block; remove the block if nothing is replicated.")
	}
	return r
}

// decodeDir decodes a replicated directory; nil when its path is unusable.
func decodeDir(d *diags, b *hcl.Block) *Dir {
	dir := &Dir{Source: Source{Range: b.DefRange}}
	p := b.Labels[0]
	lr := b.LabelRanges[0]
	content, ds := b.Body.Content(dirSchema)
	d.add(ds)
	a := d.attrsOf(content, &dir.Source, "dir")
	var excludeRanges, mustRanges []hcl.Range
	a.strList("exclude", &dir.Exclude, &excludeRanges)
	a.strList("must_exist", &dir.MustExist, &mustRanges)
	for i, pat := range dir.Exclude {
		if _, err := path.Match(pat, ""); err != nil || pat == "" || strings.HasPrefix(pat, "/") {
			d.errorf(excludeRanges[i], "Invalid pattern", "exclude pattern %q must be a glob relative to the directory, such as \"tmp/*\" or \"*.pid\".", pat)
		}
	}
	for i, rel := range dir.MustExist {
		if rel == "" || filepath.IsAbs(rel) || !filepath.IsLocal(rel) {
			d.errorf(mustRanges[i], "Invalid path", "must_exist entry %q must be a path relative to the directory, inside it.", rel)
		}
	}
	switch {
	case !filepath.IsAbs(p):
		d.errorf(lr, "Relative directory", "Replicated directory %q must be an absolute path, such as \"/var/lib/app\".", p)
		return nil
	case filepath.Clean(p) == "/":
		d.errorf(lr, "Invalid directory", "The root directory cannot be replicated; name the application's data directories.")
		return nil
	case containsDotDot(p):
		d.errorf(lr, "Invalid directory", "Replicated directory %q must not contain \"..\".", p)
		return nil
	}
	dir.Path = filepath.Clean(p)
	return dir
}

func containsDotDot(p string) bool {
	for _, part := range strings.Split(p, "/") {
		if part == ".." {
			return true
		}
	}
	return false
}

func decodeFarm(d *diags, b *hcl.Block) *Farm {
	f := &Farm{Source: Source{Range: b.DefRange}}
	content, ds := b.Body.Content(farmSchema)
	d.add(ds)
	a := d.attrsOf(content, &f.Source, "farm")
	a.str("network", &f.Network)
	a.port("port", &f.Port, "derived from the module id")
	a.duration("pulse", &f.Pulse, false)
	a.duration("timeout", &f.Timeout, false)
	var bal string
	if a.oneOf("balance", &bal, validBalances) {
		f.Balance = Balance(bal)
	}
	if entries, _ := a.mapEntries("power", cty.Number, "a whole number"); entries != nil {
		f.Power = map[string]int{}
		for _, e := range entries {
			n, ok := wholeNumber(e.Value.AsBigFloat())
			if !ok || n < 0 || n > 1000 {
				d.errorf(e.ValueRange, "Invalid power", "power.%s must be a whole number from 0 (no new flows) to 1000, not %s.", e.Key, e.Value.AsBigFloat().Text('g', -1))
				continue
			}
			f.Power[e.Key] = int(n)
		}
		f.powerRanges = map[string]hcl.Range{}
		for _, e := range entries {
			f.powerRanges[e.Key] = e.KeyRange
		}
	}
	if attr, ok := content.Attributes["ports"]; ok {
		v, ds := attr.Expr.Value(nil)
		lv, err := convertList(v, cty.Number)
		if ds.HasErrors() || err != nil {
			d.add(ds)
			d.errorf(attr.Expr.Range(), "Wrong type", "ports must be a list of port numbers, e.g. [80, 443].")
		} else {
			f.setAttr("ports", attr.Expr.Range())
			elems, eds := hcl.ExprList(attr.Expr)
			seen := map[int]hcl.Range{}
			i := 0
			for it := lv.ElementIterator(); it.Next(); i++ {
				_, ev := it.Element()
				r := attr.Expr.Range()
				if !eds.HasErrors() && i < len(elems) {
					r = elems[i].Range()
				}
				if ev.IsNull() {
					d.errorf(r, "Invalid port", "ports must not contain null.")
					continue
				}
				n, ok := wholeNumber(ev.AsBigFloat())
				if !ok || n < 1 || n > 65535 {
					d.errorf(r, "Invalid port", "ports entries must be port numbers from 1 to 65535, not %s.", ev.AsBigFloat().Text('g', -1))
					continue
				}
				if first, dup := seen[int(n)]; dup {
					d.errorf(r, "Duplicate port", "Port %d is already listed at %s.", n, posString(first))
					continue
				}
				seen[int(n)] = r
				f.Ports = append(f.Ports, int(n))
			}
		}
	}
	return f
}

func convertList(v cty.Value, elem cty.Type) (cty.Value, error) {
	if v.IsNull() || !v.IsWhollyKnown() {
		return cty.NilVal, errSizeSyntax
	}
	return convert.Convert(v, cty.List(elem))
}

var envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

func decodeApp(d *diags, b *hcl.Block, app *App) {
	app.Range = b.DefRange
	content, remain, ds := b.Body.PartialContent(appSchema)
	d.add(ds)
	app.Config = remain
	a := d.attrsOf(content, &app.Source, "app")
	if a.str("plugin", &app.Plugin) {
		d.checkName("plugin", app.Plugin, app.AttrRange("plugin"))
	}
	if a.str("scripts", &app.Scripts) && (app.Scripts == "" || filepath.IsAbs(app.Scripts) || !filepath.IsLocal(app.Scripts)) {
		d.errorf(app.AttrRange("scripts"), "Invalid path", "scripts must be a directory inside the module directory, written relative to it (e.g. \"scripts\"), not %q: a module is installed and deployed as one bundle.", app.Scripts)
		app.unset("scripts")
		app.setInvalid("scripts")
		app.Scripts = ""
	}
	a.duration("start_timeout", &app.StartTimeout, false)
	a.duration("stop_timeout", &app.StopTimeout, false)
	if entries, _ := a.mapEntries("env", cty.String, "a string"); entries != nil {
		app.Env = map[string]string{}
		for _, e := range entries {
			switch {
			case !envNameRE.MatchString(e.Key):
				d.errorf(e.KeyRange, "Invalid variable name", "Environment variable name %q must be letters, digits and '_', not starting with a digit.", e.Key)
			case strings.HasPrefix(e.Key, "HALO_"):
				d.errorf(e.KeyRange, "Reserved variable name", "Environment variables starting with HALO_ are set by halo for the scripts; rename %q.", e.Key)
			default:
				app.Env[e.Key] = e.Value.AsString()
			}
		}
	}
}

func decodeCheck(d *diags, b *hcl.Block) *Check {
	c := &Check{Source: Source{Range: b.DefRange}, Type: b.Labels[0], Name: b.Labels[1]}
	d.checkName("checker plugin", c.Type, b.LabelRanges[0])
	d.checkName("check", c.Name, b.LabelRanges[1])
	// PartialContent: what halo does not know is the plugin's, checked later
	// against the schema the plugin declares.
	content, remain, ds := b.Body.PartialContent(checkCommonSchema)
	d.add(ds)
	c.Config = remain
	a := d.attrsOf(content, &c.Source, "check")
	a.duration("interval", &c.Interval, false)
	a.duration("timeout", &c.Timeout, false)
	var action, when string
	if a.oneOf("action", &action, validActions) {
		c.Action, _ = core.ParseCheckAction(action)
	}
	if a.oneOf("when", &when, validWhens) {
		c.When, _ = core.ParseWhen(when)
	}
	return c
}
