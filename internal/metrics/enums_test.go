package metrics

import (
	"testing"

	"github.com/halo-ha/halo/core"
	"github.com/halo-ha/halo/internal/config"
	"github.com/halo-ha/halo/internal/replication/daemon/ctl"
)

// The labelled gauges list every value the agent can report: a value
// missing here would still be exported (as an extra series), but a query
// written from this list would never see it as 0.
func TestEnumsMatchSources(t *testing.T) {
	for i, s := range States {
		if got := core.State(i).String(); got != s {
			t.Errorf("States[%d] = %q, core says %q", i, s, got)
		}
	}
	if got := core.State(len(States)).String(); got != "State(6)" {
		t.Errorf("core has a state %q that States lacks", got)
	}
	for i, r := range Readinesses {
		if got := core.Readiness(i).String(); got != r {
			t.Errorf("Readinesses[%d] = %q, core says %q", i, r, got)
		}
	}
	for i, c := range CheckerValues {
		if got := core.CheckStatus(i).String(); got != c {
			t.Errorf("CheckerValues[%d] = %q, core says %q", i, c, got)
		}
	}
	for i, m := range []config.ReplicationMode{config.ModeSync, config.ModeDurable, config.ModeAsync} {
		if string(m) != Modes[i] {
			t.Errorf("Modes[%d] = %q, config says %q", i, Modes[i], m)
		}
	}
	for i, r := range []string{ctl.RoleNone, ctl.RoleSource, ctl.RoleTarget} {
		if r != Roles[i] {
			t.Errorf("Roles[%d] = %q, ctl says %q", i, Roles[i], r)
		}
	}
}
