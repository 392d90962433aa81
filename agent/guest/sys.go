package guest

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sbuml/sbuml/agent"
)

// setTime sets CLOCK_REALTIME.
func setTime(t time.Time) error {
	ts := unix.NsecToTimespec(t.UnixNano())
	if err := unix.ClockSettime(unix.CLOCK_REALTIME, &ts); err != nil {
		return fmt.Errorf("set the clock: %w", err)
	}
	return nil
}

// rndReseedCRNG is the ioctl that makes the kernel reseed its random
// number generator from its pool at once (RNDRESEEDCRNG, Linux 4.17).
const rndReseedCRNG = 0x5207

// reseed mixes seed into the kernel's entropy pool and has the kernel
// reseed its random number generator from it at once. Two machines
// restored from one snapshot start with the same generator state; after
// this they part.
func reseed(seed []byte) error {
	f, err := os.OpenFile("/dev/urandom", os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("reseed: %w", err)
	}
	defer f.Close()
	if _, err := f.Write(seed); err != nil {
		return fmt.Errorf("reseed: %w", err)
	}
	if err := unix.IoctlSetInt(int(f.Fd()), rndReseedCRNG, 0); err != nil {
		return fmt.Errorf("reseed: %w", err)
	}
	return nil
}

// readStats reads the activity counters from /proc.
func readStats() (agent.Stats, error) {
	st := agent.Stats{Version: agent.Version, Time: time.Now()}
	if err := readProcStat(&st); err != nil {
		return st, err
	}
	var err error
	if st.AgentUser, err = selfUserTicks("/proc/self/stat"); err != nil {
		return st, err
	}
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return st, err
	}
	if f := strings.Fields(string(b)); len(f) > 0 {
		secs, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return st, fmt.Errorf("/proc/uptime: %w", err)
		}
		st.Uptime = time.Duration(secs * float64(time.Second))
	}
	st.SectorsWritten, err = sectorsWritten("/proc/diskstats", "/sys/block")
	return st, err
}

// readProcStat reads the CPU ticks and the fork count.
func readProcStat(st *agent.Stats) error {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) >= 5 && f[0] == "cpu":
			for i, p := range []*uint64{&st.User, &st.Nice, &st.System, &st.Idle} {
				if *p, err = strconv.ParseUint(f[i+1], 10, 64); err != nil {
					return fmt.Errorf("/proc/stat: %w", err)
				}
			}
		case len(f) == 2 && f[0] == "processes":
			if st.Processes, err = strconv.ParseUint(f[1], 10, 64); err != nil {
				return fmt.Errorf("/proc/stat: %w", err)
			}
		}
	}
	return nil
}

// selfUserTicks reads the user CPU time of this process (field 14,
// utime, of /proc/self/stat), in USER_HZ ticks.
func selfUserTicks(stat string) (uint64, error) {
	b, err := os.ReadFile(stat)
	if err != nil {
		return 0, err
	}
	// The command name, field 2, is in parentheses and may hold spaces:
	// count fields after its closing one.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("%s: no command name", stat)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 12 {
		return 0, fmt.Errorf("%s: too short", stat)
	}
	n, err := strconv.ParseUint(f[11], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", stat, err)
	}
	return n, nil
}

// sectorsWritten sums the sectors written to whole disks backed by a
// device (those with a sysBlock/NAME/device link): not partitions, which
// their disk counts already, nor loop, ram or device-mapper devices.
func sectorsWritten(diskstats, sysBlock string) (uint64, error) {
	b, err := os.ReadFile(diskstats)
	if err != nil {
		return 0, err
	}
	var sum uint64
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 10 {
			continue
		}
		if _, err := os.Stat(sysBlock + "/" + f[2] + "/device"); err != nil {
			continue
		}
		n, err := strconv.ParseUint(f[9], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", diskstats, err)
		}
		sum += n
	}
	return sum, nil
}
