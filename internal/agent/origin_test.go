package agent

import (
	"context"
	"testing"

	"github.com/halo-ha/halo/sdk/api"
)

// A command is logged with the origin its client declares ("cli" for the
// halo command), "api" without one or with one not a plain word.
func TestCommandOrigin(t *testing.T) {
	c, _, stop := startTestAgent(t)
	defer stop()
	ctx := context.Background()
	var seq uint64
	for _, x := range []struct {
		client  *api.Client
		command string
		want    string
	}{
		{c.WithOrigin("cli"), "start", "start from cli"},
		{c, "stop", "stop from api"},
		{c.WithOrigin("Robert'); DROP"), "start", "start from api"},
	} {
		if _, err := x.client.Command(ctx, "svc", api.CommandRequest{Command: x.command}); err != nil {
			t.Fatal(err)
		}
		evs, err := c.Events(ctx, "svc", seq, 0)
		if err != nil {
			t.Fatal(err)
		}
		if !logHas(evs, x.want) {
			t.Fatalf("no event %q in %v", x.want, texts(evs))
		}
		seq = evs[len(evs)-1].Seq
	}
}
