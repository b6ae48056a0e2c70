// Package httpapi serves the agent's REST API (/v1) with gorilla/mux. Every
// handler returns an error; one function renders errors as {"error": ...}
// with the status code the error carries.
package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/gorilla/mux"
	"github.com/halo-ha/halo/sdk/api"
)

// Backend is what the agent exposes to the API.
type Backend interface {
	Version() api.VersionInfo
	Modules() []api.ModuleStatus
	Module(name string) (api.ModuleStatus, error)
	Command(ctx context.Context, module string, req api.CommandRequest) (api.CommandResult, error)
	Events(module string, after uint64, limit int) ([]api.Event, error)
	// Subscribe returns a channel of events with Seq > after, closed when
	// cancel is called or the module goes away.
	Subscribe(module string, after uint64) (events <-chan api.Event, cancel func(), err error)
	Resource(module, name string) (api.Resource, error)
	SetResource(module, name string, set api.ResourceSet) error
	Plugins() []api.PluginInfo
}

// Error is an error with an HTTP status. Backends return it (via NotFound,
// BadRequest, Conflict) to choose the status; any other error is a 500.
type Error struct {
	Code int
	Msg  string
}

func (e *Error) Error() string { return e.Msg }

// NotFound, BadRequest and Conflict build status-carrying errors.
func NotFound(format string, a ...any) error {
	return &Error{http.StatusNotFound, fmt.Sprintf(format, a...)}
}
func BadRequest(format string, a ...any) error {
	return &Error{http.StatusBadRequest, fmt.Sprintf(format, a...)}
}
func Conflict(format string, a ...any) error {
	return &Error{http.StatusConflict, fmt.Sprintf(format, a...)}
}

// maxBody bounds request bodies: every request here is a small JSON object.
const maxBody = 64 << 10

type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// NewRouter returns the /v1 API routes over b.
func NewRouter(b Backend) *mux.Router {
	s := &server{b: b}
	r := mux.NewRouter()
	// Full paths on one router rather than a /v1 subrouter: gorilla/mux
	// reports a method mismatch inside a subrouter as 404, not 405.
	v1 := route{r, "/v1"}
	v1.Handle("/version", s.wrap(s.version)).Methods(http.MethodGet)
	v1.Handle("/modules", s.wrap(s.modules)).Methods(http.MethodGet)
	v1.Handle("/modules/{module}", s.wrap(s.module)).Methods(http.MethodGet)
	v1.Handle("/modules/{module}/commands", s.wrap(s.command)).Methods(http.MethodPost)
	v1.Handle("/modules/{module}/events", s.wrap(s.events)).Methods(http.MethodGet)
	v1.Handle("/modules/{module}/events/stream", s.wrap(s.stream)).Methods(http.MethodGet)
	v1.Handle("/modules/{module}/resources/{name}", s.wrap(s.resource)).Methods(http.MethodGet)
	v1.Handle("/modules/{module}/resources/{name}", s.wrap(s.setResource)).Methods(http.MethodPut)
	v1.Handle("/plugins", s.wrap(s.plugins)).Methods(http.MethodGet)
	v1.Handle("/modules/{module}/bundle", s.wrap(s.installBundle)).Methods(http.MethodPut)
	v1.Handle("/modules/{module}", s.wrap(s.uninstallModule)).Methods(http.MethodDelete)
	v1.Handle("/modules/{module}/reload", s.wrap(s.reloadModule)).Methods(http.MethodPost)
	v1.Handle("/config/modules", s.wrap(s.installedModules)).Methods(http.MethodGet)
	r.Handle("/metrics", s.metrics()).Methods(http.MethodGet)
	notFound := s.wrap(func(_ http.ResponseWriter, r *http.Request) error {
		return NotFound("no such endpoint: %s %s", r.Method, r.URL.Path)
	})
	notAllowed := s.wrap(func(_ http.ResponseWriter, r *http.Request) error {
		return &Error{http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed on %s", r.Method, r.URL.Path)}
	})
	r.NotFoundHandler, r.MethodNotAllowedHandler = notFound, notAllowed
	return r
}

type server struct{ b Backend }

type route struct {
	r      *mux.Router
	prefix string
}

func (rt route) Handle(path string, h http.Handler) *mux.Route {
	return rt.r.Handle(rt.prefix+path, h)
}

func (s *server) wrap(h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			writeError(w, err)
		}
	})
}

func writeError(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	var he *Error
	if errors.As(err, &he) {
		code = he.Code
	}
	writeJSON(w, code, api.Error{Error: err.Error()})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// decode reads a JSON body strictly: unknown fields and trailing data are
// errors, so a typo in a request is reported instead of ignored.
func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxBody+1))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return BadRequest("invalid request body: %v", err)
	}
	if dec.More() {
		return BadRequest("invalid request body: unexpected data after the JSON object")
	}
	return nil
}

func (s *server) version(w http.ResponseWriter, _ *http.Request) error {
	writeJSON(w, http.StatusOK, s.b.Version())
	return nil
}

func (s *server) modules(w http.ResponseWriter, _ *http.Request) error {
	writeJSON(w, http.StatusOK, s.b.Modules())
	return nil
}

func (s *server) module(w http.ResponseWriter, r *http.Request) error {
	m, err := s.b.Module(mux.Vars(r)["module"])
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, m)
	return nil
}

func (s *server) command(w http.ResponseWriter, r *http.Request) error {
	var req api.CommandRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	if req.Command == "" {
		return BadRequest("invalid request body: \"command\" is required")
	}
	res, err := s.b.Command(r.Context(), mux.Vars(r)["module"], req)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

func parseUint(r *http.Request, name string) (uint64, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, BadRequest("query parameter %q: %q is not a non-negative integer", name, v)
	}
	return n, nil
}

func (s *server) events(w http.ResponseWriter, r *http.Request) error {
	after, err := parseUint(r, "after")
	if err != nil {
		return err
	}
	limit, err := parseUint(r, "limit")
	if err != nil {
		return err
	}
	evs, err := s.b.Events(mux.Vars(r)["module"], after, int(min(limit, 1<<20)))
	if err != nil {
		return err
	}
	if evs == nil {
		evs = []api.Event{}
	}
	writeJSON(w, http.StatusOK, evs)
	return nil
}

// keepAlive is how often an idle event stream sends a comment, so proxies
// and clients notice a dead agent.
const keepAlive = 15 * time.Second

func (s *server) stream(w http.ResponseWriter, r *http.Request) error {
	after, err := parseUint(r, "after")
	if err != nil {
		return err
	}
	fl, ok := w.(http.Flusher)
	if !ok {
		return &Error{http.StatusInternalServerError, "streaming not supported by this connection"}
	}
	ch, cancel, err := s.b.Subscribe(mux.Vars(r)["module"], after)
	if err != nil {
		return err
	}
	defer cancel()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	fl.Flush()
	t := time.NewTicker(keepAlive)
	defer t.Stop()
	for {
		select {
		case <-r.Context().Done():
			return nil
		case <-t.C:
			if _, err := io.WriteString(w, ": keep-alive\n\n"); err != nil {
				return nil
			}
			fl.Flush()
		case ev, ok := <-ch:
			if !ok {
				return nil
			}
			b, _ := json.Marshal(ev)
			if _, err := fmt.Fprintf(w, "id: %d\ndata: %s\n\n", ev.Seq, b); err != nil {
				return nil
			}
			fl.Flush()
		}
	}
}

func (s *server) resource(w http.ResponseWriter, r *http.Request) error {
	v := mux.Vars(r)
	res, err := s.b.Resource(v["module"], v["name"])
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

func (s *server) setResource(w http.ResponseWriter, r *http.Request) error {
	var set api.ResourceSet
	if err := decode(r, &set); err != nil {
		return err
	}
	v := mux.Vars(r)
	if err := s.b.SetResource(v["module"], v["name"], set); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *server) plugins(w http.ResponseWriter, _ *http.Request) error {
	ps := s.b.Plugins()
	if ps == nil {
		ps = []api.PluginInfo{}
	}
	writeJSON(w, http.StatusOK, ps)
	return nil
}
