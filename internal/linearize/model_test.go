package linearize

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// call is one operation of a hand-written history: client, what, when it
// started and returned, and the answer.
type call struct {
	client   int
	in       Input
	from, to int64
	out      Output
}

func up(name string) Input          { return Input{Kind: Up, Name: name} }
func update(name string) Input      { return Input{Kind: Update, Name: name} }
func down(name string) Input        { return Input{Kind: Down, Name: name} }
func status(name string) Input      { return Input{Kind: Status, Name: name, Consistent: true} }
func staleStatus(name string) Input { return Input{Kind: Status, Name: name} }
func ok(v int) Output               { return Output{Result: OK, Version: v} }
func shuttingDown(v int) Output     { return Output{Result: OK, Version: v, ShuttingDown: true} }
func res(r Result) Output           { return Output{Result: r} }

var (
	notFound = res(NotFound)
	exists   = res(AlreadyExists)
	deleting = res(Deleting)
	unknown  = res(Unknown)
)

// history records calls as a client would, through History.
func history(calls []call) []porcupine.Operation {
	h := NewHistory()
	for _, c := range calls {
		h.Add(c.client, c.in, c.from, c.out, c.to)
	}
	return h.Operations()
}

func TestModel(t *testing.T) {
	tests := []struct {
		name  string
		calls []call
		legal bool
	}{
		{
			name: "a service's life, one call at a time",
			calls: []call{
				{0, status("a"), 0, 1, notFound},
				{0, up("a"), 2, 3, ok(1)},
				{0, up("a"), 4, 5, exists},
				{0, update("a"), 6, 7, ok(2)},
				{0, status("a"), 8, 9, ok(2)},
				{0, down("a"), 10, 11, ok(2)},
				{0, status("a"), 12, 13, shuttingDown(2)},
				{0, up("a"), 14, 15, deleting},
				{0, update("a"), 16, 17, deleting},
				{0, down("a"), 18, 19, ok(2)}, // a second delete is not refused
				{0, status("a"), 20, 21, notFound},
				{0, update("a"), 22, 23, notFound},
				{0, down("a"), 24, 25, notFound},
				{0, up("a"), 26, 27, ok(1)},
			},
			legal: true,
		},
		{
			name: "a status sees version 1 after an update to 2 returned",
			calls: []call{
				{0, up("a"), 0, 1, ok(1)},
				{0, update("a"), 2, 3, ok(2)},
				{1, status("a"), 4, 5, ok(1)},
			},
		},
		{
			name: "a status concurrent with an update may see either version",
			calls: []call{
				{0, up("a"), 0, 1, ok(1)},
				{0, update("a"), 2, 10, ok(2)},
				{1, status("a"), 3, 4, ok(1)},
				{2, status("a"), 5, 6, ok(2)},
			},
			legal: true,
		},
		{
			name: "reads concurrent with an update that go back to the old version",
			calls: []call{
				{0, up("a"), 0, 1, ok(1)},
				{0, update("a"), 2, 10, ok(2)},
				{1, status("a"), 3, 4, ok(2)},
				{2, status("a"), 5, 6, ok(1)},
			},
		},
		{
			name: "two ups of one name succeed with no down between",
			calls: []call{
				{0, up("a"), 0, 1, ok(1)},
				{1, up("a"), 2, 3, ok(1)},
			},
		},
		{
			name: "two concurrent ups of one name both succeed",
			calls: []call{
				{0, up("a"), 0, 5, ok(1)},
				{1, up("a"), 1, 6, ok(1)},
			},
		},
		{
			name: "two ups of one name succeed with a down and the removal between",
			calls: []call{
				{0, up("a"), 0, 1, ok(1)},
				{1, down("a"), 2, 3, ok(1)},
				{1, up("a"), 4, 5, ok(1)},
			},
			legal: true,
		},
		{
			name: "a stale read: the service still running after its down returned",
			calls: []call{
				{0, up("a"), 0, 1, ok(1)},
				{0, down("a"), 2, 3, ok(1)},
				{1, status("a"), 4, 5, ok(1)},
			},
		},
		{
			name: "a stale read: absent after its up returned",
			calls: []call{
				{0, up("a"), 0, 1, ok(1)},
				{1, status("a"), 2, 3, notFound},
			},
		},
		{
			name: "a read without ?consistent may be stale",
			calls: []call{
				{0, up("a"), 0, 1, ok(1)},
				{0, update("a"), 2, 3, ok(2)},
				{1, staleStatus("a"), 4, 5, notFound},
				{1, staleStatus("a"), 6, 7, ok(1)},
			},
			legal: true,
		},
		{
			name: "gone does not come back to shutting down",
			calls: []call{
				{0, up("a"), 0, 1, ok(1)},
				{0, down("a"), 2, 3, ok(1)},
				{1, status("a"), 4, 5, notFound},
				{1, status("a"), 6, 7, shuttingDown(1)},
			},
		},
		{
			name: "an up that finds the service shutting down after it was seen gone",
			calls: []call{
				{0, up("a"), 0, 1, ok(1)},
				{0, down("a"), 2, 3, ok(1)},
				{1, status("a"), 4, 5, notFound},
				{1, up("a"), 6, 7, deleting},
			},
		},
		{
			name: "an update that answers a version the service never had",
			calls: []call{
				{0, up("a"), 0, 1, ok(1)},
				{0, update("a"), 2, 3, ok(3)},
			},
		},
		{
			name: "a down that answers another version",
			calls: []call{
				{0, up("a"), 0, 1, ok(1)},
				{0, update("a"), 2, 3, ok(2)},
				{0, down("a"), 4, 5, ok(1)},
			},
		},
		{
			name: "an up of unknown outcome that was applied",
			calls: []call{
				{0, up("a"), 0, 1, unknown},
				{1, status("a"), 2, 3, ok(1)},
				{1, up("a"), 4, 5, exists},
			},
			legal: true,
		},
		{
			name: "an up of unknown outcome that was not applied",
			calls: []call{
				{0, up("a"), 0, 1, unknown},
				{1, status("a"), 2, 3, notFound},
				{1, update("a"), 4, 5, notFound},
			},
			legal: true,
		},
		{
			name: "an up of unknown outcome applied late, after a read that missed it",
			calls: []call{
				{0, up("a"), 0, 1, unknown},
				{1, status("a"), 2, 3, notFound},
				{1, status("a"), 4, 5, ok(1)},
			},
			legal: true,
		},
		{
			name: "an update of unknown outcome that is seen, then unseen",
			calls: []call{
				{0, up("a"), 0, 1, ok(1)},
				{0, update("a"), 2, 3, unknown},
				{1, status("a"), 4, 5, ok(2)},
				{1, status("a"), 6, 7, ok(1)},
			},
		},
		{
			name: "a down of unknown outcome, then an up that finds it gone",
			calls: []call{
				{0, up("a"), 0, 1, ok(1)},
				{0, down("a"), 2, 3, unknown},
				{1, up("a"), 4, 5, ok(1)},
			},
			legal: true,
		},
		{
			name: "a down of unknown outcome that never happened",
			calls: []call{
				{0, up("a"), 0, 1, ok(1)},
				{0, down("a"), 2, 3, unknown},
				{1, up("a"), 4, 5, exists},
				{1, update("a"), 6, 7, ok(2)},
			},
			legal: true,
		},
		{
			name: "two updates of unknown outcome: versions count both",
			calls: []call{
				{0, up("a"), 0, 1, ok(1)},
				{0, update("a"), 2, 3, unknown},
				{1, update("a"), 2, 3, unknown},
				{2, update("a"), 4, 5, ok(4)},
			},
			legal: true,
		},
		{
			name: "an update ok cannot skip a version with no unknown update",
			calls: []call{
				{0, up("a"), 0, 1, ok(1)},
				{1, update("a"), 2, 3, unknown},
				{2, update("a"), 4, 5, ok(4)},
			},
		},
		{
			name: "names are independent",
			calls: []call{
				{0, up("a"), 0, 1, ok(1)},
				{1, up("b"), 2, 3, ok(1)},
				{1, status("b"), 4, 5, ok(1)},
				{0, down("a"), 6, 7, ok(1)},
				{1, update("b"), 8, 9, ok(2)},
				{0, status("a"), 10, 11, notFound},
			},
			legal: true,
		},
		{
			name: "one name's violation fails the whole",
			calls: []call{
				{0, up("a"), 0, 1, ok(1)},
				{1, up("b"), 2, 3, ok(1)},
				{1, up("b"), 4, 5, ok(1)},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ops := history(tt.calls)
			got, info := Check(ops, 10*time.Second)
			want := porcupine.Illegal
			if tt.legal {
				want = porcupine.Ok
			}
			if got != want {
				path := filepath.Join(t.TempDir(), "history.html")
				if err := Visualize(info, path); err != nil {
					t.Log(err)
				}
				t.Fatalf("check: %s, want %s (visualization: %s)", got, want, path)
			}
		})
	}
}

func TestUnknownReturnsAtInfinity(t *testing.T) {
	h := NewHistory()
	h.Add(0, up("a"), 5, unknown, 6)
	h.Add(1, status("a"), 10, notFound, 20)
	h.Add(2, update("a"), 30, unknown, 0)
	ops := h.Operations()
	if ops[0].Return != 31 || ops[2].Return != 31 {
		t.Fatalf("unknown calls return at %d and %d, want 31 (after the last time, 30)", ops[0].Return, ops[2].Return)
	}
	if ops[1].Return != 20 {
		t.Fatalf("a known call's return moved: %d", ops[1].Return)
	}
	if h.Len() != 3 {
		t.Fatalf("Len = %d", h.Len())
	}
}

func TestVisualize(t *testing.T) {
	ops := history([]call{
		{0, up("a"), 0, 1, ok(1)},
		{1, down("a"), 2, 3, unknown},
		{0, update("a"), 4, 5, ok(2)},
	})
	res, info := Check(ops, 10*time.Second)
	if res != porcupine.Ok {
		t.Fatalf("check: %s", res)
	}
	path := filepath.Join(t.TempDir(), "history.html")
	if err := Visualize(info, path); err != nil {
		t.Fatal(err)
	}
	buf, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// The descriptions are in the page's JSON, where ">" is \u003e.
	for _, want := range []string{`update(a) -\u003e ok v2`, `down(a) -\u003e unknown`} {
		if !strings.Contains(string(buf), want) {
			t.Errorf("the visualization lacks %q", want)
		}
	}
}
