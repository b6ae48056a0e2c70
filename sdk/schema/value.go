package schema

import (
	"errors"
	"fmt"
	"time"

	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
	ctyjson "github.com/zclconf/go-cty/cty/json"
)

// MarshalValue encodes a decoded configuration for the wire (go-cty's JSON
// encoding of the schema's implied type). The value must conform to the
// schema: the result of Decode does.
func (s *Schema) MarshalValue(v cty.Value) ([]byte, error) {
	ty := s.ImpliedType()
	conv, err := convert.Convert(v, ty)
	if err != nil {
		return nil, fmt.Errorf("convert configuration to the schema's type: %w", err)
	}
	if !conv.IsWhollyKnown() {
		return nil, errors.New("configuration has unknown values")
	}
	data, err := ctyjson.Marshal(conv, ty)
	if err != nil {
		return nil, fmt.Errorf("encode configuration: %w", err)
	}
	return data, nil
}

// UnmarshalValue decodes a configuration received from the host, fills in
// defaults for attributes left null, and checks it against the schema again
// (required attributes present, durations valid, block counts): a plugin
// must not rely on every host, in every language, having done so. Errors
// are AttrErrors joined.
func (s *Schema) UnmarshalValue(data []byte) (cty.Value, error) {
	v, err := ctyjson.Unmarshal(data, s.ImpliedType())
	if err != nil {
		return cty.NilVal, fmt.Errorf("decode configuration: %w", err)
	}
	if v.IsNull() {
		return cty.NilVal, errors.New("configuration is null")
	}
	v = s.applyDefaults(v)
	if err := s.ValidateValue(v); err != nil {
		return cty.NilVal, err
	}
	return v, nil
}

// applyDefaults replaces null attributes that have a default, in v and its
// nested blocks. v must be a non-null object of the schema's implied type.
func (s *Schema) applyDefaults(v cty.Value) cty.Value {
	attrs := v.AsValueMap()
	if attrs == nil {
		return v // an object without attributes
	}
	for _, a := range s.Attributes {
		if attrs[a.Name].IsNull() {
			if def, err := a.DefaultValue(); err == nil {
				attrs[a.Name] = def
			}
		}
	}
	for _, b := range s.Blocks {
		bv := attrs[b.Name]
		if bv.IsNull() || !bv.IsKnown() {
			continue
		}
		switch b.Nesting {
		case NestingSingle:
			attrs[b.Name] = b.Body.applyDefaults(bv)
		case NestingList:
			if bv.LengthInt() == 0 {
				continue
			}
			elems := bv.AsValueSlice()
			for i, ev := range elems {
				if !ev.IsNull() {
					elems[i] = b.Body.applyDefaults(ev)
				}
			}
			attrs[b.Name] = cty.ListVal(elems)
		}
	}
	return cty.ObjectVal(attrs)
}

// ValidateValue checks what the type alone cannot: required attributes and
// blocks are present, durations parse, list blocks respect their bounds.
func (s *Schema) ValidateValue(v cty.Value) error {
	if v.IsNull() {
		return errors.New("configuration is null")
	}
	return errors.Join(s.validateValue("", v)...)
}

func (s *Schema) validateValue(prefix string, v cty.Value) []error {
	var errs []error
	for _, a := range s.Attributes {
		av := v.GetAttr(a.Name)
		switch {
		case av.IsNull() && a.Required:
			errs = append(errs, Errorf(prefix+a.Name, "required attribute is missing"))
		case av.IsNull():
		case a.Type == TypeDuration:
			if _, err := time.ParseDuration(av.AsString()); err != nil {
				errs = append(errs, &AttrError{Path: prefix + a.Name, Err: err})
			}
		case a.Type == TypeListOfString || a.Type == TypeMapOfString:
			for it := av.ElementIterator(); it.Next(); {
				if _, ev := it.Element(); ev.IsNull() {
					errs = append(errs, Errorf(prefix+a.Name, "elements must not be null"))
					break
				}
			}
		}
	}
	for _, b := range s.Blocks {
		bv := v.GetAttr(b.Name)
		switch b.Nesting {
		case NestingSingle:
			if bv.IsNull() {
				if b.Required {
					errs = append(errs, Errorf(prefix+b.Name, "required block is missing"))
				}
				continue
			}
			errs = append(errs, b.Body.validateValue(prefix+b.Name+".", bv)...)
		case NestingList:
			n := 0
			if !bv.IsNull() {
				n = bv.LengthInt()
			}
			if n < b.MinItems || (b.MaxItems > 0 && n > b.MaxItems) {
				errs = append(errs, Errorf(prefix+b.Name, "%d blocks, want %s", n, bounds(b.MinItems, b.MaxItems)))
			}
			for i := 0; i < n; i++ {
				ev := bv.Index(cty.NumberIntVal(int64(i)))
				if ev.IsNull() {
					errs = append(errs, Errorf(fmt.Sprintf("%s%s[%d]", prefix, b.Name, i), "block is null"))
					continue
				}
				errs = append(errs, b.Body.validateValue(fmt.Sprintf("%s%s[%d].", prefix, b.Name, i), ev)...)
			}
		}
	}
	return errs
}

func bounds(lo, hi int) string {
	if hi == 0 {
		return fmt.Sprintf("at least %d", lo)
	}
	return fmt.Sprintf("%d to %d", lo, hi)
}
