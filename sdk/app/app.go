// Package app is the SDK for application handler plugins: an app plugin
// runs the module's scripts (start_prim, stop_prim, ...) when the state
// machine asks, streaming their output to the module's log.
//
//	func main() { app.Serve(myapp.New) }
package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/halo-ha/halo/sdk/base"
)

// PluginName is the App service's name in go-plugin plugin sets.
const PluginName = string(base.KindApp)

// App is what an app plugin implements, one value per instance (per
// module). Runs of different scripts may overlap: Run must be safe for
// concurrent use.
type App interface {
	base.Plugin
	// Run runs one script to its end and returns its exit status, -1 when
	// it has none (killed by a signal, never started; return an error
	// saying why in that case). Output goes to out, line by line.
	//
	// Run must end the script and return promptly when ctx ends: ctx
	// carries the run's timeout (reported to the host as a timeout) and is
	// cancelled by a forced Stop or when the host gives up. run.Stopping
	// is closed by a graceful Stop: end the script politely (SIGTERM to
	// its process group). RunCommand does all of this for an exec.Cmd.
	Run(ctx context.Context, run Run, out Output) (exitCode int, err error)
}

var (
	// ErrRunInProgress: Run was called with the ID of a run in progress.
	ErrRunInProgress = errors.New("a run with this ID is in progress")
	// ErrNoSuchRun: Stop named a run that is not in progress.
	ErrNoSuchRun = errors.New("no run in progress with this ID")
)

// Run describes one script run.
type Run struct {
	// ID names the run for the host's Stop; unique among the instance's
	// runs in progress.
	ID string
	// Script is the script's name in the module ("start_prim").
	Script string
	// Args are the script's arguments: current state, next state, action.
	Args Args
	// Env holds the variables to add to the script's environment (the
	// module file's variables).
	Env map[string]string
	// Timeout bounds the run (already applied to Run's ctx); 0 means no
	// bound other than the host's deadline.
	Timeout time.Duration
	// Force asks for the forced variant of a stop script (the second pass
	// after a graceful stop timed out).
	Force bool
	// Stopping is closed when the host asks for a graceful stop of this
	// run. It is set by the SDK before Run is called, so a stop that comes
	// before the script has started is not lost. A forced stop cancels
	// Run's ctx instead (and closes Stopping too).
	Stopping <-chan struct{}
}

// Args are the arguments every script gets.
type Args struct {
	Current string // the module's state now ("SECOND")
	Next    string // the state being entered ("ALONE")
	Action  string // what caused the transition ("failover")
}

// Slice returns the arguments in the order scripts receive them.
func (a Args) Slice() []string { return []string{a.Current, a.Next, a.Action} }

// Output receives a run's output. The SDK splits it into lines and streams
// them to the host as they come; either writer may be handed to
// exec.Cmd directly. Writes after Run returned are discarded.
type Output struct {
	Stdout io.Writer
	Stderr io.Writer
}

// Stream says which output a line came from.
type Stream int

const (
	Stdout Stream = iota + 1
	Stderr
)

func (s Stream) String() string {
	switch s {
	case Stdout:
		return "stdout"
	case Stderr:
		return "stderr"
	default:
		return fmt.Sprintf("stream(%d)", int(s))
	}
}

// Line is one line of a run's output, without its newline.
type Line struct {
	Stream Stream
	Text   string
}

// Outcome is how a run ended.
type Outcome int

const (
	// OutcomeFailed is the zero value, so a forgotten outcome is never
	// read as success.
	OutcomeFailed Outcome = iota
	OutcomeOK
	OutcomeTimeout
)

func (o Outcome) String() string {
	switch o {
	case OutcomeOK:
		return "ok"
	case OutcomeFailed:
		return "failed"
	case OutcomeTimeout:
		return "timeout"
	default:
		return fmt.Sprintf("outcome(%d)", int(o))
	}
}

// Exit is how a run ended, as the host sees it.
type Exit struct {
	Outcome Outcome
	// ExitCode is the script's exit status, -1 when it has none.
	ExitCode int
	// Message is one line for humans ("exit status 3", "timed out after 30s").
	Message string
	Elapsed time.Duration
}
