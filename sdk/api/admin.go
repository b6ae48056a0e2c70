package api

// InstalledModule is one module installed on a node (GET /v1/config/modules).
type InstalledModule struct {
	Module string `json:"module"`
	Node   string `json:"node"`
	Kind   string `json:"kind,omitempty"`
	// Nodes are the nodes the module lists, as installed on this node.
	Nodes []string `json:"nodes,omitempty"`
	// Runs: the module runs on this node (this node is among its nodes
	// and its runner exists); State is then its state.
	Runs  bool   `json:"runs"`
	State string `json:"state,omitempty"`
	// Checksum is the configuration checksum of the files on disk;
	// Applied is the one the node runs (or validated last, for a module
	// that does not run here). They differ after an edit not yet applied.
	Checksum string `json:"checksum,omitempty"`
	Applied  string `json:"applied,omitempty"`
	Changed  bool   `json:"changed,omitempty"`
	// Error says why the files on disk cannot be read.
	Error string `json:"error,omitempty"`
}

// AdminResult is the answer to a bundle install, an uninstall or a reload.
type AdminResult struct {
	Module   string `json:"module"`
	Node     string `json:"node"`
	Action   string `json:"action"` // installed, replaced, unchanged, uninstalled, reloaded
	Checksum string `json:"checksum,omitempty"`
	// Applied lists the changes applied live ("check.web.interval: 2s -> 1s").
	Applied []string `json:"applied,omitempty"`
	// Runs: the module runs on this node afterwards.
	Runs bool   `json:"runs"`
	Text string `json:"text"`
}
