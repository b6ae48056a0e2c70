package api

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
)

// WithOrigin makes a copy whose requests carry the origin header; the
// original sends none.
func TestClientOrigin(t *testing.T) {
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.Header.Get(OriginHeader))
		_ = json.NewEncoder(w).Encode(VersionInfo{Version: "test"})
	}))
	defer srv.Close()
	c := NewClient(srv.URL, srv.Client())
	cli := c.WithOrigin("cli")
	for _, cl := range []*Client{cli, c} {
		if _, err := cl.Version(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if len(got) != 2 || got[0] != "cli" || got[1] != "" {
		t.Fatalf("origin headers %q, want [cli \"\"]", got)
	}
}
