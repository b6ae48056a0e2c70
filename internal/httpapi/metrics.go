package httpapi

import "net/http"

// MetricsBackend is a Backend that exports Prometheus metrics: the API
// serves them at GET /metrics (SPEC §4), beside /v1.
type MetricsBackend interface {
	MetricsHandler() http.Handler
}

// metrics serves the backend's metrics, or says it has none.
func (s *server) metrics() http.Handler {
	if mb, ok := s.b.(MetricsBackend); ok {
		return mb.MetricsHandler()
	}
	return s.wrap(func(_ http.ResponseWriter, _ *http.Request) error {
		return NotFound("this agent exports no metrics")
	})
}
