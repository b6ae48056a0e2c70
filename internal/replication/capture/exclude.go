package capture

import (
	"fmt"
	"path"
	"strings"
)

// Matcher tells which paths of a replicated directory are excluded from
// replication. Resync and verify must use the same rule as the capture, so
// it is exported.
type Matcher struct {
	globs []glob
}

type glob struct {
	pattern string
	parts   []string // pattern split at "/": a glob matches a path with as many components
}

// NewMatcher compiles path.Match globs relative to the replicated directory.
func NewMatcher(globs []string) (*Matcher, error) {
	m := &Matcher{}
	for _, g := range globs {
		if g == "" || strings.HasPrefix(g, "/") || path.Clean(g) != g || g == "." || g == ".." || strings.HasPrefix(g, "../") {
			return nil, fmt.Errorf("exclude %q: want a clean relative glob", g)
		}
		if _, err := path.Match(g, ""); err != nil {
			return nil, fmt.Errorf("exclude %q: %w", g, err)
		}
		m.globs = append(m.globs, glob{pattern: g, parts: strings.Split(g, "/")})
	}
	return m, nil
}

// Excluded reports whether rel (a clean path relative to the replicated
// directory) or one of its parent directories matches an exclude glob.
// The directory itself (".") is never excluded.
func (m *Matcher) Excluded(rel string) bool {
	if m == nil || len(m.globs) == 0 || rel == "." || rel == "" {
		return false
	}
	// '*' never matches '/', so a glob can only match the prefix of rel
	// with as many components as it has.
	for _, g := range m.globs {
		if p, ok := prefixComponents(rel, len(g.parts)); ok {
			if ok, _ := path.Match(g.pattern, p); ok {
				return true
			}
		}
	}
	return false
}

// mayDiffer reports whether some path below a directory could be excluded
// under one of its names and not under the other: only then must a rename
// of the directory look inside it. A glob with no more components than a
// name decides on that name alone, which the caller checked.
func (m *Matcher) mayDiffer(oldRel, newRel string) bool {
	if m == nil {
		return false
	}
	for _, name := range []string{oldRel, newRel} {
		depth := strings.Count(name, "/") + 1
		comps := strings.Split(name, "/")
		for _, g := range m.globs {
			if len(g.parts) <= depth {
				continue
			}
			match := true
			for i := 0; i < depth && match; i++ {
				match, _ = path.Match(g.parts[i], comps[i])
			}
			if match {
				return true
			}
		}
	}
	return false
}

// prefixComponents returns the first n components of rel.
func prefixComponents(rel string, n int) (string, bool) {
	i := 0
	for k := 0; k < n; k++ {
		j := strings.IndexByte(rel[i:], '/')
		if j < 0 {
			return rel, k == n-1
		}
		i += j + 1
	}
	return rel[:i-1], true
}
