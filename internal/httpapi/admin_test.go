package httpapi

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/halo-ha/halo/sdk/api"
)

// adminBackend is fakeBackend with module administration, recording the
// bundles it receives.
type adminBackend struct {
	fakeBackend
	got []byte
}

func (b *adminBackend) InstallBundle(_ context.Context, module string, data []byte) (api.AdminResult, error) {
	b.got = data
	return api.AdminResult{Module: module, Node: "n1", Action: "installed", Text: "ok"}, nil
}
func (b *adminBackend) UninstallModule(_ context.Context, module string) (api.AdminResult, error) {
	return api.AdminResult{}, Conflict("module %s is PRIM on node n1: stop it first", module)
}
func (b *adminBackend) Reload(_ context.Context, module string) (api.AdminResult, error) {
	return api.AdminResult{Module: module, Action: "reloaded", Applied: []string{"max_loop: 3 -> 5"}}, nil
}
func (b *adminBackend) InstalledModules() ([]api.InstalledModule, error) {
	return []api.InstalledModule{{Module: "web", Node: "n1", Checksum: "sha256:ab"}}, nil
}

func TestAdminRoutes(t *testing.T) {
	ab := &adminBackend{}
	srv := httptest.NewServer(NewRouter(ab))
	defer srv.Close()
	c := api.NewClient(srv.URL, srv.Client())
	ctx := context.Background()

	res, err := c.InstallBundle(ctx, "web", []byte("bundle bytes"))
	if err != nil || res.Action != "installed" || string(ab.got) != "bundle bytes" {
		t.Fatalf("install: %+v %v, backend got %q", res, err, ab.got)
	}
	if _, err := c.UninstallModule(ctx, "web"); err == nil || !strings.Contains(err.Error(), "stop it first") {
		t.Fatalf("uninstall: %v", err)
	}
	if r, err := c.Reload(ctx, "web"); err != nil || len(r.Applied) != 1 {
		t.Fatalf("reload: %+v %v", r, err)
	}
	if ms, err := c.InstalledModules(ctx); err != nil || len(ms) != 1 || ms[0].Checksum != "sha256:ab" {
		t.Fatalf("list: %+v %v", ms, err)
	}

	// Too large: refused before the backend sees it.
	ab.got = nil
	_, err = c.InstallBundle(ctx, "web", bytes.Repeat([]byte("x"), maxBundle+1))
	if se, ok := err.(*api.StatusError); !ok || se.Code != http.StatusRequestEntityTooLarge || ab.got != nil {
		t.Fatalf("oversize bundle: %v (backend got %d bytes)", err, len(ab.got))
	}

	// A backend without administration says so.
	plain := httptest.NewServer(NewRouter(&fakeBackend{}))
	defer plain.Close()
	_, err = api.NewClient(plain.URL, plain.Client()).Reload(ctx, "web")
	if se, ok := err.(*api.StatusError); !ok || se.Code != http.StatusNotImplemented {
		t.Fatalf("reload without admin: %v", err)
	}
}
