// Package schema describes the HCL configuration a halo plugin accepts, and
// carries it between the host and the plugin.
//
// The plugin declares a Schema. The host fetches it over the Base service,
// turns it into an hcldec.Spec (Spec) and decodes the module file's plugin
// block itself (Decode), so every error carries the file:line:column of the
// module file; the plugin never sees HCL. The decoded value travels as JSON
// (MarshalValue, UnmarshalValue) and the plugin decodes it into its own
// struct with hcl tags (DecodeValue).
package schema

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
	"github.com/zclconf/go-cty/cty/gocty"
)

// Schema is the body of a plugin's HCL block.
type Schema struct {
	Attributes []Attribute
	Blocks     []Block
}

// Type is an attribute's type. The zero value is invalid so that a
// forgotten Type is caught by Validate rather than read as a string.
type Type int

const (
	TypeInvalid Type = iota
	TypeString
	TypeNumber
	TypeBool
	TypeListOfString
	TypeMapOfString
	// TypeDuration is a string that time.ParseDuration accepts ("700ms").
	// It decodes into a time.Duration field.
	TypeDuration
)

// String returns the type as HCL users write it.
func (t Type) String() string {
	switch t {
	case TypeString:
		return "string"
	case TypeNumber:
		return "number"
	case TypeBool:
		return "bool"
	case TypeListOfString:
		return "list(string)"
	case TypeMapOfString:
		return "map(string)"
	case TypeDuration:
		return "duration"
	default:
		return fmt.Sprintf("invalid type %d", int(t))
	}
}

// CtyType is the type the attribute's value has once decoded. A duration
// is a string until the plugin decodes it.
func (t Type) CtyType() cty.Type {
	switch t {
	case TypeString, TypeDuration:
		return cty.String
	case TypeNumber:
		return cty.Number
	case TypeBool:
		return cty.Bool
	case TypeListOfString:
		return cty.List(cty.String)
	case TypeMapOfString:
		return cty.Map(cty.String)
	default:
		return cty.NilType
	}
}

// Attribute is one attribute of a block body.
type Attribute struct {
	Name     string
	Type     Type
	Required bool
	// Default is used when the attribute is absent. It is a Go value of the
	// attribute's type (string; any integer or float; bool; []string;
	// map[string]string; time.Duration or a duration string) or a cty.Value.
	// Nil means no default: an absent optional attribute is null and
	// decodes into the field's zero value.
	Default     any
	Description string
}

// Nesting says how many times a nested block may appear.
type Nesting int

const (
	// NestingSingle: at most one block (exactly one when Required); it
	// decodes into a struct or a pointer to a struct (nil when absent).
	NestingSingle Nesting = iota
	// NestingList: any number of blocks within MinItems..MaxItems; they
	// decode into a slice of structs.
	NestingList
)

func (n Nesting) String() string {
	switch n {
	case NestingSingle:
		return "single"
	case NestingList:
		return "list"
	default:
		return fmt.Sprintf("invalid nesting %d", int(n))
	}
}

// Block is a nested, unlabelled block.
type Block struct {
	Name    string
	Nesting Nesting
	// Required applies to single blocks; list blocks use MinItems.
	Required bool
	MinItems int
	// MaxItems 0 means no limit.
	MaxItems    int
	Description string
	Body        Schema
}

// Validate reports every mistake in the schema: invalid or duplicate
// names, unset types, defaults of the wrong type, contradictions. The SDK
// refuses to serve a plugin whose schema does not validate.
func (s *Schema) Validate() error {
	return errors.Join(s.validate("")...)
}

func (s *Schema) validate(prefix string) []error {
	var errs []error
	seen := make(map[string]bool)
	name := func(kind, n string) {
		if !hclsyntax.ValidIdentifier(n) {
			errs = append(errs, fmt.Errorf("%s %q: not a valid HCL identifier", kind, prefix+n))
		}
		if seen[n] {
			errs = append(errs, fmt.Errorf("%s %q: declared twice", kind, prefix+n))
		}
		seen[n] = true
	}
	for _, a := range s.Attributes {
		name("attribute", a.Name)
		if a.Type.CtyType() == cty.NilType {
			errs = append(errs, fmt.Errorf("attribute %q: %s", prefix+a.Name, a.Type))
			continue
		}
		if a.Required && a.Default != nil {
			errs = append(errs, fmt.Errorf("attribute %q: required attributes take no default", prefix+a.Name))
		}
		if _, err := a.DefaultValue(); err != nil {
			errs = append(errs, fmt.Errorf("attribute %q: %w", prefix+a.Name, err))
		}
	}
	for _, b := range s.Blocks {
		name("block", b.Name)
		switch b.Nesting {
		case NestingSingle:
			if b.MinItems != 0 || b.MaxItems != 0 {
				errs = append(errs, fmt.Errorf("block %q: min/max items apply to list blocks only", prefix+b.Name))
			}
		case NestingList:
			if b.Required {
				errs = append(errs, fmt.Errorf("block %q: list blocks use MinItems, not Required", prefix+b.Name))
			}
			if b.MinItems < 0 || b.MaxItems < 0 || (b.MaxItems > 0 && b.MinItems > b.MaxItems) {
				errs = append(errs, fmt.Errorf("block %q: bad item bounds %d..%d", prefix+b.Name, b.MinItems, b.MaxItems))
			}
		default:
			errs = append(errs, fmt.Errorf("block %q: %s", prefix+b.Name, b.Nesting))
		}
		errs = append(errs, b.Body.validate(prefix+b.Name+".")...)
	}
	return errs
}

// DefaultValue returns the attribute's default as a value of its type, or
// a typed null when it has none.
func (a Attribute) DefaultValue() (cty.Value, error) {
	ty := a.Type.CtyType()
	if ty == cty.NilType {
		return cty.NilVal, fmt.Errorf("default for %s", a.Type)
	}
	if a.Default == nil {
		return cty.NullVal(ty), nil
	}
	var v cty.Value
	switch d := a.Default.(type) {
	case cty.Value:
		v = d
	case time.Duration:
		if a.Type != TypeDuration {
			return cty.NilVal, fmt.Errorf("default is a time.Duration, attribute is %s", a.Type)
		}
		v = cty.StringVal(d.String())
	default:
		goTy, err := gocty.ImpliedType(d)
		if err != nil {
			return cty.NilVal, fmt.Errorf("default %#v: %w", d, err)
		}
		if v, err = gocty.ToCtyValue(d, goTy); err != nil {
			return cty.NilVal, fmt.Errorf("default %#v: %w", d, err)
		}
	}
	conv, err := convert.Convert(v, ty)
	if err != nil {
		return cty.NilVal, fmt.Errorf("default %#v is not a %s: %w", a.Default, a.Type, err)
	}
	if conv.IsNull() || !conv.IsWhollyKnown() {
		return cty.NilVal, fmt.Errorf("default must be a known, non-null value")
	}
	if a.Type == TypeDuration {
		if _, err := time.ParseDuration(conv.AsString()); err != nil {
			return cty.NilVal, fmt.Errorf("default: %w", err)
		}
	}
	return conv, nil
}

// ImpliedType is the type of the value Decode produces for this schema: an
// object with one attribute per attribute and block.
func (s *Schema) ImpliedType() cty.Type {
	attrs := make(map[string]cty.Type, len(s.Attributes)+len(s.Blocks))
	for _, a := range s.Attributes {
		attrs[a.Name] = a.Type.CtyType()
	}
	for _, b := range s.Blocks {
		switch b.Nesting {
		case NestingList:
			attrs[b.Name] = cty.List(b.Body.ImpliedType())
		default:
			attrs[b.Name] = b.Body.ImpliedType()
		}
	}
	return cty.Object(attrs)
}

// Equal reports whether two schemas describe the same configuration, with
// defaults compared as values. It is what a round trip through the wire
// must preserve.
func (s *Schema) Equal(o *Schema) bool {
	if len(s.Attributes) != len(o.Attributes) || len(s.Blocks) != len(o.Blocks) {
		return false
	}
	for i, a := range s.Attributes {
		b := o.Attributes[i]
		if a.Name != b.Name || a.Type != b.Type || a.Required != b.Required || a.Description != b.Description {
			return false
		}
		da, errA := a.DefaultValue()
		db, errB := b.DefaultValue()
		if errA != nil || errB != nil || !da.RawEquals(db) {
			return false
		}
	}
	for i, a := range s.Blocks {
		b := o.Blocks[i]
		if a.Name != b.Name || a.Nesting != b.Nesting || a.Required != b.Required ||
			a.MinItems != b.MinItems || a.MaxItems != b.MaxItems || a.Description != b.Description ||
			!a.Body.Equal(&b.Body) {
			return false
		}
	}
	return true
}

// fieldName returns the HCL name in a struct field's hcl tag ("name" in
// `hcl:"name,optional"`), or "" for an untagged field. Tag options after the
// comma are accepted and ignored so gohcl-style tags work unchanged.
func fieldName(f reflect.StructField) string {
	tag, ok := f.Tag.Lookup("hcl")
	if !ok {
		return ""
	}
	name, _, _ := strings.Cut(tag, ",")
	if name == "-" {
		return ""
	}
	return name
}
