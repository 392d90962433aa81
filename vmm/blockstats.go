package vmm

import (
	"context"
	"encoding/json"
	"fmt"
)

// DiskWrites returns a count that grows with every write, write-zeroes or
// discard request the machine's disks completed, failed ones included
// (QMP query-blockstats, summed over the disks). QEMU counts a request
// when it completes, after its data is in the disk file: if the count is
// the same at two instants, no disk file changed in between through the
// guest. A frozen machine's count is final, since freezing drains the
// requests in flight.
func (m *Machine) DiskWrites(ctx context.Context) (uint64, error) {
	q, err := m.QMP(ctx)
	if err != nil {
		return 0, err
	}
	raw, err := q.Execute(ctx, "query-blockstats", nil)
	if err != nil {
		return 0, fmt.Errorf("disk writes of %s: %w", m.cfg.Name, m.explain(err))
	}
	var devs []struct {
		Stats struct {
			Wr         uint64 `json:"wr_operations"`
			Unmap      uint64 `json:"unmap_operations"`
			FailedWr   uint64 `json:"failed_wr_operations"`
			FailedUnm  uint64 `json:"failed_unmap_operations"`
			InvalidWr  uint64 `json:"invalid_wr_operations"`
			InvalidUnm uint64 `json:"invalid_unmap_operations"`
		} `json:"stats"`
	}
	if err := json.Unmarshal(raw, &devs); err != nil {
		return 0, fmt.Errorf("query-blockstats reply %s: %w", raw, err)
	}
	var n uint64
	for _, d := range devs {
		st := d.Stats
		n += st.Wr + st.Unmap + st.FailedWr + st.FailedUnm + st.InvalidWr + st.InvalidUnm
	}
	return n, nil
}
