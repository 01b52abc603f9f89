package coordinator

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/baton-dev/baton/protocol"
)

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// bundle_add is idempotent (the first record stands); a version may name
// only a committed bundle; bundle_delete is refused while a version
// names the bundle; bundles survive a snapshot and restore.
func TestFSMBundles(t *testing.T) {
	f := NewFSM()
	t0 := time.Unix(1000, 0).UTC()
	d1, d2 := digestOf([]byte("one")), digestOf([]byte("two"))
	idx := uint64(0)
	apply := func(typ CommandType, cmd any) any {
		t.Helper()
		idx++
		return applyCmd(t, f, idx, typ, cmd)
	}
	withBundle := func(d string) protocol.TaskSpec {
		s := testSpec(1)
		s.Bundle = d
		return s
	}

	if res := apply(CmdBundleAdd, BundleAddCmd{Digest: d1, Size: 10, At: t0}); res != (BundleRecord{Size: 10, UploadedAt: t0}) {
		t.Fatalf("bundle_add: %v", res)
	}
	if res := apply(CmdBundleAdd, BundleAddCmd{Digest: d1, Size: 10, At: t0.Add(time.Hour)}); res != (BundleRecord{Size: 10, UploadedAt: t0}) {
		t.Fatalf("bundle_add again: %v, want the first record", res)
	}
	for _, bad := range []BundleAddCmd{{Digest: "sha256:xyz", Size: 1}, {Digest: d2, Size: 0}, {Digest: d2, Size: protocol.MaxBundleUploadBytes + 1}} {
		if _, ok := apply(CmdBundleAdd, bad).(error); !ok {
			t.Fatalf("bundle_add %+v was not rejected", bad)
		}
	}

	// A version names only a committed bundle.
	res := apply(CmdCreateService, CreateServiceCmd{Name: "web", Spec: withBundle(d2), FirstPort: 30001, At: t0})
	if err, ok := res.(error); !ok || !errors.Is(err, ErrBundleNotFound) || !strings.Contains(err.Error(), "bundle "+d2+" is not in the cluster; upload it first") {
		t.Fatalf("create_service with an unknown bundle: %v", res)
	}
	if err, ok := apply(CmdCreateService, CreateServiceCmd{Name: "web", Spec: withBundle(d1), FirstPort: 30001, At: t0}).(error); ok {
		t.Fatal(err)
	}
	if err, ok := apply(CmdAddVersion, AddVersionCmd{Service: "web", Spec: withBundle(d2), Mode: protocol.UpdateBlueGreen, At: t0}).(error); !ok || !errors.Is(err, ErrBundleNotFound) {
		t.Fatalf("add_version with an unknown bundle: %v", err)
	}
	if n := f.State().Services["web"].LatestVersion; n != 1 {
		t.Fatalf("a rejected version was added: latest %d", n)
	}

	// In use: not deleted.
	if err, ok := apply(CmdBundleDelete, BundleDeleteCmd{Digest: d1}).(error); !ok || !errors.Is(err, ErrBundleInUse) || !strings.Contains(err.Error(), "web/1") {
		t.Fatalf("bundle_delete of a bundle in use: %v", err)
	}
	apply(CmdBundleAdd, BundleAddCmd{Digest: d2, Size: 20, At: t0})
	if got := f.State().BundleVersions(); len(got) != 1 || len(got[d1]) != 1 || got[d1][0] != "web/1" {
		t.Fatalf("bundle versions: %v", got)
	}

	// Snapshot and restore keep the bundles.
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	g := NewFSM()
	if err := g.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if got := g.State().Bundles; len(got) != 2 || got[d1].Size != 10 || !got[d2].UploadedAt.Equal(t0) {
		t.Fatalf("restored bundles: %v", got)
	}

	// Unused: deleted, once.
	if res := apply(CmdBundleDelete, BundleDeleteCmd{Digest: d2}); res != nil {
		t.Fatalf("bundle_delete: %v", res)
	}
	if err, ok := apply(CmdBundleDelete, BundleDeleteCmd{Digest: d2}).(error); !ok || !errors.Is(err, ErrBundleNotFound) {
		t.Fatalf("bundle_delete again: %v", err)
	}
	if _, ok := f.State().Bundles[d2]; ok {
		t.Fatal("a deleted bundle is still there")
	}
}

// A snapshot written before bundles existed restores, with none, and
// takes bundle_add afterwards.
func TestFSMRestoresSnapshotWithoutBundles(t *testing.T) {
	old := `{"services":{},"versions":{},"replicas":{},"agents":{},"index":7,"acl":{}}`
	f := NewFSM()
	if err := f.Restore(io.NopCloser(strings.NewReader(old))); err != nil {
		t.Fatal(err)
	}
	if st := f.State(); st.Index != 7 || len(st.Bundles) != 0 {
		t.Fatalf("restored: index %d, bundles %v", st.Index, st.Bundles)
	}
	null := `{"services":{},"versions":{},"replicas":{},"agents":{},"index":7,"acl":{},"bundles":null}`
	if err := f.Restore(io.NopCloser(strings.NewReader(null))); err != nil {
		t.Fatal(err)
	}
	d := digestOf([]byte("x"))
	applyCmd(t, f, 8, CmdBundleAdd, BundleAddCmd{Digest: d, Size: 1, At: time.Unix(1, 0)})
	if _, ok := f.State().Bundles[d]; !ok {
		t.Fatal("bundle_add after restoring an old snapshot did nothing")
	}
}
