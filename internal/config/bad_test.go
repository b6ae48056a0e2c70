package config

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the .want files of testdata/bad from the current output")

const (
	badDir         = "testdata/bad"
	testClusterHCL = "testdata/cluster.hcl"
)

// TestBad loads each broken configuration under testdata/bad and compares
// every diagnostic, one line each, with the case's expectations:
//
//   - bad/<case>.hcl is expected to produce bad/<case>.hcl.want;
//   - bad/<case>/ (a directory of <module>/module.hcl, for checks across
//     modules) is expected to produce bad/<case>/want.
//
// Modules are checked against testdata/cluster.hcl; a case whose file is
// a cluster file is checked on its own. File names in the expectations are
// relative to testdata/bad.
func TestBad(t *testing.T) {
	entries, err := os.ReadDir(badDir)
	if err != nil {
		t.Fatal(err)
	}
	cases := 0
	for _, e := range entries {
		var input, want string
		switch {
		case e.IsDir() && e.Name() != "scripts":
			input = filepath.Join(badDir, e.Name())
			want = filepath.Join(input, "want")
		case strings.HasSuffix(e.Name(), ".hcl"):
			input = filepath.Join(badDir, e.Name())
			want = input + ".want"
		default:
			continue
		}
		cases++
		t.Run(strings.TrimSuffix(e.Name(), ".hcl"), func(t *testing.T) {
			_, diags := Load(Options{ClusterFile: testClusterHCL}, input)
			var got strings.Builder
			for _, d := range diags {
				line := FormatDiagnostic(d)
				got.WriteString(strings.ReplaceAll(line, badDir+"/", "") + "\n")
			}
			if *update {
				if err := os.WriteFile(want, []byte(got.String()), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			wantText, err := os.ReadFile(want)
			if err != nil {
				t.Fatalf("every bad case needs its expectations: %v (run go test -run TestBad -update, then review them)", err)
			}
			if got.String() != string(wantText) {
				t.Errorf("diagnostics differ from %s\n--- got\n%s--- want\n%s", want, got.String(), wantText)
			}
			// A bad case must be bad: only warn_* cases may pass.
			if !diags.HasErrors() && !strings.HasPrefix(e.Name(), "warn_") {
				t.Errorf("%s produced no error", input)
			}
			if diags.HasErrors() && strings.HasPrefix(e.Name(), "warn_") {
				t.Errorf("%s is a warning case but produced errors", input)
			}
		})
	}
	if cases < 25 {
		t.Errorf("only %d bad cases; the suite is meant to cover every validation", cases)
	}
}
