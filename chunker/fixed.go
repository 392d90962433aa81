package chunker

// cutFixed returns the length of the first fixed-size chunk of data: size
// bytes, or all of data if less remains.
func cutFixed(data []byte, size int) int {
	return min(len(data), size)
}
