package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/halo-ha/halo/sdk/api"
)

// fakeBackend records commands and serves one module, "web".
type fakeBackend struct {
	mu       sync.Mutex
	commands []api.CommandRequest
	events   []api.Event
	subs     []chan api.Event
	res      map[string]api.Resource
}

func (f *fakeBackend) Version() api.VersionInfo { return api.VersionInfo{Version: "test", Node: "n1"} }
func (f *fakeBackend) Modules() []api.ModuleStatus {
	m, _ := f.Module("web")
	return []api.ModuleStatus{m}
}
func (f *fakeBackend) Module(name string) (api.ModuleStatus, error) {
	if name != "web" {
		return api.ModuleStatus{}, NotFound("no module %q on this node", name)
	}
	return api.ModuleStatus{Module: "web", State: "UP", Readiness: "Ready"}, nil
}
func (f *fakeBackend) Command(_ context.Context, module string, req api.CommandRequest) (api.CommandResult, error) {
	if _, err := f.Module(module); err != nil {
		return api.CommandResult{}, err
	}
	if req.Command == "swap" {
		return api.CommandResult{}, Conflict("swap is not possible on a light module")
	}
	f.mu.Lock()
	f.commands = append(f.commands, req)
	f.mu.Unlock()
	return api.CommandResult{Module: module, Text: "ok"}, nil
}
func (f *fakeBackend) Events(module string, after uint64, limit int) ([]api.Event, error) {
	if _, err := f.Module(module); err != nil {
		return nil, err
	}
	var out []api.Event
	for _, e := range f.events {
		if e.Seq > after {
			out = append(out, e)
		}
	}
	return out, nil
}
func (f *fakeBackend) Subscribe(module string, after uint64) (<-chan api.Event, func(), error) {
	if _, err := f.Module(module); err != nil {
		return nil, nil, err
	}
	ch := make(chan api.Event, 16)
	f.mu.Lock()
	f.subs = append(f.subs, ch)
	f.mu.Unlock()
	return ch, func() {}, nil
}
func (f *fakeBackend) publish(e api.Event) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, s := range f.subs {
		s <- e
	}
}
func (f *fakeBackend) Resource(module, name string) (api.Resource, error) {
	r, ok := f.res[name]
	if !ok {
		return r, NotFound("no resource %q", name)
	}
	return r, nil
}
func (f *fakeBackend) SetResource(module, name string, set api.ResourceSet) error {
	if set.Value == "" {
		return BadRequest("value is required")
	}
	f.res[name] = api.Resource{Value: set.Value, Message: set.Message}
	return nil
}
func (f *fakeBackend) Plugins() []api.PluginInfo { return nil }

func newTestServer(t *testing.T) (*fakeBackend, *api.Client, *httptest.Server) {
	t.Helper()
	fb := &fakeBackend{res: map[string]api.Resource{},
		events: []api.Event{{Seq: 1, Text: "a"}, {Seq: 2, Text: "b"}}}
	srv := httptest.NewServer(NewRouter(fb))
	t.Cleanup(srv.Close)
	return fb, api.NewClient(srv.URL, srv.Client()), srv
}

func TestClientRoundTrip(t *testing.T) {
	fb, c, _ := newTestServer(t)
	ctx := context.Background()
	if _, err := c.Command(ctx, "web", api.CommandRequest{Command: "restart"}); err != nil {
		t.Fatal(err)
	}
	if len(fb.commands) != 1 || fb.commands[0].Command != "restart" {
		t.Fatalf("backend got %+v", fb.commands)
	}
	_, err := c.Command(ctx, "web", api.CommandRequest{Command: "swap"})
	var se *api.StatusError
	if !errors.As(err, &se) || se.Code != http.StatusConflict || !strings.Contains(se.Message, "light module") {
		t.Fatalf("swap: got %v", err)
	}
	if _, err := c.Module(ctx, "nope"); !api.IsNotFound(err) {
		t.Fatalf("unknown module: got %v", err)
	}
	evs, err := c.Events(ctx, "web", 1, 0)
	if err != nil || len(evs) != 1 || evs[0].Text != "b" {
		t.Fatalf("events after 1: %+v %v", evs, err)
	}
	if err := c.SetResource(ctx, "web", "checker.app", api.ResourceSet{Value: "down"}); err != nil {
		t.Fatal(err)
	}
	r, err := c.Resource(ctx, "web", "checker.app")
	if err != nil || r.Value != "down" {
		t.Fatalf("resource: %+v %v", r, err)
	}
}

// Bad requests get a 4xx with a JSON error naming the problem and reach no
// backend method.
func TestBadRequests(t *testing.T) {
	fb, _, srv := newTestServer(t)
	cases := []struct {
		method, path, body string
		code               int
		want               string
	}{
		{"POST", "/v1/modules/web/commands", `{"command":`, 400, "invalid request body"},
		{"POST", "/v1/modules/web/commands", `{"comand":"stop"}`, 400, `unknown field "comand"`},
		{"POST", "/v1/modules/web/commands", `{}`, 400, `"command" is required`},
		{"POST", "/v1/modules/web/commands", `{"command":"stop"} {}`, 400, "unexpected data"},
		{"POST", "/v1/modules/web/commands", `{"command":"stop","fullsync":"yes"}`, 400, "invalid request body"},
		{"POST", "/v1/modules/web/commands", `{"command":"` + strings.Repeat("x", maxBody) + `"}`, 400, "invalid request body"},
		{"GET", "/v1/modules/web/events?after=-1", ``, 400, `"after"`},
		{"PATCH", "/v1/modules/web", ``, 405, "not allowed"}, // DELETE uninstalls (admin.go)
		{"GET", "/v2/nothing", ``, 404, "no such endpoint"},
		{"PUT", "/v1/modules/web/resources/x", `{"value":""}`, 400, "value is required"},
	}
	for _, tc := range cases {
		req, _ := http.NewRequest(tc.method, srv.URL+tc.path, strings.NewReader(tc.body))
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var e api.Error
		if err := json.Unmarshal(b, &e); err != nil || e.Error == "" {
			t.Errorf("%s %s: body %q is not a JSON error", tc.method, tc.path, b)
		}
		if resp.StatusCode != tc.code || !strings.Contains(e.Error, tc.want) {
			t.Errorf("%s %s %.40q: got %d %s, want %d containing %q", tc.method, tc.path, tc.body, resp.StatusCode, b, tc.code, tc.want)
		}
	}
	if len(fb.commands) != 0 {
		t.Fatalf("bad requests reached the backend: %+v", fb.commands)
	}
}

func TestEventStream(t *testing.T) {
	fb, c, _ := newTestServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got := make(chan api.Event, 2)
	go c.FollowEvents(ctx, "web", 0, func(e api.Event) error { got <- e; return nil })
	// Wait until the subscription exists, then publish.
	for {
		fb.mu.Lock()
		n := len(fb.subs)
		fb.mu.Unlock()
		if n > 0 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	fb.publish(api.Event{Seq: 7, Text: "state UP"})
	select {
	case e := <-got:
		if e.Seq != 7 || e.Text != "state UP" {
			t.Fatalf("got %+v", e)
		}
	case <-ctx.Done():
		t.Fatal("no event streamed")
	}
}
