package capture

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/halo-ha/halo/internal/replication/op"
)

func TestSmoke(t *testing.T) {
	m := mountTest(t, Options{}, func(dir string) {
		os.WriteFile(filepath.Join(dir, "old"), []byte("before"), 0o644)
	})
	got, err := os.ReadFile(filepath.Join(m.dir, "old"))
	if err != nil || string(got) != "before" {
		t.Fatalf("read through mount: %q %v", got, err)
	}
	if err := os.WriteFile(filepath.Join(m.dir, "new"), []byte("hello"), 0o640); err != nil {
		t.Fatal(err)
	}
	under, err := os.ReadFile(filepath.Join(m.under, "new"))
	if err != nil || !bytes.Equal(under, []byte("hello")) {
		t.Fatalf("underlying: %q %v", under, err)
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(m.dir, "new"), &st); err != nil || st.Mode&0o777 != 0o640 {
		t.Fatalf("stat: %o %v", st.Mode, err)
	}
	ops := m.rec.snapshot()
	if len(ops) < 2 || ops[0].Kind != op.Create || ops[1].Kind != op.Write {
		t.Fatalf("ops: %+v", ops)
	}
	m.rec.check(t)
}
