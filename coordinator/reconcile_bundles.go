package coordinator

import (
	"maps"
	"slices"
	"time"
)

// bundleGCInterval is how often the leader looks for bundles to delete.
const bundleGCInterval = time.Second

// collectBundles, on the leader, deletes the bundles that no stored
// version names, once they are older than Config.BundleGrace and this
// leader has seen no version name them for as long (so a bundle whose
// service just went down is still there for an `up` of the same code a
// moment later; a new leader starts counting afresh). The FSM refuses the
// deletion if a version named the bundle meanwhile. Every coordinator
// removes the file once it applies the deletion (bundleService.repair).
func (c *controller) collectBundles(st *State, now time.Time) {
	if len(st.Bundles) == 0 {
		clear(c.bundleUnused)
		return
	}
	if now.Before(c.nextBundleGC) {
		return
	}
	c.nextBundleGC = now.Add(bundleGCInterval)
	used := st.BundleVersions()
	grace := c.cfg.BundleGrace
	for d := range c.bundleUnused {
		if _, ok := st.Bundles[d]; !ok || used[d] != nil {
			delete(c.bundleUnused, d)
		}
	}
	for _, d := range slices.Sorted(maps.Keys(st.Bundles)) {
		if used[d] != nil {
			continue
		}
		since, ok := c.bundleUnused[d]
		if !ok {
			c.bundleUnused[d] = now
			continue
		}
		rec := st.Bundles[d]
		if now.Sub(since) < grace || now.Sub(rec.UploadedAt) < grace {
			continue
		}
		if c.applyCmd(CmdBundleDelete, BundleDeleteCmd{Digest: d}) {
			delete(c.bundleUnused, d)
			c.log.Info("bundle deleted: no version names it", "digest", d, "bytes", rec.Size,
				"uploaded_at", rec.UploadedAt.UTC().Format(time.RFC3339), "unused_for", now.Sub(since).Round(time.Second).String())
		}
	}
}
