package epochguard

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestGuard(t *testing.T) {
	var index atomic.Uint64
	var asks atomic.Int64
	var fail atomic.Bool
	g := &Guard{Max: 100, MinInterval: 50 * time.Millisecond, Ask: func(context.Context) (uint64, error) {
		asks.Add(1)
		if fail.Load() {
			return 0, errors.New("no leader")
		}
		return index.Load(), nil
	}}
	ctx := context.Background()
	// A young cluster: epochs within Max of 0 need no question.
	if err := g.Check(ctx, 100); err != nil || asks.Load() != 0 {
		t.Fatalf("epoch 100: %v, %d asks", err, asks.Load())
	}
	// Far ahead, and the cluster is there: accepted after one question.
	index.Store(5000)
	if err := g.Check(ctx, 5000); err != nil || asks.Load() != 1 || g.Confirmed() != 5000 {
		t.Fatalf("epoch 5000: %v, %d asks, confirmed %d", err, asks.Load(), g.Confirmed())
	}
	// Within Max of the answer: no question.
	if err := g.Check(ctx, 5090); err != nil || asks.Load() != 1 {
		t.Fatalf("epoch 5090: %v, %d asks", err, asks.Load())
	}
	// A forged epoch far ahead: rejected, naming the gap.
	time.Sleep(60 * time.Millisecond)
	err := g.Check(ctx, 1<<62)
	if err == nil || !strings.Contains(err.Error(), "ahead of the cluster's index 5000") || asks.Load() != 2 {
		t.Fatalf("forged epoch: %v, %d asks", err, asks.Load())
	}
	// A flood within MinInterval asks no more.
	for range 100 {
		if g.Check(ctx, 1<<62) == nil {
			t.Fatal("forged epoch accepted")
		}
	}
	if asks.Load() != 2 {
		t.Fatalf("%d asks after a flood; want 2", asks.Load())
	}
	// Accepted epochs never raise the confirmed index.
	if g.Confirmed() != 5000 {
		t.Fatalf("confirmed %d", g.Confirmed())
	}
	// No answer: a far-ahead epoch is rejected.
	time.Sleep(60 * time.Millisecond)
	fail.Store(true)
	if err := g.Check(ctx, 9000); err == nil || !strings.Contains(err.Error(), "no leader") {
		t.Fatalf("no answer: %v", err)
	}
}
