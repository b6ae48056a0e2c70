package agent

import (
	"context"
	"net/http"
	"regexp"

	"github.com/halo-ha/halo/sdk/api"
)

// defaultOrigin is the origin of a command whose request does not say who
// sent it.
const defaultOrigin = "api"

// originRE bounds what a client may declare as its origin: it lands in the
// event log.
var originRE = regexp.MustCompile(`^[a-z][a-z0-9-]{0,31}$`)

type originKey struct{}

// withOrigin passes the origin a client declares in api.OriginHeader
// ("cli" for the halo command) to the handlers, through the request's
// context, so that commands are logged as "<command> from <origin>".
func withOrigin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if o := req.Header.Get(api.OriginHeader); originRE.MatchString(o) {
			req = req.WithContext(context.WithValue(req.Context(), originKey{}, o))
		}
		next.ServeHTTP(w, req)
	})
}

// originOf returns the origin withOrigin found for the request of ctx.
func originOf(ctx context.Context) string {
	if o, ok := ctx.Value(originKey{}).(string); ok {
		return o
	}
	return defaultOrigin
}
