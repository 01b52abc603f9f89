package coordinator

import (
	"fmt"

	"github.com/baton-dev/baton/protocol"
)

func (f *FSM) applyBundleAdd(cmd *BundleAddCmd) any {
	if err := protocol.ValidateBundleDigest(cmd.Digest); err != nil {
		return err
	}
	if cmd.Size <= 0 || cmd.Size > protocol.MaxBundleUploadBytes {
		return fmt.Errorf("bundle %s: size %d is outside 1 to %d bytes", cmd.Digest, cmd.Size, int64(protocol.MaxBundleUploadBytes))
	}
	if rec, ok := f.state.Bundles[cmd.Digest]; ok {
		return rec // added before: the first upload's record stands
	}
	if f.state.Bundles == nil {
		f.state.Bundles = map[string]BundleRecord{}
	}
	rec := BundleRecord{Size: cmd.Size, UploadedAt: cmd.At}
	f.state.Bundles[cmd.Digest] = rec
	return rec
}

func (f *FSM) applyBundleDelete(cmd *BundleDeleteCmd) any {
	if _, ok := f.state.Bundles[cmd.Digest]; !ok {
		return &bundleMissingError{digest: cmd.Digest}
	}
	// The leader decided from a copy of the state: a version that named
	// the bundle since keeps it.
	if v := f.state.versionNaming(cmd.Digest); v != "" {
		return fmt.Errorf("%w: bundle %s is named by version %s", ErrBundleInUse, cmd.Digest, v)
	}
	delete(f.state.Bundles, cmd.Digest)
	return nil
}

// checkBundle rejects a spec naming a bundle the state does not hold:
// the API checked it, but the bundle may have been deleted since.
func (f *FSM) checkBundle(spec *protocol.TaskSpec) error {
	if spec.Bundle == "" {
		return nil
	}
	if _, ok := f.state.Bundles[spec.Bundle]; !ok {
		return &bundleMissingError{digest: spec.Bundle}
	}
	return nil
}

// bundleMissingError says that a bundle is not in the cluster. It matches
// ErrBundleNotFound.
type bundleMissingError struct{ digest string }

func (e *bundleMissingError) Error() string {
	return "bundle " + e.digest + " is not in the cluster; upload it first (baton serve up does)"
}

func (e *bundleMissingError) Is(target error) bool { return target == ErrBundleNotFound }
