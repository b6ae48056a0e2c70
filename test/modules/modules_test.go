// Package modules checks the shipped modules against the real plugins: every
// plugin block must match the schema its plugin declares.
package modules

import (
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/halo-ha/halo/test/harness"
)

func TestShippedModulesValidateAgainstPlugins(t *testing.T) {
	bin := harness.Bin(t)
	cmd := exec.Command(filepath.Join(bin, "halo"), "validate", "--plugin-dir", filepath.Join(bin, "plugins"),
		filepath.Join(harness.RepoRoot(), "modules"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("halo validate modules/ against the built plugins: %v\n%s", err, out)
	}
	t.Logf("%s", out)
}
