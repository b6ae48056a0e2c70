// Package api holds the REST types of the halo agent API (/v1) and the one
// Go client shared by the CLI, the tests, the console and third parties.
package api

import "time"

// ModuleStatus is one module's state on one node.
type ModuleStatus struct {
	Module    string    `json:"module"`
	Kind      string    `json:"kind"` // mirror, farm, light
	Node      string    `json:"node"`
	State     string    `json:"state"`     // STOP, WAIT, ALONE, PRIM, SECOND, UP
	Readiness string    `json:"readiness"` // NotReady, Transient, Ready
	Reason    string    `json:"reason,omitempty"`
	Since     time.Time `json:"since"`
	// ExitCode is what `halo status <module> -q` exits with (0..4).
	ExitCode  int                 `json:"exit_code"`
	Resources map[string]Resource `json:"resources,omitempty"`
	Switches  Switches            `json:"switches"`
	Loop      LoopInfo            `json:"loop"`
	// ConfigChanged is set when the module file changed on disk and was not applied.
	ConfigChanged bool `json:"config_changed,omitempty"`
}

// Switches are the admin on/off settings, persisted by the agent.
type Switches struct {
	Failover bool `json:"failover"`
	Checkers bool `json:"checkers"`
	Errd     bool `json:"errd"`
}

// LoopInfo shows how close the module is to max_loop.
type LoopInfo struct {
	Count    int    `json:"count"`
	Max      int    `json:"max"`
	Interval string `json:"interval"`
}

// Resource is a named fact the state machine reads (checker.<name>, ...).
type Resource struct {
	Value   string    `json:"value"` // init, up, down, unknown, or a free value
	Message string    `json:"message,omitempty"`
	Since   time.Time `json:"since"`
}

// Event is one line of a module's event log: a state change with its cause,
// an action, a script run or its output, a warning.
type Event struct {
	Seq    uint64    `json:"seq"`
	Time   time.Time `json:"time"`
	Module string    `json:"module"`
	Node   string    `json:"node"`
	Kind   string    `json:"kind"`  // state, action, script, output, log, command
	Level  string    `json:"level"` // info, warn, error
	Text   string    `json:"text"`
}

// CommandRequest asks the agent to run an admin command on a module.
type CommandRequest struct {
	Command  string `json:"command"` // start, stop, restart, stopstart, forcestop, swap, prim, second, primforce, failover-on, ...
	FullSync bool   `json:"fullsync,omitempty"`
	Checker  string `json:"checker,omitempty"`
}

// CommandResult is the agent's answer to an accepted command.
type CommandResult struct {
	Module string `json:"module"`
	Node   string `json:"node"`
	Text   string `json:"text"`
}

// ResourceSet sets a resource (used by long-running custom checkers through
// `halo resource set`).
type ResourceSet struct {
	Value   string `json:"value"`
	Message string `json:"message,omitempty"`
}

// PluginInfo describes one installed plugin.
type PluginInfo struct {
	Name       string `json:"name"`
	Kind       string `json:"kind"`
	Version    string `json:"version"`
	APIVersion int    `json:"api_version"`
	Path       string `json:"path"`
	Error      string `json:"error,omitempty"`
}

// VersionInfo is returned by GET /v1/version.
type VersionInfo struct {
	Version string `json:"version"`
	Node    string `json:"node"`
	Cluster string `json:"cluster,omitempty"`
}

// Error is the body of every non-2xx response.
type Error struct {
	Error string `json:"error"`
}
