// Package base holds what every halo plugin shares whatever its kind: the
// handshake, the API version, the plugin's identity, its configuration,
// and the Base service's go-plugin glue and host-side client.
//
// A partner implements one kind (see packages checker, vip and app); each
// embeds Plugin. The host uses Client, or package host which ties launch,
// version negotiation and dispensing together.
package base

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"github.com/zclconf/go-cty/cty"

	"github.com/halo-ha/halo/sdk/internal/rpc"
	pluginv1 "github.com/halo-ha/halo/sdk/proto/halo/plugin/v1"
	"github.com/halo-ha/halo/sdk/schema"
)

// APIVersion is the plugin API version this SDK speaks. It is go-plugin's
// protocol version: host and plugin agree on it during the handshake
// (VersionedPlugins), and Info reports it again so the host can refuse a
// plugin whose two answers differ.
const APIVersion = 1

// SupportedAPIVersions lists the API versions this SDK can serve and use,
// newest last. When API version 2 exists, a plugin built with an SDK that
// supports both serves whichever the host asks for.
var SupportedAPIVersions = []int{1}

// Handshake is the go-plugin handshake shared by halo and its plugins. The
// magic cookie is not security (AutoMTLS is): it only stops a plugin binary
// run by hand from waiting forever for a host.
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  APIVersion,
	MagicCookieKey:   "HALO_PLUGIN_MAGIC_COOKIE",
	MagicCookieValue: "5f1c2b7e9d3a4e60b8c1f0a27d6e9b43",
}

// DefaultCallTimeout bounds every host→plugin call made with a context
// that has no deadline.
const DefaultCallTimeout = rpc.DefaultTimeout

// LogLevelEnv names the environment variable the host sets to choose a
// plugin's log level (trace, debug, info, warn, error); info by default.
const LogLevelEnv = "HALO_PLUGIN_LOG_LEVEL"

var (
	// ErrUnknownInstance is returned when the host calls an instance the
	// plugin does not have: never configured, closed, or lost in a plugin
	// restart. The host answers by calling SetConfig again.
	ErrUnknownInstance = rpc.ErrUnknownInstance
	// ErrUnimplemented is returned when the plugin does not serve the
	// called service, usually because it is of another kind.
	ErrUnimplemented = rpc.ErrUnimplemented
)

// Kind is what a plugin does.
type Kind string

const (
	KindChecker Kind = "checker"
	KindVIP     Kind = "vip"
	KindApp     Kind = "app"
)

// ToProto returns the wire form of the kind.
func (k Kind) ToProto() pluginv1.PluginKind {
	switch k {
	case KindChecker:
		return pluginv1.PluginKind_PLUGIN_KIND_CHECKER
	case KindVIP:
		return pluginv1.PluginKind_PLUGIN_KIND_VIP
	case KindApp:
		return pluginv1.PluginKind_PLUGIN_KIND_APP
	default:
		return pluginv1.PluginKind_PLUGIN_KIND_UNSPECIFIED
	}
}

// KindFromProto returns the kind named on the wire, or "" for an unknown one.
func KindFromProto(k pluginv1.PluginKind) Kind {
	switch k {
	case pluginv1.PluginKind_PLUGIN_KIND_CHECKER:
		return KindChecker
	case pluginv1.PluginKind_PLUGIN_KIND_VIP:
		return KindVIP
	case pluginv1.PluginKind_PLUGIN_KIND_APP:
		return KindApp
	default:
		return ""
	}
}

// PluginInfo is how a partner names and versions a plugin.
type PluginInfo struct {
	// Name is how module files refer to the plugin; it is also the binary's
	// file name in the plugin directory. Lower case letters, digits, '-'
	// and '_', starting with a letter.
	Name string
	// Version is the plugin's own semantic version ("1.4.0"), bumped by its
	// author; it is not the API version.
	Version string
	// Description is one line for `halo plugin list`.
	Description string
}

// Validate checks the name and the version's syntax.
func (p PluginInfo) Validate() error {
	var errs []error
	if !nameRE.MatchString(p.Name) {
		errs = append(errs, fmt.Errorf("plugin name %q: want lower case letters, digits, '-' or '_', starting with a letter", p.Name))
	}
	if !semverRE.MatchString(p.Version) {
		errs = append(errs, fmt.Errorf("plugin version %q: want a semantic version such as 1.4.0", p.Version))
	}
	if strings.ContainsAny(p.Description, "\r\n") {
		errs = append(errs, errors.New("plugin description: want one line"))
	}
	return errors.Join(errs...)
}

var (
	nameRE = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,63}$`)
	// From semver.org, without a leading "v".
	semverRE = regexp.MustCompile(`^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)` +
		`(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?` +
		`(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$`)
)

// Plugin is what every plugin implements, whatever its kind. Kind packages
// embed it in their own interface.
//
// The SDK creates one value per instance with the factory given to Serve,
// and one more to read Info and Schema, which must therefore not depend on
// configuration.
type Plugin interface {
	// Info names and versions the plugin.
	Info() PluginInfo
	// Schema declares the attributes and blocks of the plugin's block in a
	// module file. The host validates the block against it, so Configure
	// only ever sees well-typed values with defaults applied.
	Schema() *schema.Schema
	// Configure applies a configuration. It may be called again to
	// reconfigure a running instance (`halo reload`); it must then leave
	// the previous configuration in force when it returns an error, and be
	// safe against concurrent calls of the kind's methods. Return
	// schema.Errorf errors, joined with errors.Join, to point the host at
	// the attributes at fault.
	Configure(ctx context.Context, cfg *Config) error
}

// ModuleContext tells an instance where it runs.
type ModuleContext struct {
	// Module is the module's name.
	Module string
	// Node is this node's name in the cluster.
	Node string
	// StateDir is a directory reserved for the instance, kept across
	// restarts of the plugin and the agent.
	StateDir string
	// Name is the instance's name in the module (a checker's label).
	Name string
}

func (m ModuleContext) toProto() *pluginv1.ModuleContext {
	return &pluginv1.ModuleContext{Module: m.Module, Node: m.Node, StateDir: m.StateDir, Name: m.Name}
}

// ModuleContextFromProto converts the wire form.
func ModuleContextFromProto(p *pluginv1.ModuleContext) ModuleContext {
	return ModuleContext{Module: p.GetModule(), Node: p.GetNode(), StateDir: p.GetStateDir(), Name: p.GetName()}
}

// Config is a configuration handed to Configure.
type Config struct {
	Module ModuleContext
	// Value is the decoded block: an object of the schema's implied type,
	// defaults applied. Decode is the convenient way to read it.
	Value cty.Value
	// Logger writes to the plugin's stderr, which the host collects into
	// its own log; it is named after the module and instance. Plugins must
	// never write to stdout: go-plugin's handshake uses it.
	Logger hclog.Logger
}

// Decode stores the configuration in the struct target points to, by hcl
// tags (see schema.DecodeValue).
func (c *Config) Decode(target any) error {
	return schema.DecodeValue(c.Value, target)
}

// Info is what the host learns from a plugin's Info call.
type Info struct {
	Name        string
	Kind        Kind
	Version     string
	Description string
	// APIVersion is the API version of this session.
	APIVersion int
	// SupportedAPIVersions lists every API version the binary can serve.
	SupportedAPIVersions []int
}

// Validate checks what a host must be able to rely on in an Info answer.
func (i Info) Validate() error {
	errs := []error{PluginInfo{Name: i.Name, Version: i.Version, Description: i.Description}.Validate()}
	if i.Kind == "" {
		errs = append(errs, errors.New("plugin kind is missing or unknown"))
	}
	found := false
	for _, v := range i.SupportedAPIVersions {
		found = found || v == i.APIVersion
	}
	if !found {
		errs = append(errs, fmt.Errorf("API version %d is not among the supported versions %v", i.APIVersion, i.SupportedAPIVersions))
	}
	return errors.Join(errs...)
}

// ConfigError is returned by Client.SetConfig when the plugin rejects a
// configuration; the host reports each error at its attribute with
// schema.Schema.Diagnostics.
type ConfigError struct {
	Errors []*schema.AttrError
}

func (e *ConfigError) Error() string {
	msgs := make([]string, len(e.Errors))
	for i, ae := range e.Errors {
		msgs[i] = ae.Error()
	}
	return "configuration rejected: " + strings.Join(msgs, "; ")
}
