package schema

import (
	"fmt"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/zclconf/go-cty/cty"
)

// Spec returns the hcldec specification of the schema. Decoding with it
// rejects unknown attributes and blocks, missing required ones and values
// of the wrong type, with diagnostics at their source ranges; durations are
// checked with time.ParseDuration at the attribute's expression. The
// schema must be valid (Validate).
func (s *Schema) Spec() hcldec.Spec {
	spec := make(hcldec.ObjectSpec, len(s.Attributes)+len(s.Blocks))
	for _, a := range s.Attributes {
		spec[a.Name] = attrSpec(a)
	}
	for _, b := range s.Blocks {
		nested := b.Body.Spec()
		switch b.Nesting {
		case NestingList:
			spec[b.Name] = &hcldec.BlockListSpec{
				TypeName: b.Name,
				Nested:   nested,
				MinItems: b.MinItems,
				MaxItems: b.MaxItems,
			}
		default:
			spec[b.Name] = &hcldec.BlockSpec{
				TypeName: b.Name,
				Nested:   nested,
				Required: b.Required,
			}
		}
	}
	return spec
}

func attrSpec(a Attribute) hcldec.Spec {
	var spec hcldec.Spec = &hcldec.AttrSpec{
		Name:     a.Name,
		Type:     a.Type.CtyType(),
		Required: a.Required,
	}
	if a.Type == TypeDuration {
		spec = &hcldec.ValidateSpec{Wrapped: spec, Func: validateDuration(a.Name)}
	}
	if def, err := a.DefaultValue(); err == nil && !def.IsNull() {
		spec = &hcldec.DefaultSpec{Primary: spec, Default: &hcldec.LiteralSpec{Value: def}}
	}
	return spec
}

// validateDuration's diagnostics get the attribute expression's range from
// hcldec.ValidateSpec, so the error points at the bad value.
func validateDuration(name string) func(cty.Value) hcl.Diagnostics {
	return func(v cty.Value) hcl.Diagnostics {
		if v.IsNull() || !v.IsKnown() {
			return nil
		}
		if _, err := time.ParseDuration(v.AsString()); err != nil {
			return hcl.Diagnostics{{
				Severity: hcl.DiagError,
				Summary:  "Invalid duration",
				Detail:   fmt.Sprintf("The %s argument must be a duration such as \"700ms\" or \"1m30s\": %s.", name, err),
			}}
		}
		return nil
	}
}

// Decode decodes a plugin block's body against the schema: the host's side
// of configuration. The value conforms to ImpliedType, with defaults
// applied; it is what MarshalValue sends to the plugin.
func (s *Schema) Decode(body hcl.Body, ctx *hcl.EvalContext) (cty.Value, hcl.Diagnostics) {
	return hcldec.Decode(body, s.Spec(), ctx)
}
