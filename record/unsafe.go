package record

import "unsafe"

// unsafeString views b as a string without copying. Only for read-only use
// that does not retain the string past the call.
func unsafeString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}
