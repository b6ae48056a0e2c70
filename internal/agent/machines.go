package agent

import (
	"fmt"
	"slices"
	"time"

	"github.com/halo-ha/halo/core"
	"github.com/halo-ha/halo/core/farm"
	"github.com/halo-ha/halo/core/mirror"
	"github.com/halo-ha/halo/internal/config"
	"github.com/halo-ha/halo/sdk/api"
)

// persistFunc stores a machine's Persist payload durably and returns the
// admin switches and max_loop count it holds, for the API.
type persistFunc func(data any) (api.Switches, int, error)

// machineSetup is a module's machine with what the runner needs around it.
type machineSetup struct {
	machine   Machine
	persist   persistFunc
	switches  api.Switches // as persisted, for the API before the first Persist
	loopCount int
	mirror    *mirror.Machine // the machine again, for a mirror module
}

// witnessType is the checker plugin that probes a mirror's split-brain
// witness. Its checks are not periodic checkers: the machine asks for a
// probe (CheckWitness) before serving without its peer.
const witnessType = "splitbrain"

// newMachine builds the core machine of a module for this node, resumed
// from its persisted state, and the function that persists it.
func newMachine(mod *config.Module, node, statePath string) (machineSetup, error) {
	var specs []core.CheckerSpec
	witness := false
	for _, c := range mod.Checks {
		if mod.Kind == config.KindMirror && c.Type == witnessType {
			witness = true
			continue
		}
		specs = append(specs, c.Spec())
	}
	switch mod.Kind {
	case config.KindMirror:
		return newMirrorMachine(mod, node, statePath, specs, witness)
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
		describe, persist := farmPersistence(mod, statePath)
		sw, n := describe(p)
		return machineSetup{machine: farm.New(cfg, p), persist: persist, switches: sw, loopCount: n}, nil
	default:
		return machineSetup{}, fmt.Errorf("%s modules are not supported by this agent yet", mod.Kind)
	}
}

func newMirrorMachine(mod *config.Module, node, statePath string, specs []core.CheckerSpec, witness bool) (machineSetup, error) {
	var p mirror.Persistent
	if _, err := loadJSON(statePath, &p); err != nil {
		return machineSetup{}, err
	}
	cfg := mirror.Config{
		Node: node, Peer: peerOf(mod, node),
		Networks:         mod.Heartbeat.Networks,
		HeartbeatTimeout: mod.Heartbeat.Timeout,
		Failover:         mod.Failover,
		DefaultPrimary:   mod.DefaultPrimary,
		MaxLoop:          mod.MaxLoop,
		LoopInterval:     mod.LoopInterval,
		SyncDelta:        mod.SyncDelta,
		Checkers:         specs,
		Witness:          witness,
		SplitBrainWinner: mod.SplitBrainWinner,
	}
	if mod.Replication != nil {
		cfg.StallTimeout = mod.Replication.StallTimeout
		// The daemon checks the directories (must_exist) and reports;
		// a build without it serves as before (see newReplication).
		cfg.ReplReadiness = DaemonExecutable != ""
		cfg.Async = mod.Replication.Mode == config.ModeAsync
	}
	if err := cfg.Validate(); err != nil {
		return machineSetup{}, err
	}
	describe, persist := mirrorPersistence(mod, statePath)
	m := mirror.New(cfg, p)
	sw, n := describe(p)
	return machineSetup{machine: m, persist: persist, switches: sw, loopCount: n, mirror: m}, nil
}

// farmPersistence returns how a farm's persistent state shows in the API
// and the function that stores it; both depend on the module's
// configuration, so a live reload builds them again.
func farmPersistence(mod *config.Module, statePath string) (func(farm.Persistent) (api.Switches, int), persistFunc) {
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
	return describe, persist
}

// mirrorPersistence is farmPersistence for a mirror module.
func mirrorPersistence(mod *config.Module, statePath string) (func(mirror.Persistent) (api.Switches, int), persistFunc) {
	describe := func(p mirror.Persistent) (api.Switches, int) {
		sw := api.Switches{
			Failover: mod.Failover && !p.FailoverOff,
			Checkers: !slices.Contains(p.CheckersOff, "*"),
			Errd:     !slices.Contains(p.TypesOff, "errd"),
		}
		return sw, countSince(p.LoopTimes, time.Now(), mod.LoopInterval)
	}
	persist := func(data any) (api.Switches, int, error) {
		p, ok := data.(mirror.Persistent)
		if !ok {
			return api.Switches{}, 0, fmt.Errorf("mirror machine asked to persist %T", data)
		}
		sw, n := describe(p)
		return sw, n, saveJSON(statePath, p)
	}
	return describe, persist
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
