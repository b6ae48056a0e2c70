package agent

import (
	"fmt"
	"time"

	"github.com/halo-ha/halo/core"
	"github.com/halo-ha/halo/core/farm"
	"github.com/halo-ha/halo/internal/config"
	"github.com/halo-ha/halo/sdk/api"
)

// persistFunc stores a machine's Persist payload durably and returns the
// admin switches and max_loop count it holds, for the API.
type persistFunc func(data any) (api.Switches, int, error)

// newMachine builds the core machine of a module for this node, resumed
// from its persisted state, and the function that persists it.
// machineSetup is a module's machine with what the runner needs around it.
type machineSetup struct {
	machine   Machine
	persist   persistFunc
	switches  api.Switches // as persisted, for the API before the first Persist
	loopCount int
}

func newMachine(mod *config.Module, node, statePath string) (machineSetup, error) {
	specs := make([]core.CheckerSpec, len(mod.Checks))
	for i, c := range mod.Checks {
		specs[i] = c.Spec()
	}
	switch mod.Kind {
	case config.KindLight, config.KindFarm:
		var p farm.Persistent
		if _, err := loadJSON(statePath, &p); err != nil {
			return machineSetup{}, err
		}
		cfg := farm.Config{
			Node: node, Nodes: mod.Nodes, MaxLoop: mod.MaxLoop, LoopInterval: mod.LoopInterval,
			Checkers: specs, Light: mod.Kind == config.KindLight,
		}
		if mod.Farm != nil {
			cfg.Power = mod.Farm.Power
			cfg.Balance = string(mod.Farm.Balance)
		}
		describe := func(p farm.Persistent) (api.Switches, int) {
			sw := api.Switches{Failover: true, Checkers: !p.AllCheckersOff, Errd: !p.ErrdOff}
			return sw, countSince(p.LoopTimes, time.Now(), mod.LoopInterval)
		}
		persist := func(data any) (api.Switches, int, error) {
			p, ok := data.(farm.Persistent)
			if !ok {
				return api.Switches{}, 0, fmt.Errorf("farm machine asked to persist %T", data)
			}
			sw, n := describe(p)
			return sw, n, saveJSON(statePath, p)
		}
		sw, n := describe(p)
		return machineSetup{farm.New(cfg, p), persist, sw, n}, nil
	default:
		return machineSetup{}, fmt.Errorf("%s modules are not supported by this agent yet", mod.Kind)
	}
}

// countSince counts the times within interval before now.
func countSince(times []time.Time, now time.Time, interval time.Duration) int {
	n := 0
	for _, t := range times {
		if now.Sub(t) < interval {
			n++
		}
	}
	return n
}
