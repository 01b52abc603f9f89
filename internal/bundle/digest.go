package bundle

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strings"
)

// Digest is the SHA-256 of what r yields, as "sha256:" and 64 lowercase
// hex digits.
func Digest(r io.Reader) (string, error) {
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return "", err
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// PackFile packs into a new file in dir (os.TempDir() if dir is empty)
// and returns its path, its digest and its size. The caller owns the
// file; on an error none is left behind.
func PackFile(workdir string, opts Options, dir string) (path, digest string, size int64, m Manifest, err error) {
	f, err := os.CreateTemp(dir, "bundle-*.tar.gz")
	if err != nil {
		return "", "", 0, Manifest{}, err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	h := sha256.New()
	bw := bufio.NewWriterSize(io.MultiWriter(f, h), 256<<10)
	if m, err = Pack(workdir, opts, bw); err != nil {
		return "", "", 0, Manifest{}, err
	}
	if err = bw.Flush(); err != nil {
		return "", "", 0, Manifest{}, err
	}
	info, err := f.Stat()
	if err != nil {
		return "", "", 0, Manifest{}, err
	}
	if err = f.Close(); err != nil {
		return "", "", 0, Manifest{}, err
	}
	return f.Name(), "sha256:" + hex.EncodeToString(h.Sum(nil)), info.Size(), m, nil
}

// CheckDigest says whether d is a digest as Digest writes it, so that it
// can name a file safely.
func CheckDigest(d string) error {
	hexPart, ok := strings.CutPrefix(d, "sha256:")
	if !ok || len(hexPart) != 64 || strings.ToLower(hexPart) != hexPart {
		return fmt.Errorf("digest %q is not sha256: and 64 lowercase hex digits", d)
	}
	if _, err := hex.DecodeString(hexPart); err != nil {
		return fmt.Errorf("digest %q is not sha256: and 64 lowercase hex digits", d)
	}
	return nil
}

// Verify hashes the file at path and compares it with digest. A mismatch
// wraps ErrDigestMismatch.
func Verify(path, digest string) error {
	if err := CheckDigest(digest); err != nil {
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	got, err := Digest(f)
	if err != nil {
		return fmt.Errorf("bundle %s: %w", path, err)
	}
	if got != digest {
		return kindErrorf(ErrDigestMismatch, "bundle %s has digest %s, want %s; it is damaged or not the one asked for: fetch it again",
			path, got, digest)
	}
	return nil
}
