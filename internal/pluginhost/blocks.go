package pluginhost

import (
	"fmt"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"

	"github.com/halo-ha/halo/sdk/base"
	"github.com/halo-ha/halo/sdk/schema"
)

// HostProvided lists, per plugin kind, the attributes of a module block
// that halo decodes itself (internal/config) and hands to the plugin: an
// app plugin that declares an attribute of one of these names, with this
// type, receives halo's value in its configuration — the script plugin
// learns its scripts directory so. They are not among the plugin's own
// settings when its block is validated, whatever the plugin declares.
//
// For vip plugins the names are reserved the same way; the host fills
// them in once it runs VIP plugins.
var HostProvided = map[base.Kind]map[string]schema.Type{
	base.KindApp: {
		"scripts":       schema.TypeString, // absolute directory of the module's scripts
		"env":           schema.TypeMapOfString,
		"start_timeout": schema.TypeDuration,
		"stop_timeout":  schema.TypeDuration,
	},
	base.KindVIP: {
		"address":           schema.TypeString,
		"network":           schema.TypeString,
		"interface":         schema.TypeString,
		"announce_count":    schema.TypeNumber,
		"announce_interval": schema.TypeDuration,
	},
}

// withoutHostProvided returns the part of a plugin's schema that the
// plugin's block in a module file configures.
func withoutHostProvided(s *schema.Schema, kind base.Kind) *schema.Schema {
	provided := HostProvided[kind]
	if len(provided) == 0 {
		return s
	}
	own := &schema.Schema{Blocks: s.Blocks}
	for _, a := range s.Attributes {
		if _, ok := provided[a.Name]; !ok {
			own.Attributes = append(own.Attributes, a)
		}
	}
	return own
}

// withHostValues completes the decoded own settings with halo's values
// for the host-provided attributes the plugin declares, giving a value of
// the full schema's type.
func withHostValues(full *schema.Schema, kind base.Kind, own cty.Value, values map[string]cty.Value) (cty.Value, error) {
	attrs := map[string]cty.Value{}
	if !own.IsNull() && own.LengthInt() > 0 {
		attrs = own.AsValueMap()
	}
	for _, a := range full.Attributes {
		want, ok := HostProvided[kind][a.Name]
		if !ok {
			continue
		}
		if a.Type != want {
			return cty.NilVal, fmt.Errorf("the plugin declares %s as %s, but halo provides it as %s", a.Name, a.Type, want)
		}
		v, ok := values[a.Name]
		if !ok {
			v = cty.NullVal(a.Type.CtyType())
		}
		attrs[a.Name] = v
	}
	return cty.ObjectVal(attrs), nil
}

// decodeBlock decodes the plugin's part of a module block. Diagnostics
// carry the module file's positions.
func decodeBlock(s *schema.Schema, body hcl.Body) (cty.Value, hcl.Diagnostics) {
	if body == nil {
		body = hcl.EmptyBody()
	}
	return s.Decode(body, nil)
}

// rejection turns a plugin's ConfigError into diagnostics in the module
// file: at the attribute or nested block its path names in body, at what
// locate finds for the other paths (host-provided attributes), else at
// the block's header.
func rejection(s *schema.Schema, body hcl.Body, errs []*schema.AttrError, header hcl.Range,
	locate func(path string) (hcl.Range, bool)) hcl.Diagnostics {
	var diags hcl.Diagnostics
	for _, e := range errs {
		rng, ok := hcl.Range{}, false
		if body != nil {
			rng, ok = s.Range(body, e.Path)
		}
		if !ok && locate != nil && e.Path != "" {
			rng, ok = locate(e.Path)
		}
		if !ok {
			rng = header
		}
		detail := e.Err.Error()
		if e.Path != "" && !strings.HasPrefix(detail, e.Path+":") {
			detail = e.Path + ": " + detail
		}
		diags = append(diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Invalid plugin configuration",
			Detail:   detail,
			Subject:  rng.Ptr(),
		})
	}
	return diags
}
