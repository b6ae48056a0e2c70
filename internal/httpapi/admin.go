package httpapi

import (
	"context"
	"fmt"
	"io"
	"net/http"

	"github.com/gorilla/mux"

	"github.com/halo-ha/halo/sdk/api"
)

// AdminBackend is the module administration a Backend may offer: bundles
// installed and uninstalled, module files reloaded.
type AdminBackend interface {
	InstallBundle(ctx context.Context, module string, bundle []byte) (api.AdminResult, error)
	UninstallModule(ctx context.Context, module string) (api.AdminResult, error)
	Reload(ctx context.Context, module string) (api.AdminResult, error)
	InstalledModules() ([]api.InstalledModule, error)
}

// maxBundle bounds a bundle upload. Bundles are compressed text; the
// bundle reader bounds what they expand to.
const maxBundle = 8 << 20

func (s *server) admin() (AdminBackend, error) {
	ab, ok := s.b.(AdminBackend)
	if !ok {
		return nil, &Error{http.StatusNotImplemented, "this agent does not manage modules"}
	}
	return ab, nil
}

func (s *server) installBundle(w http.ResponseWriter, r *http.Request) error {
	ab, err := s.admin()
	if err != nil {
		return err
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBundle+1))
	if err != nil {
		return BadRequest("read bundle: %v", err)
	}
	if len(body) > maxBundle {
		return &Error{http.StatusRequestEntityTooLarge, fmt.Sprintf("bundle larger than %d bytes", maxBundle)}
	}
	res, err := ab.InstallBundle(r.Context(), mux.Vars(r)["module"], body)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

func (s *server) uninstallModule(w http.ResponseWriter, r *http.Request) error {
	ab, err := s.admin()
	if err != nil {
		return err
	}
	res, err := ab.UninstallModule(r.Context(), mux.Vars(r)["module"])
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

func (s *server) reloadModule(w http.ResponseWriter, r *http.Request) error {
	ab, err := s.admin()
	if err != nil {
		return err
	}
	res, err := ab.Reload(r.Context(), mux.Vars(r)["module"])
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

func (s *server) installedModules(w http.ResponseWriter, _ *http.Request) error {
	ab, err := s.admin()
	if err != nil {
		return err
	}
	ms, err := ab.InstalledModules()
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, ms)
	return nil
}
