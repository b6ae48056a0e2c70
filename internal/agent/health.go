package agent

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/halo-ha/halo/core"
)

// HealthResponse is the body of GET /health/<module>.
type HealthResponse struct {
	Module    string `json:"module"`
	Node      string `json:"node"`
	Kind      string `json:"kind"`
	State     string `json:"state"`
	Readiness string `json:"readiness"`
	// Serving: this node should receive the module's traffic (the answer
	// is 200); otherwise 503.
	Serving bool   `json:"serving"`
	Reason  string `json:"reason,omitempty"`
}

// healthPorts lists the health ports of this node's modules that enable
// the endpoint, sorted.
func (a *Agent) healthPorts() []int {
	var ports []int
	for _, r := range a.moduleRunners() {
		if h := r.mod.Health; h.Enabled && !slices.Contains(ports, h.Port) {
			ports = append(ports, h.Port)
		}
	}
	slices.Sort(ports)
	return ports
}

// serveHealth starts the cloud health endpoint: plain HTTP (load balancers
// probe it without TLS), one server per health port on every HealthHosts
// address, serving GET /health/<module> for the modules of that port and
// nothing else. Each server reports its end on errc. An address it cannot
// listen on is an error in the log and in the event log of the modules it
// serves, not a reason to stop the agent: the health endpoint only helps
// cloud load balancers, and failover must go on without it.
func (a *Agent) serveHealth(errc chan<- error) []*http.Server {
	if len(a.opts.HealthHosts) == 0 {
		return nil
	}
	var servers []*http.Server
	for _, port := range a.healthPorts() {
		mux := http.NewServeMux()
		mux.HandleFunc("GET /health/{module}", func(w http.ResponseWriter, req *http.Request) {
			a.serveModuleHealth(w, req.PathValue("module"), port)
		})
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		servers = append(servers, srv)
		for _, host := range a.opts.HealthHosts {
			addr := net.JoinHostPort(host, strconv.Itoa(port))
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				a.logger.Error("health endpoint unavailable", "address", addr, "error", err)
				for _, r := range a.moduleRunners() {
					if r.mod.Health.Enabled && r.mod.Health.Port == port {
						r.events.add("log", "error", fmt.Sprintf("health endpoint unavailable on %s: %v", addr, err))
					}
				}
				continue
			}
			go func() { errc <- srv.Serve(ln) }()
		}
	}
	return servers
}

func (a *Agent) serveModuleHealth(w http.ResponseWriter, module string, port int) {
	r, ok := a.lookup(module)
	if !ok || !r.mod.Health.Enabled || r.mod.Health.Port != port {
		writeAPIError(w, http.StatusNotFound, fmt.Sprintf("no module %q with a health endpoint on port %d of node %s", module, port, a.opts.Node))
		return
	}
	st := r.snapshot(false)
	resp := HealthResponse{Module: module, Node: a.opts.Node, Kind: st.Kind, State: st.State, Readiness: st.Readiness, Reason: st.Reason}
	state, err := core.ParseState(st.State)
	resp.Serving = err == nil && state.Serving() && st.Readiness == core.Ready.String()
	code := http.StatusServiceUnavailable
	if resp.Serving {
		code = http.StatusOK
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(resp)
}
