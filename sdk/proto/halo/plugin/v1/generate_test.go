package pluginv1_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestGeneratedCodeIsUpToDate regenerates the protocol's Go code into a
// temporary directory with scripts/genproto.sh and compares it with the
// committed files, so a .proto edit without `make proto` fails here.
func TestGeneratedCodeIsUpToDate(t *testing.T) {
	if _, err := exec.LookPath("protoc"); err != nil {
		t.Skip("protoc not installed (apt-get install protobuf-compiler)")
	}
	script, err := filepath.Abs("../../../../scripts/genproto.sh")
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	cmd := exec.Command(script, out)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		if strings.Contains(stderr.String(), "not found") {
			t.Skipf("generator missing: %s", strings.TrimSpace(stderr.String()))
		}
		t.Fatalf("genproto.sh: %v\n%s", err, stderr.String())
	}

	fresh := goFiles(t, filepath.Join(out, "proto", "halo", "plugin", "v1"))
	committed := goFiles(t, ".")
	if !slices.Equal(fresh, committed) {
		t.Fatalf("generated files %v, committed %v: run make proto", fresh, committed)
	}
	for _, name := range fresh {
		want, err := os.ReadFile(filepath.Join(out, "proto", "halo", "plugin", "v1", name))
		if err != nil {
			t.Fatal(err)
		}
		have, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(have, want) {
			t.Errorf("%s is stale: run make proto and commit the result", name)
		}
	}
}

// goFiles lists the generated Go files of a directory, sorted.
func goFiles(t *testing.T, dir string) []string {
	t.Helper()
	matches, err := filepath.Glob(filepath.Join(dir, "*.pb.go"))
	if err != nil {
		t.Fatal(err)
	}
	names := make([]string, len(matches))
	for i, m := range matches {
		names[i] = filepath.Base(m)
	}
	slices.Sort(names)
	return names
}
