package config

import (
	"fmt"
	"math/big"
	"sort"
	"strings"
	"time"

	"github.com/agext/levenshtein"
	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
)

// diags accumulates diagnostics: every check reports and carries on, so one
// run shows every mistake in a file.
type diags struct{ list hcl.Diagnostics }

func (d *diags) add(more hcl.Diagnostics) { d.list = append(d.list, more...) }

func (d *diags) errorf(subject hcl.Range, summary, format string, args ...any) {
	d.list = append(d.list, &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  summary,
		Detail:   fmt.Sprintf(format, args...),
		Subject:  subject.Ptr(),
	})
}

func (d *diags) warnf(subject hcl.Range, summary, format string, args ...any) {
	d.list = append(d.list, &hcl.Diagnostic{
		Severity: hcl.DiagWarning,
		Summary:  summary,
		Detail:   fmt.Sprintf(format, args...),
		Subject:  subject.Ptr(),
	})
}

// duplicate reports a second definition at r, naming where the first was.
func (d *diags) duplicate(r, first hcl.Range, what, name string) {
	d.errorf(r, "Duplicate "+what, "%s %q is already defined at %s.", upperFirst(what), name, posString(first))
}

// posString renders a range's start as file:line:col.
func posString(r hcl.Range) string {
	return fmt.Sprintf("%s:%d:%d", r.Filename, r.Start.Line, r.Start.Column)
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// attrDecoder decodes the attributes of one block into a struct, recording
// each written attribute's range in the struct's Source.
type attrDecoder struct {
	*diags
	attrs hcl.Attributes
	src   *Source
	block string // block name for messages, e.g. "heartbeat"
}

func (d *diags) attrsOf(content *hcl.BodyContent, src *Source, block string) *attrDecoder {
	return &attrDecoder{diags: d, attrs: content.Attributes, src: src, block: block}
}

// value evaluates an attribute as a constant of type ty. ok is false when
// the attribute is absent or its value was reported as wrong.
func (a *attrDecoder) value(name string, ty cty.Type, want string) (cty.Value, *hcl.Attribute, bool) {
	attr, exists := a.attrs[name]
	if !exists {
		return cty.NilVal, nil, false
	}
	v, ds := attr.Expr.Value(nil)
	if ds.HasErrors() {
		a.add(ds)
		return cty.NilVal, attr, a.bad(name)
	}
	if v.IsNull() {
		a.errorf(attr.Expr.Range(), "Missing value", "%s must be %s, not null.", name, want)
		return cty.NilVal, attr, a.bad(name)
	}
	if !v.IsWhollyKnown() {
		a.errorf(attr.Expr.Range(), "Invalid value", "%s must be a constant.", name)
		return cty.NilVal, attr, a.bad(name)
	}
	cv, err := convert.Convert(v, ty)
	if err != nil {
		a.errorf(attr.Expr.Range(), "Wrong type", "%s must be %s, not %s.", name, want, friendlyType(v.Type()))
		return cty.NilVal, attr, a.bad(name)
	}
	return cv, attr, true
}

// ok records a successfully decoded attribute.
func (a *attrDecoder) ok(name string, attr *hcl.Attribute) bool {
	a.src.setAttr(name, attr.Expr.Range())
	return true
}

// bad records an attribute whose value was reported, so that checks
// relating it to others stay quiet instead of piling up follow-on errors.
func (a *attrDecoder) bad(name string) bool {
	a.src.setInvalid(name)
	return false
}

func friendlyType(t cty.Type) string {
	switch {
	case t == cty.String:
		return "a string"
	case t == cty.Number:
		return "a number"
	case t == cty.Bool:
		return "a bool"
	case t.IsTupleType() || t.IsListType() || t.IsSetType():
		return "a list"
	case t.IsObjectType() || t.IsMapType():
		return "a map"
	}
	return t.FriendlyName()
}

func (a *attrDecoder) str(name string, dst *string) bool {
	v, attr, ok := a.value(name, cty.String, "a string")
	if !ok {
		return false
	}
	*dst = v.AsString()
	return a.ok(name, attr)
}

func (a *attrDecoder) boolean(name string, dst *bool) bool {
	v, attr, ok := a.value(name, cty.Bool, "true or false")
	if !ok {
		return false
	}
	*dst = v.True()
	return a.ok(name, attr)
}

// integer decodes a whole number within [lo, hi].
func (a *attrDecoder) integer(name string, dst *int, lo, hi int) bool {
	v, attr, ok := a.value(name, cty.Number, "a whole number")
	if !ok {
		return false
	}
	n, good := wholeNumber(v.AsBigFloat())
	if !good {
		a.errorf(attr.Expr.Range(), "Invalid value", "%s must be a whole number, not %s.", name, v.AsBigFloat().Text('g', -1))
		return a.bad(name)
	}
	if n < int64(lo) || n > int64(hi) {
		a.errorf(attr.Expr.Range(), "Value out of range", "%s must be between %d and %d, not %d.", name, lo, hi, n)
		return a.bad(name)
	}
	*dst = int(n)
	return a.ok(name, attr)
}

func wholeNumber(f *big.Float) (int64, bool) {
	if !f.IsInt() {
		return 0, false
	}
	n, acc := f.Int64()
	return n, acc == big.Exact
}

// port decodes a port number; 0 means "derive it from the module id".
func (a *attrDecoder) port(name string, dst *int, zeroMeans string) bool {
	v, attr, ok := a.value(name, cty.Number, "a port number")
	if !ok {
		return false
	}
	n, good := wholeNumber(v.AsBigFloat())
	if !good || n < 0 || n > 65535 {
		hint := ""
		if zeroMeans != "" {
			hint = " (0 = " + zeroMeans + ")"
		}
		a.errorf(attr.Expr.Range(), "Invalid port", "%s must be a port number from 1 to 65535%s, not %s.", name, hint, v.AsBigFloat().Text('g', -1))
		return a.bad(name)
	}
	if n == 0 {
		if zeroMeans == "" {
			a.errorf(attr.Expr.Range(), "Invalid port", "%s must be a port number from 1 to 65535, not 0.", name)
			return a.bad(name)
		}
		// An explicit 0 asks for the default, as if unset.
		return false
	}
	*dst = int(n)
	return a.ok(name, attr)
}

// duration decodes a duration string that must be positive (or zero when
// allowZero).
func (a *attrDecoder) duration(name string, dst *time.Duration, allowZero bool) bool {
	v, attr, ok := a.value(name, cty.String, `a duration string such as "10s"`)
	if !ok {
		return false
	}
	d, err := ParseDuration(v.AsString())
	if err != nil {
		a.errorf(attr.Expr.Range(), "Invalid duration", "%s: %v.", name, err)
		return a.bad(name)
	}
	if d < 0 && allowZero {
		a.errorf(attr.Expr.Range(), "Invalid duration", "%s must not be negative, not %q.", name, v.AsString())
		return a.bad(name)
	}
	if d <= 0 && !allowZero {
		a.errorf(attr.Expr.Range(), "Invalid duration", "%s must be longer than 0, not %q.", name, v.AsString())
		return a.bad(name)
	}
	*dst = d
	return a.ok(name, attr)
}

// strList decodes a list of strings, returning each element's range.
func (a *attrDecoder) strList(name string, dst *[]string, ranges *[]hcl.Range) bool {
	attr, exists := a.attrs[name]
	if !exists {
		return false
	}
	v, _, ok := a.value(name, cty.List(cty.String), "a list of strings")
	if !ok {
		return false
	}
	elems, ds := hcl.ExprList(attr.Expr)
	var out []string
	var rs []hcl.Range
	if ds.HasErrors() || len(elems) != v.LengthInt() {
		// Not written as a literal list: no per-element ranges.
		for it := v.ElementIterator(); it.Next(); {
			_, ev := it.Element()
			if ev.IsNull() {
				a.errorf(attr.Expr.Range(), "Missing value", "%s must not contain null.", name)
				return a.bad(name)
			}
			out = append(out, ev.AsString())
			rs = append(rs, attr.Expr.Range())
		}
	} else {
		i := 0
		for it := v.ElementIterator(); it.Next(); i++ {
			_, ev := it.Element()
			if ev.IsNull() {
				a.errorf(elems[i].Range(), "Missing value", "%s must not contain null.", name)
				return a.bad(name)
			}
			out = append(out, ev.AsString())
			rs = append(rs, elems[i].Range())
		}
	}
	*dst = out
	if ranges != nil {
		*ranges = rs
	}
	return a.ok(name, attr)
}

// entry is one key = value of a map attribute, with both ranges.
type entry struct {
	Key        string
	Value      cty.Value
	KeyRange   hcl.Range
	ValueRange hcl.Range
}

// mapEntries decodes a map attribute written as a literal { k = v, ... },
// converting every value to ty. Duplicate keys are reported.
func (a *attrDecoder) mapEntries(name string, ty cty.Type, want string) ([]entry, bool) {
	attr, exists := a.attrs[name]
	if !exists {
		return nil, false
	}
	pairs, ds := hcl.ExprMap(attr.Expr)
	if ds.HasErrors() {
		a.errorf(attr.Expr.Range(), "Wrong type", "%s must be a map written as { key = value, ... }.", name)
		return nil, a.bad(name)
	}
	var out []entry
	seen := map[string]hcl.Range{}
	good := true
	for _, p := range pairs {
		kv, kds := p.Key.Value(nil)
		if kds.HasErrors() {
			a.add(kds) // HCL says why (e.g. variables are not allowed)
			good = false
			continue
		}
		if kv.IsNull() || !kv.IsWhollyKnown() {
			a.errorf(p.Key.Range(), "Invalid key", "The keys of %s must be names or strings.", name)
			good = false
			continue
		}
		kv, err := convert.Convert(kv, cty.String)
		if err != nil {
			a.errorf(p.Key.Range(), "Invalid key", "The keys of %s must be names or strings.", name)
			good = false
			continue
		}
		key := kv.AsString()
		if first, dup := seen[key]; dup {
			a.errorf(p.Key.Range(), "Duplicate key", "Key %q of %s is already defined at %s.", key, name, posString(first))
			good = false
			continue
		}
		seen[key] = p.Key.Range()
		vv, vds := p.Value.Value(nil)
		if vds.HasErrors() {
			a.add(vds)
			good = false
			continue
		}
		if vv.IsNull() || !vv.IsWhollyKnown() {
			a.errorf(p.Value.Range(), "Missing value", "%s.%s must be %s.", name, key, want)
			good = false
			continue
		}
		cv, err := convert.Convert(vv, ty)
		if err != nil {
			a.errorf(p.Value.Range(), "Wrong type", "%s.%s must be %s, not %s.", name, key, want, friendlyType(vv.Type()))
			good = false
			continue
		}
		out = append(out, entry{Key: key, Value: cv, KeyRange: p.Key.Range(), ValueRange: p.Value.Range()})
	}
	if !good {
		return out, a.bad(name)
	}
	return out, a.ok(name, attr)
}

// oneOf checks that the string attribute's value is one of valid, and
// suggests the closest when it is not.
func (a *attrDecoder) oneOf(name string, dst *string, valid []string) bool {
	var s string
	if !a.str(name, &s) {
		return false
	}
	if !contains(valid, s) {
		a.errorf(a.src.AttrRange(name), "Invalid value", "%s", invalidChoice(name, s, valid))
		a.src.unset(name)
		return a.bad(name)
	}
	*dst = s
	return true
}

func invalidChoice(what, got string, valid []string) string {
	msg := fmt.Sprintf("Invalid %s %q; valid values are %s.", what, got, quoteList(valid))
	if s := suggest(got, valid); s != "" {
		msg += fmt.Sprintf(" Did you mean %q?", s)
	}
	return msg
}

// suggest returns the candidate closest to got when it is close enough to
// be a typo, as HCL does for attribute names.
func suggest(got string, candidates []string) string {
	best, bestDist := "", 3
	for _, c := range candidates {
		if d := levenshtein.Distance(got, c, nil); d < bestDist {
			best, bestDist = c, d
		}
	}
	return best
}

func quoteList(items []string) string {
	q := make([]string, len(items))
	for i, s := range items {
		q[i] = fmt.Sprintf("%q", s)
	}
	switch len(q) {
	case 0:
		return "(none)"
	case 1:
		return q[0]
	}
	return strings.Join(q[:len(q)-1], ", ") + " or " + q[len(q)-1]
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// required reports every attribute of names that was not written, at the
// block header: HCL's own "Missing required argument" points at the
// opening brace and does not say what the value is for.
func (a *attrDecoder) required(names ...string) {
	for _, n := range names {
		if _, ok := a.attrs[n]; !ok {
			a.errorf(a.src.Range, "Missing required argument", "The %s block needs %q.", a.block, n)
		}
	}
}

// blockSingleton returns the only block of type typ, reporting any extra
// one with both locations.
func (d *diags) blockSingleton(blocks hcl.Blocks, typ string) *hcl.Block {
	var first *hcl.Block
	for _, b := range blocks {
		if b.Type != typ {
			continue
		}
		if first == nil {
			first = b
			continue
		}
		d.errorf(b.DefRange, "Duplicate "+typ+" block", "Only one %s block is allowed; the first is at %s.", typ, posString(first.DefRange))
	}
	return first
}

// sortDiagnostics orders diagnostics by file and position, diagnostics
// without a location first, keeping the order of equal positions.
func sortDiagnostics(ds hcl.Diagnostics) {
	sort.SliceStable(ds, func(i, j int) bool {
		a, b := ds[i].Subject, ds[j].Subject
		switch {
		case a == nil || b == nil:
			return a == nil && b != nil
		case a.Filename != b.Filename:
			return a.Filename < b.Filename
		case a.Start.Byte != b.Start.Byte:
			return a.Start.Byte < b.Start.Byte
		}
		return false
	})
}
