package schema

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/hashicorp/hcl/v2"
)

// AttrError is a configuration error about one attribute or block, named by
// its path ("max_age", "target.port", "rule[1].name"; "" for the block as a
// whole). A plugin returns AttrErrors from Configure, joined with
// errors.Join when there are several, so the host can report each at its
// line in the module file.
type AttrError struct {
	Path string
	Err  error
}

// Errorf returns an *AttrError for path.
func Errorf(path, format string, args ...any) error {
	return &AttrError{Path: path, Err: fmt.Errorf(format, args...)}
}

func (e *AttrError) Error() string {
	if e.Path == "" {
		return e.Err.Error()
	}
	return e.Path + ": " + e.Err.Error()
}

func (e *AttrError) Unwrap() error { return e.Err }

// AttrErrors flattens an error tree (errors.Join, wrapping) into its
// AttrErrors; an error that carries no path becomes an AttrError with an
// empty path, so nothing is lost.
func AttrErrors(err error) []*AttrError {
	if err == nil {
		return nil
	}
	if ae, ok := err.(*AttrError); ok {
		return []*AttrError{ae}
	}
	if joined, ok := err.(interface{ Unwrap() []error }); ok {
		var out []*AttrError
		for _, e := range joined.Unwrap() {
			out = append(out, AttrErrors(e)...)
		}
		return out
	}
	var ae *AttrError
	if errors.As(err, &ae) {
		// Wrapped: keep the path, and the wrapper's context in the message.
		return []*AttrError{{Path: ae.Path, Err: err}}
	}
	return []*AttrError{{Err: err}}
}

// Range returns the source range a path points at in a block body decoded
// with this schema: an attribute's value expression, or a block's header.
// ok is false when the path names nothing present in the body (for example
// an attribute left to its default); the caller then points at the block.
func (s *Schema) Range(body hcl.Body, path string) (rng hcl.Range, ok bool) {
	if path == "" {
		return hcl.Range{}, false
	}
	step, rest, _ := strings.Cut(path, ".")
	name, index := step, 0
	if i := strings.IndexByte(step, '['); i >= 0 && strings.HasSuffix(step, "]") {
		n, err := strconv.Atoi(step[i+1 : len(step)-1])
		if err != nil || n < 0 {
			return hcl.Range{}, false
		}
		name, index = step[:i], n
	}
	content, _, _ := body.PartialContent(s.bodySchema())
	if rest == "" {
		if attr, found := content.Attributes[name]; found {
			return attr.Expr.Range(), true
		}
	}
	for _, b := range s.Blocks {
		if b.Name != name {
			continue
		}
		blocks := content.Blocks.OfType(name)
		if index >= len(blocks) {
			return hcl.Range{}, false
		}
		if rest == "" {
			return blocks[index].DefRange, true
		}
		return b.Body.Range(blocks[index].Body, rest)
	}
	return hcl.Range{}, false
}

// Diagnostics turns a plugin's configuration errors into HCL diagnostics
// located in body; errors whose path is not found point at the body's
// missing-item range (for a block, its opening brace).
func (s *Schema) Diagnostics(body hcl.Body, errs []*AttrError) hcl.Diagnostics {
	var diags hcl.Diagnostics
	for _, e := range errs {
		rng, ok := s.Range(body, e.Path)
		if !ok {
			rng = body.MissingItemRange()
		}
		detail := e.Err.Error()
		if e.Path != "" {
			detail = fmt.Sprintf("%s: %s", e.Path, detail)
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

func (s *Schema) bodySchema() *hcl.BodySchema {
	bs := &hcl.BodySchema{}
	for _, a := range s.Attributes {
		bs.Attributes = append(bs.Attributes, hcl.AttributeSchema{Name: a.Name})
	}
	for _, b := range s.Blocks {
		bs.Blocks = append(bs.Blocks, hcl.BlockHeaderSchema{Type: b.Name})
	}
	return bs
}
