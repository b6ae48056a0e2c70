package op

import (
	"errors"
	"testing"
)

func TestValidate(t *testing.T) {
	ok := []Op{
		{Kind: Write, Path: "a/b", Data: []byte("x")},
		{Kind: Rename, Path: "a", Target: "b/c"},
		{Kind: Symlink, Path: "l", Target: "../../etc/passwd"}, // content, never resolved by us
		{Kind: Chmod, Path: ".", Mode: 0o755},
	}
	for _, o := range ok {
		if err := o.Validate(); err != nil {
			t.Errorf("%+v: %v", o, err)
		}
	}
	bad := []Op{
		{Kind: 0, Path: "a"},
		{Kind: maxKind, Path: "a"},
		{Kind: Write, Path: "/etc/passwd"},
		{Kind: Write, Path: "../x"},
		{Kind: Write, Path: "a/../../x"},
		{Kind: Write, Path: "a//b"},
		{Kind: Write, Path: ""},
		{Kind: Write, Path: "a\x00b"},
		{Kind: Write, Path: "a", Off: -1},
		{Kind: Write, Path: "a", Data: make([]byte, MaxData+1)},
		{Kind: Rename, Path: "a", Target: "../b"},
		{Kind: Link, Path: "a", Target: "/b"},
		{Kind: Truncate, Path: "a", Size: -5},
		{Kind: Unlink, Path: "."},
		{Kind: Setxattr, Path: "a"},
	}
	for _, o := range bad {
		if err := o.Validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: got %v, want ErrInvalid", o, err)
		}
	}
}
