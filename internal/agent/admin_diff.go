package agent

import (
	"fmt"
	"maps"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"

	"github.com/halo-ha/halo/internal/config"
)

// configChange is one difference between a running module's configuration
// and a new one.
type configChange struct {
	Field    string // e.g. check.web.interval
	From, To string
	// Restart: the change cannot be applied to a running module (Why
	// says what it would take).
	Restart bool
	Why     string
}

func (c configChange) String() string {
	s := fmt.Sprintf("%s: %s -> %s", c.Field, c.From, c.To)
	if c.Restart && c.Why != "" {
		s += " (" + c.Why + ")"
	}
	return s
}

// diffModules lists what changes from old to new, each marked live or
// restart-required. Live changes are those the runner applies without
// touching the application, the VIP, the heartbeats or the replication
// (applyLive): the module's timings and reactions. Everything that decides
// what runs where and with which resources needs the module stopped.
func diffModules(old, new *config.Module) []configChange {
	var out []configChange
	live := func(field string, from, to any) {
		if f, t := show(from), show(to); f != t {
			out = append(out, configChange{Field: field, From: f, To: t})
		}
	}
	restart := func(field string, from, to any, why string) {
		if f, t := show(from), show(to); f != t {
			out = append(out, configChange{Field: field, From: f, To: t, Restart: true, Why: why})
		}
	}
	const (
		whyIdentity = "what the module is and where it runs"
		whyRuntime  = "set up when the module starts"
	)
	live("description", old.Description, new.Description)
	restart("kind", old.Kind, new.Kind, whyIdentity)
	restart("id", old.ID, new.ID, "its ports derive from it")
	restart("nodes", old.Nodes, new.Nodes, whyIdentity)
	restart("default_primary", old.DefaultPrimary, new.DefaultPrimary, whyRuntime)
	restart("sync_delta", old.SyncDelta, new.SyncDelta, whyRuntime)
	restart("split_brain_winner", old.SplitBrainWinner, new.SplitBrainWinner, whyRuntime)
	live("failover", old.Failover, new.Failover)
	live("max_loop", old.MaxLoop, new.MaxLoop)
	live("loop_interval", old.LoopInterval, new.LoopInterval)

	restart("heartbeat", canon(old.Heartbeat), canon(new.Heartbeat), "heartbeat sockets and timers are set up when the module starts")
	restart("replication", canon(old.Replication), canon(new.Replication), "the replicated directories are mounted when the module starts")
	restart("farm", canon(old.Farm), canon(new.Farm), whyRuntime)
	restart("health", canon(old.Health), canon(new.Health), "the health endpoint listens from the agent's start")
	restart("vip", vipList(old.VIPs), vipList(new.VIPs), "the address is held by the running module")

	restart("app.plugin", old.App.Plugin, new.App.Plugin, "the application runs under it")
	restart("app.scripts", relScripts(old), relScripts(new), "the application runs from it")
	restart("app.env", old.App.Env, new.App.Env, "the app plugin instance is configured with it when the module starts")
	appCommon := map[string]bool{"plugin": true, "scripts": true, "start_timeout": true, "stop_timeout": true, "env": true}
	restart("app.settings", bodyText(old.App.Config, appCommon), bodyText(new.App.Config, appCommon), "the app plugin instance is configured with them when the module starts")
	live("app.start_timeout", old.App.StartTimeout, new.App.StartTimeout)
	live("app.stop_timeout", old.App.StopTimeout, new.App.StopTimeout)

	names := map[string]bool{}
	for _, c := range old.Checks {
		names[c.Name] = true
	}
	for _, c := range new.Checks {
		names[c.Name] = true
	}
	common := map[string]bool{"interval": true, "timeout": true, "action": true, "when": true}
	for _, n := range slices.Sorted(maps.Keys(names)) {
		o, w := old.Check(n), new.Check(n)
		f := "check." + n
		switch {
		case o == nil:
			restart(f, "(none)", w.Type, "checkers are started with the module")
			continue
		case w == nil:
			restart(f, o.Type, "(none)", "checkers are started with the module")
			continue
		}
		restart(f+".type", o.Type, w.Type, "checkers are started with the module")
		if o.Type != w.Type {
			continue
		}
		restart(f+".settings", bodyText(o.Config, common), bodyText(w.Config, common), "the checker plugin instance is configured with them when the module starts")
		live(f+".interval", o.Interval, w.Interval)
		live(f+".timeout", o.Timeout, w.Timeout)
		live(f+".action", o.Action, w.Action)
		live(f+".when", o.When, w.When)
	}
	return out
}

// liveOnly reports whether every change can be applied live.
func liveOnly(cs []configChange) bool {
	return !slices.ContainsFunc(cs, func(c configChange) bool { return c.Restart })
}

func relScripts(m *config.Module) string {
	if m.App.Scripts == "" {
		return ""
	}
	if r, err := filepath.Rel(m.Dir, m.App.Scripts); err == nil {
		return r
	}
	return m.App.Scripts
}

func vipList(vs []*config.VIP) string {
	if len(vs) == 0 {
		return "(none)"
	}
	common := map[string]bool{"plugin": true, "address": true, "network": true, "interface": true, "announce_count": true, "announce_interval": true}
	var parts []string
	for _, v := range vs {
		p := fmt.Sprintf("%s on network %s (plugin %s", v.Address, v.Network, v.Plugin)
		if v.Interface != "" {
			p += ", interface " + v.Interface
		}
		p += fmt.Sprintf(", announce %d every %s", v.AnnounceCount, v.AnnounceInterval)
		if s := bodyText(v.Config, common); s != "" {
			p += ", " + s
		}
		parts = append(parts, p+")")
	}
	return strings.Join(parts, "; ")
}

func show(v any) string {
	switch x := v.(type) {
	case string:
		if x == "" {
			return `""`
		}
		return x
	case []string:
		return "[" + strings.Join(x, ", ") + "]"
	case map[string]string:
		keys := slices.Sorted(maps.Keys(x))
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = k + "=" + x[k]
		}
		return "{" + strings.Join(parts, ", ") + "}"
	case fmt.Stringer:
		return x.String()
	}
	return fmt.Sprint(v)
}

var (
	typeSource = reflect.TypeOf(config.Source{})
	typeRange  = reflect.TypeOf(hcl.Range{})
	typeBody   = reflect.TypeOf((*hcl.Body)(nil)).Elem()
)

// canon renders a configuration struct for comparison, leaving out where
// things were written (two loads of the same text from different paths
// must compare equal) and unparsed plugin bodies (compared by bodyText).
func canon(v any) string {
	var b strings.Builder
	writeCanon(&b, reflect.ValueOf(v))
	return b.String()
}

func writeCanon(b *strings.Builder, v reflect.Value) {
	if !v.IsValid() {
		b.WriteString("(none)")
		return
	}
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			b.WriteString("(none)")
			return
		}
		writeCanon(b, v.Elem())
	case reflect.Struct:
		if v.Type() == typeRange {
			return
		}
		if s, ok := v.Interface().(fmt.Stringer); ok && !hasExported(v.Type()) {
			// netip.Prefix and friends: their String is their identity.
			b.WriteString(s.String())
			return
		}
		b.WriteString("{")
		t := v.Type()
		for i := range v.NumField() {
			f := t.Field(i)
			if !f.IsExported() || f.Type == typeSource || f.Type == typeBody || f.Type == typeRange ||
				(f.Type.Kind() == reflect.Slice && f.Type.Elem() == typeRange) {
				continue
			}
			fmt.Fprintf(b, "%s=", f.Name)
			writeCanon(b, v.Field(i))
			b.WriteString(" ")
		}
		b.WriteString("}")
	case reflect.Slice:
		b.WriteString("[")
		for i := range v.Len() {
			writeCanon(b, v.Index(i))
			b.WriteString(",")
		}
		b.WriteString("]")
	case reflect.Map:
		keys := v.MapKeys()
		sort.Slice(keys, func(i, j int) bool { return fmt.Sprint(keys[i]) < fmt.Sprint(keys[j]) })
		b.WriteString("{")
		for _, k := range keys {
			fmt.Fprintf(b, "%v:", k)
			writeCanon(b, v.MapIndex(k))
			b.WriteString(",")
		}
		b.WriteString("}")
	default:
		if s, ok := v.Interface().(fmt.Stringer); ok {
			b.WriteString(s.String())
			return
		}
		fmt.Fprintf(b, "%v", v.Interface())
	}
}

// bodyText renders a plugin's settings (an unparsed HCL body) by value:
// attributes sorted by name with their evaluated values, blocks in order.
// skip names attributes halo reads itself. A body that cannot be rendered
// by value (not native syntax, an expression needing variables) renders
// as its location, so that any edit of it counts as a change: when in
// doubt, the change is not applied live.
func bodyText(body hcl.Body, skip map[string]bool) string {
	if body == nil {
		return ""
	}
	sb, ok := body.(*hclsyntax.Body)
	if !ok {
		return fmt.Sprintf("(unrenderable %T)", body)
	}
	var b strings.Builder
	for _, n := range slices.Sorted(maps.Keys(sb.Attributes)) {
		if skip[n] {
			continue
		}
		a := sb.Attributes[n]
		v, diags := a.Expr.Value(nil)
		if diags.HasErrors() {
			fmt.Fprintf(&b, "%s=(expression at %s) ", n, a.Expr.Range())
			continue
		}
		fmt.Fprintf(&b, "%s=%s ", n, v.GoString())
	}
	for _, blk := range sb.Blocks {
		fmt.Fprintf(&b, "%s%q{%s} ", blk.Type, blk.Labels, bodyText(blk.Body, nil))
	}
	return strings.TrimSpace(b.String())
}

func hasExported(t reflect.Type) bool {
	for i := range t.NumField() {
		if t.Field(i).IsExported() {
			return true
		}
	}
	return false
}
