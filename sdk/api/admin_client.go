package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
)

// InstallBundle sends a module bundle (<name>.halo) to the agent, which
// validates it and installs it, replacing the installed module of that
// name only if the running one can take its changes live.
func (c *Client) InstallBundle(ctx context.Context, module string, bundle []byte) (AdminResult, error) {
	var r AdminResult
	path := "/v1/modules/" + url.PathEscape(module) + "/bundle"
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, c.base+path, bytes.NewReader(bundle))
	if err != nil {
		return r, fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Content-Type", "application/gzip")
	if c.origin != "" {
		req.Header.Set(OriginHeader, c.origin)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return r, fmt.Errorf("reach agent: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return r, decodeError(resp)
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return r, fmt.Errorf("decode PUT %s answer: %w", path, err)
	}
	return r, nil
}

// UninstallModule removes an installed module; the agent refuses while it
// runs on its node.
func (c *Client) UninstallModule(ctx context.Context, module string) (AdminResult, error) {
	var r AdminResult
	return r, c.do(ctx, http.MethodDelete, "/v1/modules/"+url.PathEscape(module), nil, &r)
}

// InstalledModules lists the modules installed on the agent's node with
// their configuration checksums.
func (c *Client) InstalledModules(ctx context.Context) ([]InstalledModule, error) {
	var ms []InstalledModule
	return ms, c.do(ctx, http.MethodGet, "/v1/config/modules", nil, &ms)
}

// Reload applies the module's configuration as it is on disk, when every
// change may be applied live.
func (c *Client) Reload(ctx context.Context, module string) (AdminResult, error) {
	var r AdminResult
	return r, c.do(ctx, http.MethodPost, "/v1/modules/"+url.PathEscape(module)+"/reload", nil, &r)
}
