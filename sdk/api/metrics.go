package api

import (
	"context"
	"fmt"
	"io"
	"net/http"
)

// maxMetrics bounds the exposition read: a few hundred modules' series
// fit well below it.
const maxMetrics = 32 << 20

// Metrics returns the agent's GET /metrics answer in the Prometheus text
// exposition format.
func (c *Client) Metrics(ctx context.Context) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/metrics", nil)
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	// Ask for text: the agent would otherwise choose by content negotiation.
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	if c.origin != "" {
		req.Header.Set(OriginHeader, c.origin)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("reach agent: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return nil, decodeError(resp)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxMetrics+1))
	if err != nil {
		return nil, fmt.Errorf("read metrics: %w", err)
	}
	if len(b) > maxMetrics {
		return nil, fmt.Errorf("metrics answer larger than %d bytes", maxMetrics)
	}
	return b, nil
}
