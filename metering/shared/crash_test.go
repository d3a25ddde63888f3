//go:build unix

package shared

func runChild() int { return 3 }
