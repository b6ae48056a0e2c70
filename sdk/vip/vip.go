// Package vip is the SDK for virtual address plugins: a VIP plugin puts an
// address on this node when the module becomes primary, announces it, and
// removes it (resetting the connections that used it) when the module
// leaves.
//
//	func main() { vip.Serve(myvip.New) }
package vip

import (
	"context"

	"github.com/halo-ha/halo/sdk/base"
)

// PluginName is the VIP service's name in go-plugin plugin sets.
const PluginName = string(base.KindVIP)

// VIP is what a VIP plugin implements, one value per instance (per vip
// block in a module). Acquire and Release must be idempotent: the host
// repeats them after a restart without knowing what was done before. The
// address must outlive the plugin process (a plugin restart must not drop
// a primary's address), so an io.Closer implementation must not remove it.
// All methods must return promptly when ctx ends, and be safe for
// concurrent use (the host's `ip` checker calls Status while the agent
// acquires or releases).
type VIP interface {
	base.Plugin
	// Acquire adds the address (if absent) and announces it.
	Acquire(ctx context.Context) error
	// Release removes the address (if present).
	Release(ctx context.Context, opts ReleaseOptions) error
	// Status reports what this node sees of the address.
	Status(ctx context.Context) (Status, error)
	// Announce sends a gratuitous ARP (IPv4) or an unsolicited neighbour
	// advertisement (IPv6) now; the host calls it again after Acquire to
	// repeat the announcement.
	Announce(ctx context.Context) error
}

// ReleaseOptions says how to release.
type ReleaseOptions struct {
	// ResetConnections: reset the TCP connections that used the address,
	// so clients reconnect to the new primary at once instead of waiting
	// for their own timeouts.
	ResetConnections bool
}

// Status is what a node sees of its address.
type Status struct {
	// Present: the address is configured on this node.
	Present bool
	// Duplicated: another host answers for the address (an ARP or DAD
	// conflict), a split-brain symptom.
	Duplicated bool
	// InterfaceUp: the interface that carries the address is up.
	InterfaceUp bool
	// Message is one line for humans.
	Message string
}
