// Package units formats sizes for people.
package units

import "fmt"

// Bytes formats n with a binary unit: "512 B", "1.5 KiB", "3.0 GiB".
func Bytes[T int | int64 | uint64](n T) string {
	v := float64(n)
	const units = "KMGTPE"
	if v < 1024 && v > -1024 {
		return fmt.Sprintf("%d B", int64(n))
	}
	i := -1
	for (v >= 1024 || v <= -1024) && i < len(units)-1 {
		v /= 1024
		i++
	}
	return fmt.Sprintf("%.1f %ciB", v, units[i])
}
