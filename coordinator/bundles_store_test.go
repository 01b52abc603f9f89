package coordinator

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"
)

// dirNames lists dir's entries.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out
}

// The store keeps a bundle only whole and only under the digest of its
// bytes: a mismatch, a body past the limit and a failed read leave
// nothing, not even a temporary file.
func TestBundleStoreWrite(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "bundles")
	st, err := openBundleStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("baton "), 1000)
	d := digestOf(data)
	other := digestOf([]byte("other"))
	tests := []struct {
		name    string
		digest  string
		body    []byte
		limit   int64
		failing bool
		wantErr func(error) bool
	}{
		{name: "mismatch", digest: other, body: data, limit: 1 << 20, wantErr: func(err error) bool {
			var m *digestMismatchError
			return errors.As(err, &m) && strings.Contains(err.Error(), "the upload hashes to "+d+", not "+other)
		}},
		{name: "over the limit", digest: d, body: data, limit: int64(len(data)) - 1, wantErr: func(err error) bool { return errors.Is(err, errBundleTooLarge) }},
		{name: "read fails", digest: d, body: data, limit: 1 << 20, failing: true, wantErr: func(err error) bool { return err != nil && !errors.Is(err, errStoreFailed) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var rd io.Reader = bytes.NewReader(tc.body)
			if tc.failing {
				rd = iotest.TimeoutReader(iotest.HalfReader(rd))
			}
			if _, err := st.write(tc.digest, rd, tc.limit); !tc.wantErr(err) {
				t.Fatalf("write: %v", err)
			}
			if names := dirNames(t, dir); len(names) != 0 {
				t.Fatalf("left behind: %v", names)
			}
		})
	}
	n, err := st.write(d, bytes.NewReader(data), int64(len(data)))
	if err != nil || n != int64(len(data)) {
		t.Fatalf("write: %d %v", n, err)
	}
	if size, ok := st.stat(d); !ok || size != int64(len(data)) {
		t.Fatalf("stat: %d %v", size, ok)
	}
	if got, err := os.ReadFile(filepath.Join(dir, "sha256-"+strings.TrimPrefix(d, "sha256:"))); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("stored file: %v", err)
	}
	list, err := st.list()
	if err != nil || len(list) != 1 || list[0].digest != d || list[0].size != int64(len(data)) {
		t.Fatalf("list: %+v %v", list, err)
	}
	// A pinned bundle is not removed; unpinned, it is.
	unpin := st.pin(d)
	if st.remove(d) {
		t.Fatal("a pinned bundle was removed")
	}
	unpin()
	unpin() // idempotent
	if !st.remove(d) {
		t.Fatal("remove failed")
	}
	if _, ok := st.stat(d); ok || st.pinned(d) {
		t.Fatal("the bundle is still there")
	}
}

// Opening the store removes what a crash left half written, and nothing
// else.
func TestBundleStoreOpenClearsTemporaryFiles(t *testing.T) {
	dir := t.TempDir()
	data := []byte("kept")
	d := digestOf(data)
	keep := filepath.Join(dir, bundleFileName(d))
	for name, content := range map[string]string{
		keep: "kept", filepath.Join(dir, bundleTempPrefix+"sha256-abc-123"): "half", filepath.Join(dir, "notes.txt"): "x",
	} {
		if err := os.WriteFile(name, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	st, err := openBundleStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	if names := dirNames(t, dir); len(names) != 2 {
		t.Fatalf("after open: %v, want the bundle and notes.txt", names)
	}
	list, _ := st.list()
	if len(list) != 1 || list[0].digest != d {
		t.Fatalf("list: %+v", list)
	}
}
