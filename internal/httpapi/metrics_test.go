package httpapi

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/halo-ha/halo/internal/metrics"
	"github.com/halo-ha/halo/internal/replication/daemon/ctl"
	"github.com/halo-ha/halo/sdk/api"
)

// metricsBackend is fakeBackend with metrics: its one module, web, UP.
type metricsBackend struct {
	*fakeBackend
	m *metrics.Metrics
}

func (b metricsBackend) MetricsHandler() http.Handler { return b.m.Handler() }

type webLevels struct{}

func (webLevels) Modules() []metrics.Module {
	return []metrics.Module{{Name: "web", Kind: "light", State: "UP", Readiness: "Ready"}}
}

func (webLevels) ReplicationStatus(context.Context, string) (*ctl.Status, error) {
	panic("web does not replicate: its daemon must not be asked")
}

func TestMetricsEndpoint(t *testing.T) {
	m := metrics.New(webLevels{}, metrics.Options{Node: "n1", NoRuntime: true})
	m.Transition("web", "STOP", "UP")
	srv := httptest.NewServer(NewRouter(metricsBackend{&fakeBackend{res: map[string]api.Resource{}}, m}))
	defer srv.Close()
	c := api.NewClient(srv.URL, srv.Client())
	body, err := c.Metrics(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{
		"# TYPE halo_module_state gauge",
		`halo_module_state{kind="light",module="web",node="n1",state="UP"} 1`,
		"# TYPE halo_module_transitions_total counter",
		`halo_module_transitions_total{from="STOP",module="web",node="n1",to="UP"} 1`,
	} {
		if !strings.Contains(string(body), line+"\n") {
			t.Fatalf("GET /metrics lacks %q:\n%s", line, body)
		}
	}
	resp, err := srv.Client().Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Fatalf("content type %q, want the text exposition format", ct)
	}
	// Only GET: anything else is the API's JSON 405.
	resp, err = srv.Client().Post(srv.URL+"/metrics", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("POST /metrics: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
}

func TestMetricsEndpointWithoutMetrics(t *testing.T) {
	_, c, _ := newTestServer(t)
	_, err := c.Metrics(context.Background())
	if !api.IsNotFound(err) || !strings.Contains(err.Error(), "no metrics") {
		t.Fatalf("GET /metrics of a backend without metrics: %v", err)
	}
}
