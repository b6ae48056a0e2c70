// Package rpc holds what the SDK's client and server shims share about
// gRPC: deadlines and the mapping between Go errors and gRPC statuses, so
// that errors.Is(err, context.DeadlineExceeded) holds on the host when the
// plugin ran out of time.
package rpc

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// DefaultTimeout bounds a host→plugin call whose context has no deadline:
// a stopped or wedged plugin must never hang the host.
const DefaultTimeout = 30 * time.Second

var (
	// ErrUnknownInstance: the plugin has no instance by that ID (never
	// configured, closed, or the plugin restarted).
	ErrUnknownInstance = errors.New("unknown plugin instance")
	// ErrUnimplemented: the plugin does not serve the called service,
	// usually because it is of another kind.
	ErrUnimplemented = errors.New("not implemented by the plugin")
)

// WithDefaultTimeout returns ctx unchanged when it has a deadline, and
// otherwise a child bounded by DefaultTimeout.
func WithDefaultTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, DefaultTimeout)
}

// FromStatus converts an error returned by a gRPC call into a Go error
// naming the failed action and wrapping the matching sentinel.
func FromStatus(action string, err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("%s: %w", action, err)
	}
	switch st.Code() {
	case codes.DeadlineExceeded:
		return fmt.Errorf("%s: %w: %s", action, context.DeadlineExceeded, st.Message())
	case codes.Canceled:
		return fmt.Errorf("%s: %w: %s", action, context.Canceled, st.Message())
	case codes.NotFound:
		return fmt.Errorf("%s: %w: %s", action, ErrUnknownInstance, st.Message())
	case codes.Unimplemented:
		return fmt.Errorf("%s: %w: %s", action, ErrUnimplemented, st.Message())
	default:
		return fmt.Errorf("%s: %w", action, err)
	}
}

// ToStatus converts a plugin implementation's error into a gRPC status for
// the host. A call whose context ended reports that, whatever the
// implementation returned, because that is what the host needs to know.
func ToStatus(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return status.FromContextError(ctx.Err()).Err()
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, ErrUnknownInstance):
		return status.Error(codes.NotFound, err.Error())
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Error(codes.Unknown, err.Error())
}
