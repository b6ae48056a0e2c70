package schema

import (
	"fmt"
	"maps"
	"reflect"
	"slices"
	"time"

	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/gocty"
)

var durationType = reflect.TypeFor[time.Duration]()

// DecodeValue stores a decoded configuration in the struct target points
// to. Fields are matched by their hcl tag (`hcl:"max_age"`; options after a
// comma, as gohcl writes them, are ignored):
//
//   - string, bool, any integer or float kind: attributes of those types
//     (an integer field rejects a fractional or out-of-range number)
//   - time.Duration: duration attributes
//   - []string, map[string]string: list(string), map(string)
//   - struct or *struct: a single block (a nil pointer when absent)
//   - []struct: a list block
//
// Null values (absent optional attributes without a default) leave the
// field's zero value. Every attribute of the value must have a field and
// every tagged field an attribute, so a schema and a struct that drift
// apart fail loudly, at Configure, rather than dropping a setting.
func DecodeValue(v cty.Value, target any) error {
	rv := reflect.ValueOf(target)
	if rv.Kind() != reflect.Pointer || rv.IsNil() || rv.Elem().Kind() != reflect.Struct {
		return fmt.Errorf("decode configuration: target must be a non-nil pointer to a struct, not %T", target)
	}
	return decodeInto("", v, rv.Elem())
}

func decodeInto(path string, v cty.Value, rv reflect.Value) error {
	if !v.IsKnown() {
		return &AttrError{Path: path, Err: fmt.Errorf("value is unknown")}
	}
	if v.IsNull() {
		rv.Set(reflect.Zero(rv.Type()))
		return nil
	}
	switch {
	case rv.Type() == durationType:
		if v.Type() != cty.String {
			return Errorf(path, "want a duration string, have %s", v.Type().FriendlyName())
		}
		d, err := time.ParseDuration(v.AsString())
		if err != nil {
			return &AttrError{Path: path, Err: err}
		}
		rv.SetInt(int64(d))
		return nil
	case rv.Kind() == reflect.Pointer:
		elem := reflect.New(rv.Type().Elem())
		if err := decodeInto(path, v, elem.Elem()); err != nil {
			return err
		}
		rv.Set(elem)
		return nil
	case rv.Kind() == reflect.Struct:
		return decodeStruct(path, v, rv)
	case rv.Kind() == reflect.Slice && rv.Type().Elem().Kind() == reflect.Struct:
		if !v.Type().IsListType() && !v.Type().IsTupleType() {
			return Errorf(path, "want a list of blocks, have %s", v.Type().FriendlyName())
		}
		out := reflect.MakeSlice(rv.Type(), v.LengthInt(), v.LengthInt())
		for i := 0; i < v.LengthInt(); i++ {
			ev := v.Index(cty.NumberIntVal(int64(i)))
			if err := decodeInto(fmt.Sprintf("%s[%d]", path, i), ev, out.Index(i)); err != nil {
				return err
			}
		}
		rv.Set(out)
		return nil
	default:
		// Scalars, []string and map[string]string: gocty checks types,
		// integer ranges and fractional numbers.
		if err := gocty.FromCtyValue(v, rv.Addr().Interface()); err != nil {
			return &AttrError{Path: path, Err: err}
		}
		return nil
	}
}

func decodeStruct(path string, v cty.Value, rv reflect.Value) error {
	if !v.Type().IsObjectType() {
		return Errorf(path, "want a block, have %s", v.Type().FriendlyName())
	}
	prefix := path
	if prefix != "" {
		prefix += "."
	}
	used := make(map[string]bool)
	rt := rv.Type()
	for i := 0; i < rt.NumField(); i++ {
		f := rt.Field(i)
		name := fieldName(f)
		if name == "" {
			continue
		}
		if !f.IsExported() {
			return fmt.Errorf("decode configuration: field %s.%s has an hcl tag but is not exported", rt, f.Name)
		}
		if !v.Type().HasAttribute(name) {
			return fmt.Errorf("decode configuration: field %s.%s wants %q, which the schema does not declare", rt, f.Name, prefix+name)
		}
		used[name] = true
		if err := decodeInto(prefix+name, v.GetAttr(name), rv.Field(i)); err != nil {
			return err
		}
	}
	for _, name := range slices.Sorted(maps.Keys(v.Type().AttributeTypes())) {
		if !used[name] {
			return fmt.Errorf("decode configuration: %s has no field tagged hcl:%q", rt, prefix+name)
		}
	}
	return nil
}
