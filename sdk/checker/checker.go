// Package checker is the SDK for checker plugins: a checker reports
// whether something the module depends on is up.
//
// A partner implements Checker and serves it:
//
//	func main() { checker.Serve(filecheck.New) }
//
// The host calls Check on the checker's interval (10 s by default) with a
// deadline; the result becomes the module's checker.<name> resource and
// drives the checker's action (restart, stopstart, wait, ...).
package checker

import (
	"context"
	"fmt"
	"time"

	"github.com/halo-ha/halo/sdk/base"
	pluginv1 "github.com/halo-ha/halo/sdk/proto/halo/plugin/v1"
)

// PluginName is the Checker service's name in go-plugin plugin sets.
const PluginName = string(base.KindChecker)

// Checker is what a checker plugin implements. The SDK makes one value per
// instance (per checker block in a module) with the factory given to
// Serve, configures it, then calls Check.
type Checker interface {
	base.Plugin
	// Check runs the check once. It must return promptly when ctx ends:
	// the host calls with a deadline and treats a late answer as unknown.
	// Calls may overlap (the host does not wait for one to finish before
	// the next interval, and may run a check on demand), so Check must be
	// safe for concurrent use. Return an error only when the check could
	// not be performed; the host reads that as StatusUnknown.
	Check(ctx context.Context) (Result, error)
}

// Status is a check's outcome.
type Status int

const (
	// StatusUnknown: the check could not tell. The zero value, so a
	// forgotten status is never read as up.
	StatusUnknown Status = iota
	StatusUp
	StatusDown
)

func (s Status) String() string {
	switch s {
	case StatusUp:
		return "up"
	case StatusDown:
		return "down"
	case StatusUnknown:
		return "unknown"
	default:
		return fmt.Sprintf("status(%d)", int(s))
	}
}

// Result is one check's outcome.
type Result struct {
	Status Status
	// Message is one line for humans: what was seen ("file is 93s old,
	// max 60s"), shown by `halo status -v` and in the module's log.
	Message string
	// Elapsed is how long the check took. The SDK measures it when the
	// checker leaves it zero.
	Elapsed time.Duration
}

// Up returns an up result with a formatted message.
func Up(format string, args ...any) Result {
	return Result{Status: StatusUp, Message: fmt.Sprintf(format, args...)}
}

// Down returns a down result with a formatted message.
func Down(format string, args ...any) Result {
	return Result{Status: StatusDown, Message: fmt.Sprintf(format, args...)}
}

// Unknown returns an unknown result with a formatted message.
func Unknown(format string, args ...any) Result {
	return Result{Status: StatusUnknown, Message: fmt.Sprintf(format, args...)}
}

func (r Result) toProto() *pluginv1.CheckResponse {
	st := pluginv1.CheckStatus_CHECK_STATUS_UNKNOWN
	switch r.Status {
	case StatusUp:
		st = pluginv1.CheckStatus_CHECK_STATUS_UP
	case StatusDown:
		st = pluginv1.CheckStatus_CHECK_STATUS_DOWN
	}
	return &pluginv1.CheckResponse{Status: st, Message: r.Message, ElapsedNanos: int64(r.Elapsed)}
}

func resultFromProto(p *pluginv1.CheckResponse) (Result, error) {
	r := Result{Message: p.GetMessage(), Elapsed: time.Duration(p.GetElapsedNanos())}
	switch p.GetStatus() {
	case pluginv1.CheckStatus_CHECK_STATUS_UP:
		r.Status = StatusUp
	case pluginv1.CheckStatus_CHECK_STATUS_DOWN:
		r.Status = StatusDown
	case pluginv1.CheckStatus_CHECK_STATUS_UNKNOWN:
		r.Status = StatusUnknown
	default:
		return Result{}, fmt.Errorf("plugin returned status %s", p.GetStatus())
	}
	return r, nil
}
