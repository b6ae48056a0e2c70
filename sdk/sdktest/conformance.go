package sdktest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"testing"
	"time"

	"github.com/halo-ha/halo/sdk/base"
	"github.com/halo-ha/halo/sdk/schema"
)

// Option adjusts a conformance suite.
type Option func(*options)

type options struct {
	badConfigs []string
	slack      time.Duration
}

// WithBadConfig adds a configuration the plugin must reject: well-typed
// for the schema (the host would accept it) but wrong for the plugin, such
// as a negative max_age. The suite checks SetConfig returns a
// *base.ConfigError for it and that a rejected reconfiguration leaves the
// instance working. Without any, that check is skipped, and reported so.
func WithBadConfig(src string) Option {
	return func(o *options) { o.badConfigs = append(o.badConfigs, src) }
}

// WithDeadlineSlack sets how long past a context's end a call may take to
// return (default 250ms): generous enough for a loaded CI machine, far
// shorter than any real probe timeout.
func WithDeadlineSlack(d time.Duration) Option {
	return func(o *options) { o.slack = d }
}

func newOptions(opts []Option) *options {
	o := &options{slack: 250 * time.Millisecond}
	for _, opt := range opts {
		opt(o)
	}
	return o
}

// stdoutGuard captures os.Stdout while a suite runs: a plugin's stdout is
// go-plugin's handshake channel, so a single stray byte is a bug. The
// suite's subtests must not run in parallel with other tests writing to
// os.Stdout.
type stdoutGuard struct {
	orig *os.File
	w    *os.File
	done chan []byte
}

func guardStdout(t *testing.T) *stdoutGuard {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatalf("capture stdout: %v", err)
	}
	g := &stdoutGuard{orig: os.Stdout, w: w, done: make(chan []byte, 1)}
	go func() {
		var buf bytes.Buffer
		_, _ = io.Copy(&buf, r)
		_ = r.Close()
		g.done <- buf.Bytes()
	}()
	os.Stdout = w
	t.Cleanup(func() { g.stop() })
	return g
}

// stop restores os.Stdout and returns what was written meanwhile.
func (g *stdoutGuard) stop() []byte {
	if g.w == nil {
		return nil
	}
	os.Stdout = g.orig
	_ = g.w.Close()
	g.w = nil
	return <-g.done
}

// checkIdentity checks Info and Schema as the host will see them.
func checkIdentity(t *testing.T, p *Plugin, impl base.Plugin, kind base.Kind, cfg string) {
	t.Run("info", func(t *testing.T) {
		// The client already validated name, semantic version and API
		// version list; here: does it suit this SDK and match the code?
		if p.Info.Kind != kind {
			t.Errorf("kind %q, want %q", p.Info.Kind, kind)
		}
		if p.Info.APIVersion != base.APIVersion {
			t.Errorf("API version %d, want %d", p.Info.APIVersion, base.APIVersion)
		}
		want := impl.Info()
		if p.Info.Name != want.Name || p.Info.Version != want.Version {
			t.Errorf("wire info %s %s, implementation says %s %s", p.Info.Name, p.Info.Version, want.Name, want.Version)
		}
		if again := impl.Info(); again != want {
			t.Errorf("Info changed between calls: %+v then %+v", want, again)
		}
	})
	t.Run("schema", func(t *testing.T) {
		local := impl.Schema()
		if local == nil {
			local = &schema.Schema{}
		}
		if !p.Schema.Equal(local) {
			t.Errorf("schema changed on the wire:\n got %+v\nwant %+v", p.Schema, local)
		}
		if _, diags := decodeConfig(p.Schema, cfg); diags.HasErrors() {
			t.Errorf("the sample configuration does not decode with the plugin's schema: %s", diags.Error())
		}
	})
}

// checkBadConfigs checks rejected configurations: refused on a new
// instance (which then does not exist), and refused on a configured one
// without breaking it; alive reports whether an instance still works.
func checkBadConfigs(t *testing.T, p *Plugin, o *options, good string, alive func(t *testing.T, id string)) {
	t.Run("rejects bad config", func(t *testing.T) {
		if len(o.badConfigs) == 0 {
			t.Skip("no bad configuration given (sdktest.WithBadConfig): the plugin's own validation is untested")
		}
		for i, bad := range o.badConfigs {
			value, diags := decodeConfig(p.Schema, bad)
			if diags.HasErrors() {
				t.Errorf("bad config %d is already refused by the schema, so it does not test Configure: %s", i, diags.Error())
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			fresh := "bad-new-" + string(rune('a'+i))
			err := p.Base.SetConfig(ctx, fresh, value, TestModule(t, fresh))
			cancel()
			var cerr *base.ConfigError
			if !errors.As(err, &cerr) {
				t.Errorf("bad config %d: SetConfig = %v, want a *base.ConfigError", i, err)
				continue
			}
			for _, ae := range cerr.Errors {
				if err := oneLine(ae.Err.Error()); err != nil {
					t.Errorf("bad config %d: %v", i, err)
				}
			}

			id := "bad-reconfigure-" + string(rune('a'+i))
			if err := p.Configure(t, id, good); err != nil {
				t.Fatalf("configure: %v", err)
			}
			ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
			err = p.Base.SetConfig(ctx, id, value, TestModule(t, id))
			cancel()
			if !errors.As(err, &cerr) {
				t.Errorf("bad config %d on a configured instance: SetConfig = %v, want a *base.ConfigError", i, err)
			}
			alive(t, id)
		}
	})
}

// checkPrompt fails when call does not return within d + slack.
func checkPrompt(t *testing.T, what string, d, slack time.Duration, call func(ctx context.Context)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if d == 0 {
		cancel()
	}
	done := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(done)
		call(ctx)
	}()
	select {
	case <-done:
	case <-time.After(d + slack):
		t.Errorf("%s: still running %s after a %s deadline", what, time.Since(start).Round(time.Millisecond), d)
		<-done // do not leave the call running into other subtests
	}
}

func checkNoStdout(t *testing.T, g *stdoutGuard) {
	t.Run("no stdout", func(t *testing.T) {
		if out := g.stop(); len(out) > 0 {
			t.Errorf("the plugin wrote %d bytes to stdout (go-plugin's handshake channel; log with the hclog logger): %q", len(out), truncate(out, 200))
		}
	})
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}
