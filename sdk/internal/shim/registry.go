// Package shim is the plugin-side machinery shared by the kind packages:
// the instance registry, the Base service, panic containment, logging and
// serving.
package shim

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/halo-ha/halo/sdk/base"
	"github.com/halo-ha/halo/sdk/schema"
)

// Registry holds a plugin process's instances, keyed by the host's
// instance IDs. One plugin process can serve many instances (the same
// checker in many modules), which keeps the process count independent of
// the module count.
type Registry[T base.Plugin] struct {
	newImpl func() T
	info    base.PluginInfo
	schema  *schema.Schema
	logger  hclog.Logger

	mu        sync.Mutex
	instances map[string]*entry[T]
}

type entry[T base.Plugin] struct {
	// mu serialises Configure and Close of one instance.
	mu         sync.Mutex
	impl       T
	configured atomic.Bool
}

// NewRegistry reads the plugin's Info and Schema from a fresh instance
// and validates them: a plugin with a malformed identity or schema must
// not start at all.
func NewRegistry[T base.Plugin](newImpl func() T, logger hclog.Logger) (*Registry[T], error) {
	if newImpl == nil {
		return nil, fmt.Errorf("serve plugin: nil factory")
	}
	proto := newImpl()
	info := proto.Info()
	if err := info.Validate(); err != nil {
		return nil, fmt.Errorf("serve plugin: %w", err)
	}
	s := proto.Schema()
	if s == nil {
		s = &schema.Schema{}
	}
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("serve plugin %s: invalid schema: %w", info.Name, err)
	}
	return &Registry[T]{
		newImpl:   newImpl,
		info:      info,
		schema:    s,
		logger:    logger.Named(info.Name),
		instances: make(map[string]*entry[T]),
	}, nil
}

// Info returns the plugin's identity.
func (r *Registry[T]) Info() base.PluginInfo { return r.info }

// Schema returns the plugin's validated schema.
func (r *Registry[T]) Schema() *schema.Schema { return r.schema }

// Logger returns the plugin's logger.
func (r *Registry[T]) Logger() hclog.Logger { return r.logger }

// Lookup returns a configured instance, or a NotFound status.
func (r *Registry[T]) Lookup(id string) (T, error) {
	r.mu.Lock()
	e := r.instances[id]
	r.mu.Unlock()
	if e == nil || !e.configured.Load() {
		var zero T
		return zero, status.Errorf(codes.NotFound, "instance %q is not configured", id)
	}
	return e.impl, nil
}

// Configure decodes and applies a configuration to an instance, creating
// it if needed. The returned error is the plugin's rejection (AttrErrors);
// a new instance whose first configuration is rejected is not kept.
func (r *Registry[T]) Configure(ctx context.Context, id string, data []byte, mod base.ModuleContext) error {
	value, err := r.schema.UnmarshalValue(data)
	if err != nil {
		return err
	}
	for {
		r.mu.Lock()
		e := r.instances[id]
		if e == nil {
			e = &entry[T]{impl: r.newImpl()}
			r.instances[id] = e
		}
		r.mu.Unlock()

		e.mu.Lock()
		r.mu.Lock()
		current := r.instances[id] == e
		r.mu.Unlock()
		if !current {
			// Dropped (rejected first configuration, or closed) while we
			// waited: start again with whatever is registered now.
			e.mu.Unlock()
			continue
		}
		cfg := &base.Config{
			Module: mod,
			Value:  value,
			Logger: r.logger.With("module", mod.Module, "instance", mod.Name),
		}
		err := Protect(r.logger, "Configure", func() error { return e.impl.Configure(ctx, cfg) })
		if err == nil {
			e.configured.Store(true)
		} else if !e.configured.Load() {
			r.mu.Lock()
			delete(r.instances, id)
			r.mu.Unlock()
		}
		e.mu.Unlock()
		return err
	}
}

// Close forgets an instance, and closes it when it implements io.Closer.
func (r *Registry[T]) Close(id string) error {
	r.mu.Lock()
	e := r.instances[id]
	delete(r.instances, id)
	r.mu.Unlock()
	if e == nil {
		return nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	closer, ok := any(e.impl).(io.Closer)
	if !ok {
		return nil
	}
	return Protect(r.logger, "Close", closer.Close)
}
