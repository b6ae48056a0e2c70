package mirror

import (
	"testing"
	"time"

	"github.com/halo-ha/halo/core"
)

// SetLive reaches every place the machine reads the live settings from.
func TestSetLive(t *testing.T) {
	cfg := Config{Node: "n1", Peer: "n2", HeartbeatTimeout: time.Second, Failover: true, MaxLoop: 3, LoopInterval: time.Hour,
		Checkers: []core.CheckerSpec{{Name: "app", Type: "errd", Action: core.ActRestart, When: core.WhenPrim}}}
	m := New(cfg, Persistent{})
	m.SetLive(Live{Failover: false, MaxLoop: 5, LoopInterval: 2 * time.Hour,
		Checkers: []core.CheckerSpec{{Name: "app", Action: core.ActWait, When: core.WhenBoth}, {Name: "unknown", Action: core.ActStop}}})
	if !m.failoverOff() {
		t.Error("failover still on")
	}
	if m.loops.Max != 5 || m.loops.Interval != 2*time.Hour || m.cfg.MaxLoop != 5 {
		t.Errorf("loop counter %+v, cfg max %d", m.loops, m.cfg.MaxLoop)
	}
	c := m.checker("app")
	if c.spec.Action != core.ActWait || c.spec.When != core.WhenBoth || c.spec.Type != "errd" {
		t.Errorf("checker spec %+v", c.spec)
	}
	if m.checker("unknown") != nil || len(m.cfg.Checkers) != 1 {
		t.Error("SetLive added a checker")
	}
	// Zero values fall back to the defaults, as at New.
	m.SetLive(Live{Failover: true})
	if m.failoverOff() || m.loops.Max != 3 || m.loops.Interval != 24*time.Hour {
		t.Errorf("defaults: failover off %v, loops %+v", m.failoverOff(), m.loops)
	}
}
