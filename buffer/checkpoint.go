package buffer

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"slices"
)

// checkpointsSize is the encoded size of cps as written by appendCheckpoints.
func checkpointsSize(cps []Checkpoint) int {
	n := uvarintLen(uint64(len(cps)))
	for i := range cps {
		n += uvarintLen(uint64(len(cps[i].Key))) + len(cps[i].Key) + 8 +
			uvarintLen(uint64(len(cps[i].Meta))) + len(cps[i].Meta)
	}
	return n
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

// appendCheckpoints encodes cps as the data of a commit frame (and the body
// of the state file): uvarint count, then per checkpoint uvarint source
// length, source, offset as little-endian int64, uvarint meta length, meta.
func appendCheckpoints(dst []byte, cps []Checkpoint) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(cps)))
	for i := range cps {
		dst = binary.AppendUvarint(dst, uint64(len(cps[i].Key)))
		dst = append(dst, cps[i].Key...)
		dst = binary.LittleEndian.AppendUint64(dst, uint64(cps[i].Offset))
		dst = binary.AppendUvarint(dst, uint64(len(cps[i].Meta)))
		dst = append(dst, cps[i].Meta...)
	}
	return dst
}

// decodeCheckpoints calls fn for each checkpoint encoded in data, in order.
// source and meta alias data. It returns ErrCorrupt if data is not exactly
// one well-formed encoding; every length is bound-checked before use.
func decodeCheckpoints(data []byte, fn func(source []byte, offset int64, meta []byte)) error {
	count, n := binary.Uvarint(data)
	if n <= 0 || count > uint64(len(data)) {
		return fmt.Errorf("checkpoint count: %w", ErrCorrupt)
	}
	data = data[n:]
	for range count {
		l, n := binary.Uvarint(data)
		if n <= 0 || l > uint64(len(data)-n) {
			return fmt.Errorf("checkpoint source: %w", ErrCorrupt)
		}
		source := data[n : n+int(l)]
		data = data[n+int(l):]
		if len(data) < 8 {
			return fmt.Errorf("checkpoint offset: %w", ErrCorrupt)
		}
		offset := int64(binary.LittleEndian.Uint64(data))
		data = data[8:]
		l, n = binary.Uvarint(data)
		if n <= 0 || l > uint64(len(data)-n) {
			return fmt.Errorf("checkpoint meta: %w", ErrCorrupt)
		}
		meta := data[n : n+int(l)]
		data = data[n+int(l):]
		fn(source, offset, meta)
	}
	if len(data) != 0 {
		return fmt.Errorf("checkpoint trailing bytes: %w", ErrCorrupt)
	}
	return nil
}

// checkpointMap is the durable position of every source.
type checkpointMap map[string]Checkpoint

// apply applies a batch's checkpoints in order: the last one per source
// wins, an offset < 0 forgets the source. An existing entry's Meta memory is
// reused so steady-state commits do not allocate.
func (m checkpointMap) apply(cps []Checkpoint) {
	for i := range cps {
		m.applyOne(cps[i].Key, cps[i].Offset, cps[i].Meta)
	}
}

func (m checkpointMap) applyOne(source string, offset int64, meta []byte) {
	if offset < 0 {
		delete(m, source)
		return
	}
	c, ok := m[source]
	if !ok {
		c.Key = source
	}
	c.Offset = offset
	c.Meta = append(c.Meta[:0], meta...)
	m[source] = c
}

// applyDecoded is a decodeCheckpoints callback applying to m; source and
// meta are copied.
func (m checkpointMap) applyDecoded(source []byte, offset int64, meta []byte) {
	m.applyOne(string(source), offset, meta)
}

// sorted returns deep copies of the checkpoints, sorted by source.
func (m checkpointMap) sorted() []Checkpoint {
	out := make([]Checkpoint, 0, len(m))
	for _, c := range m {
		out = append(out, Checkpoint{Key: c.Key, Offset: c.Offset, Meta: append([]byte(nil), c.Meta...)})
	}
	slices.SortFunc(out, func(a, b Checkpoint) int { return cmp.Compare(a.Key, b.Key) })
	return out
}
