package rpc

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestRoundTrip(t *testing.T) {
	live := context.Background()
	tests := []struct {
		name string
		err  error
		is   error
	}{
		{"deadline", fmt.Errorf("probe: %w", context.DeadlineExceeded), context.DeadlineExceeded},
		{"cancel", context.Canceled, context.Canceled},
		{"unknown instance", ErrUnknownInstance, ErrUnknownInstance},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := FromStatus("check", ToStatus(live, tt.err))
			if !errors.Is(got, tt.is) {
				t.Fatalf("%v became %v, want errors.Is %v", tt.err, got, tt.is)
			}
		})
	}
	plain := FromStatus("check", ToStatus(live, errors.New("disk on fire")))
	if status.Code(errors.Unwrap(plain)) != codes.Unknown || plain.Error() != "check: rpc error: code = Unknown desc = disk on fire" {
		t.Fatalf("plain error became %v", plain)
	}
	if FromStatus("x", nil) != nil || ToStatus(live, nil) != nil {
		t.Fatal("nil errors must stay nil")
	}
}

func TestToStatusPrefersTheContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if code := status.Code(ToStatus(ctx, errors.New("whatever the plugin said"))); code != codes.Canceled {
		t.Fatalf("code %s, want Canceled", code)
	}
}

func TestWithDefaultTimeout(t *testing.T) {
	ctx, cancel := WithDefaultTimeout(context.Background())
	defer cancel()
	dl, ok := ctx.Deadline()
	if !ok || time.Until(dl) > DefaultTimeout || time.Until(dl) < DefaultTimeout-time.Second {
		t.Fatalf("no default deadline: %v %v", dl, ok)
	}
	parent, pcancel := context.WithTimeout(context.Background(), time.Second)
	defer pcancel()
	same, cancel2 := WithDefaultTimeout(parent)
	defer cancel2()
	if same != parent {
		t.Fatal("a context with a deadline was replaced")
	}
}
